"""The fast paths give the reference path's gradients (fp32 tolerance).

Reference: `torch.func.jvp` with the primal in the graph (strategy "exact_func"), the JVP on every row.
Fast paths: the analytic MLP tangent ("exact" on MeanFlowMLP), the graph-free forward-AD pass ("exact" on models
without an analytic tangent: an MLP stripped of it and the MAISI UNet), forward AD under no_grad ("exact_nograd"),
and the loss's row split (JVP only on rows with r != t), for MF and iMF, u- and x-prediction.
"""
import pytest, torch
from neuromf.jvp import compute_meanflow_jvp, forward_ad_jvp
from neuromf.losses.meanflow import meanflow_loss
from neuromf.models.mlp import MeanFlowMLP
from neuromf.models.prediction import MeanFlowModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    "Small tensors: one thread is faster and steadier on a shared machine."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class PlainMLP(MeanFlowMLP):
    "MeanFlowMLP without its analytic tangent: `exact` takes the forward-AD path."
    net_and_jvp = MeanFlowModel.net_and_jvp


def _mlp(kind, analytic=True):
    torch.manual_seed(0)
    cls = MeanFlowMLP if analytic else PlainMLP
    return cls(hidden_dim=48, n_hidden=2, n_frequencies=3, prediction_type=kind)


def _unet(kind):
    from neuromf.models.maisi_unet import MAISIUNetConfig, MAISIUNetWrapper, reinit_zero_layers_
    torch.manual_seed(0)
    m = MAISIUNetWrapper(MAISIUNetConfig(prediction_type=kind))
    reinit_zero_layers_(m)          # non-zero gradients everywhere, so the comparison means something
    return m


def _batch(shape, n, half_equal):
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn((n,) + shape, generator=g), torch.randn((n,) + shape, generator=g)
    t = torch.rand(n, generator=g) * 0.8 + 0.15
    r = t * torch.rand(n, generator=g)
    if half_equal: r = torch.where(torch.arange(n) % 2 == 0, t, r)
    tv = t.reshape(-1, *([1] * len(shape)))
    return (1 - tv) * x + tv * e, r, t, x, e


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _assert_same_grads(got, ref, tol=2e-4):
    scale = max(g.abs().max().item() for g in ref)
    assert scale > 0
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=tol, atol=tol * scale), ((a - b).abs().max().item(), scale)


def _reference(model, batch, tangent):
    model.jvp_row_split = False
    try:
        res = meanflow_loss(model, *batch, tangent=tangent, strategy="exact_func")
        return res, _grads(model, res.loss)
    finally:
        del model.jvp_row_split


MODELS = {"mlp": (lambda k: _mlp(k), (4,), 64), "mlp_forward_ad": (lambda k: _mlp(k, analytic=False), (4,), 64),
          "unet": (_unet, (4, 8, 8, 8), 3)}


@pytest.mark.parametrize("kind", ["u", "x"])
@pytest.mark.parametrize("tangent", ["true", "model"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_paths_match_reference_gradients(model_name, tangent, kind):
    make, shape, n = MODELS[model_name]
    model = make(kind)
    for half_equal in (False, True):
        batch = _batch(shape, n, half_equal)
        ref, g_ref = _reference(model, batch, tangent)
        for strategy in ("exact", "exact_nograd"):
            for split in ((False, True) if half_equal else (False,)):
                model.jvp_row_split = split
                res = meanflow_loss(model, *batch, tangent=tangent, strategy=strategy)
                del model.jvp_row_split
                assert torch.allclose(res.loss, ref.loss, rtol=1e-5), (strategy, split)
                assert torch.allclose(res.raw_mf, ref.raw_mf, rtol=1e-4, atol=1e-6)
                _assert_same_grads(_grads(model, res.loss), g_ref)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_graph_free_tangent_equals_torch_func(model_name):
    make, shape, n = MODELS[model_name]
    model = make("u")
    z, r, t, x, e = _batch(shape, n, False)
    u_ref, d_ref = compute_meanflow_jvp(model, z, r, t, e - x, "exact_func")
    u, dudt = forward_ad_jvp(model, z, r, t, e - x)
    assert u.requires_grad and dudt.grad_fn is None and not dudt.requires_grad
    assert torch.allclose(u, u_ref, atol=1e-6)
    assert ((dudt - d_ref).norm() / d_ref.norm()).item() < 1e-5


def test_row_split_skips_the_jvp_where_r_equals_t():
    """With every r = t no JVP runs at all (the tangent never reaches the model)."""
    model = _mlp("u")
    calls = []
    model.forward_and_jvp = lambda *a, **k: calls.append(1) or MeanFlowMLP.forward_and_jvp(model, *a, **k)
    z, r, t, x, e = _batch((4,), 16, False)
    meanflow_loss(model, z, t, t, x, e)
    assert not calls
    meanflow_loss(model, z, torch.where(torch.arange(16) < 4, r, t), t, x, e)
    assert len(calls) == 1


def test_row_split_refused_with_dropout_in_training():
    from neuromf.losses.meanflow import _rows_independent
    model = _mlp("u")
    assert _rows_independent(model)
    model.hidden.append(torch.nn.Dropout(0.2))
    assert not _rows_independent(model)
    model.eval()
    assert _rows_independent(model)
