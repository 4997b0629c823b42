"""JVP through the MAISI UNet wrapper: every strategy runs (P3-T3a), the exact JVP matches a central finite
difference in float64 (P3-T3b), attention works under forward-mode AD, and the rflow preset's JVP (P3-T12, slow)."""
import warnings
import pytest, torch
from torch import nn
from neuromf.jvp import compute_meanflow_jvp, JVP_STRATEGIES
from neuromf.models.maisi_unet import MAISIUNetConfig, MAISIUNetWrapper, reinit_zero_layers_


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def live_unet(cfg=None, h_std=0.1, dtype=torch.float32):
    m = MAISIUNetWrapper(cfg or MAISIUNetConfig())
    reinit_zero_layers_(m)
    if m.h_embed is not None: nn.init.normal_(m.h_embed[2].weight, std=h_std)
    return m.to(dtype)


def batch(shape=(2, 4, 8, 8, 8), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, v = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    t = torch.tensor([0.45, 0.85], dtype=dtype); r = torch.tensor([0.1, 0.85], dtype=dtype)
    return z, r, t, v


def rel(a, b): return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("prediction_type", ["u", "x"])
def test_P3_T3a_jvp_executes_on_unet(prediction_type):
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig(prediction_type=prediction_type))
    z, r, t, v = batch()
    ref_u, ref = compute_meanflow_jvp(m, z, r, t, v, "exact")
    for s in JVP_STRATEGIES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # finite differences warn about x-prediction
            u, dudt = compute_meanflow_jvp(m, z, r, t, v, s)
        assert dudt.shape == z.shape and u.shape == z.shape
        assert torch.isfinite(dudt).all() and not dudt.requires_grad and u.requires_grad
        assert rel(dudt, ref) < 1e-2, (s, rel(dudt, ref))   # SPEC 4: strategies agree in fp32
        torch.testing.assert_close(u, ref_u, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,prediction_type", [("t_h", "u"), ("r_t", "u"), ("h", "u"), ("t_h", "x")])
def test_P3_T3b_jvp_matches_finite_difference(mode, prediction_type):
    "float64: exact JVP (torch.func) vs central finite difference with h = 1e-4; truncation error O(h^2)."
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig(h_embed_mode=mode, prediction_type=prediction_type), dtype=torch.float64)
    z, r, t, v = batch(dtype=torch.float64)
    _, exact = compute_meanflow_jvp(m, z, r, t, v, "exact")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, fd = compute_meanflow_jvp(m, z, r, t, v, "finite_difference", fd_step=1e-4)
    assert exact.dtype == torch.float64 and exact.abs().max() > 0
    assert rel(fd, exact) < 1e-6, rel(fd, exact)


def test_P3_T3b_jvp_time_tangent_only():
    "The t-derivative alone (z tangent 0) also matches: the time embeddings are differentiated, not just the convs."
    torch.manual_seed(1)
    m = live_unet(dtype=torch.float64)
    z, r, t, _ = batch(dtype=torch.float64)
    zero = torch.zeros_like(z)
    _, exact = compute_meanflow_jvp(m, z, r, t, zero, "exact")
    _, fd = compute_meanflow_jvp(m, z, r, t, zero, "finite_difference", fd_step=1e-4)
    assert exact.abs().max() > 0 and rel(fd, exact) < 1e-6


def test_fused_attention_under_forward_ad():
    "With fused SDPA attention (no forward-mode rule on CPU), direct torch.func.jvp and forward_ad dual tensors still work."
    torch.manual_seed(0)
    plain = live_unet()
    fused = MAISIUNetWrapper(MAISIUNetConfig(use_flash_attention=True)); fused.load_state_dict(plain.state_dict())
    z, r, t, v = batch()
    # the fused CPU kernel really has no forward-mode AD: without the wrapper's guard this fails
    q = torch.randn(1, 2, 8, 8)
    with pytest.raises(Exception, match="forward AD"):
        torch.func.jvp(lambda a: torch.nn.functional.scaled_dot_product_attention(a, a, a), (q,), (q,))
    ones = torch.ones_like(t)
    _, d_plain = torch.func.jvp(lambda a, b: plain(a, r, b), (z, t), (v, ones))
    _, d_fused = torch.func.jvp(lambda a, b: fused(a, r, b), (z, t), (v, ones))
    torch.testing.assert_close(d_fused, d_plain, rtol=1e-3, atol=1e-4)
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level(), torch.no_grad():
        out = fused(fwAD.make_dual(z, v), r, fwAD.make_dual(t, ones))
        d_dual = fwAD.unpack_dual(out).tangent
    torch.testing.assert_close(d_dual, d_plain, rtol=1e-3, atol=1e-4)


def test_jvp_under_bf16_autocast():
    "A JVP inside a bf16 autocast region: compute_meanflow_jvp runs it in fp32; a direct torch.func.jvp also goes through."
    torch.manual_seed(0)
    m = live_unet()
    z, r, t, v = batch()
    _, ref = compute_meanflow_jvp(m, z, r, t, v, "exact")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for s in ("exact", "exact_nograd"):
            _, dudt = compute_meanflow_jvp(m, z, r, t, v, s)
            assert dudt.dtype == torch.float32 and rel(dudt, ref) < 1e-5
        _, d_bf16 = torch.func.jvp(lambda a, b: m(a, r, b), (z, t), (v, torch.ones_like(t)))
    assert torch.isfinite(d_bf16).all() and rel(d_bf16.float(), ref) < 0.1


@pytest.mark.slow
def test_P3_T12_full_size_finite_diff_jvp():
    "MAISI's rflow network at a reduced 4 x 16^3: exact JVP vs central finite difference (float64)."
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig.rflow(), h_std=0.02, dtype=torch.float64)
    z, r, t, v = batch((1, 4, 16, 16, 16), dtype=torch.float64)
    r, t = r[:1], t[:1]
    _, exact = compute_meanflow_jvp(m, z, r, t, v, "exact")
    _, fd = compute_meanflow_jvp(m, z, r, t, v, "finite_difference", fd_step=1e-4)
    assert torch.isfinite(exact).all() and exact.abs().max() > 0
    assert rel(fd, exact) < 1e-6, rel(fd, exact)
