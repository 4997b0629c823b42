"""`neuromf.check_model`: passes on the library's models, fails clearly on models that would break or silently mis-train
MeanFlow training, catches a broken graph-free tangent rule, and leaves the model, its modes and the RNG as they were."""
import numpy as np
import pytest, torch
import torch.nn.functional as F
import torch.autograd.forward_ad as fwAD
from torch import nn
import neuromf
import neuromf.jvp
from neuromf.model_check import check_model, ModelCheckError
from neuromf.models.mlp import MeanFlowMLP
from neuromf.models.maisi_unet import MAISIUNetConfig, MAISIUNetWrapper


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class UserMLP(nn.Module):
    "A user's model written for training: (B,) times concatenated to the data; optional dropout and batch norm."
    def __init__(self, dim=4, use_r=True, time_fn=None, dropout=0.0, batchnorm=False):
        super().__init__()
        self.use_r, self.time_fn = use_r, time_fn
        layers = [nn.Linear(dim + 1 + use_r, 32)] + ([nn.BatchNorm1d(32)] if batchnorm else []) + [nn.SiLU(), nn.Dropout(dropout), nn.Linear(32, dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, z, r, t):
        tf = self.time_fn(t) if self.time_fn else t
        return self.net(torch.cat([z, tf[:, None]] + ([(t - r)[:, None]] if self.use_r else []), 1))


def small_unet(**kw):
    torch.manual_seed(0)
    return MAISIUNetWrapper(MAISIUNetConfig(**kw))


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()], torch.get_rng_state()


def assert_unchanged(model, snap):
    state, modes, rng = snap
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert [m.training for m in model.modules()] == modes and torch.equal(torch.get_rng_state(), rng)


def test_exported_from_neuromf():
    "The module is neuromf.model_check, so importing it (as train() will) never shadows the function neuromf.check_model."
    import neuromf.model_check
    assert neuromf.check_model is check_model and callable(neuromf.check_model) and issubclass(neuromf.ModelCheckError, ValueError)


@pytest.mark.parametrize("pred", ["u", "x"])
def test_passes_on_meanflow_mlp(pred):
    m, x = MeanFlowMLP(prediction_type=pred, n_frequencies=4), torch.randn(32, 4)
    snap = snapshot(m)
    rep = check_model(m, x)
    assert_unchanged(m, snap)
    assert rep.jvp_path == "analytic forward_and_jvp" and rep.reference == "torch.func.jvp"
    assert rep.u_error < 1e-6 and rep.dudt_error < 1e-5 and rep.rtol == 1e-4 and rep.r_effect > 1e-4
    assert rep.n_samples == 2 and rep.shape == (2, 4) and rep.dtype == "float32"


@pytest.mark.parametrize("kw", [dict(), dict(prediction_type="x"), dict(h_embed_mode="r_t")])
def test_passes_on_maisi_unet_and_restores_it(kw):
    m = small_unet(**kw)
    m.train(); m.unet.down_blocks[0].eval()                        # mixed modes must come back as they were
    x = torch.randn(3, 4, 8, 8, 8)
    snap = snapshot(m)
    rep = check_model(m, x)
    assert_unchanged(m, snap)
    assert rep.jvp_path.startswith("graph-free") and rep.reference == "torch.func.jvp"
    assert rep.perturbed_zero_tensors > 0 and rep.dudt_error < 1e-5 and rep.u_error < 1e-6   # at MONAI's init u would be 0


def test_float64_and_user_model_with_dropout_and_batchnorm():
    m, x = UserMLP(dropout=0.5, batchnorm=True).double().train(), torch.randn(8, 4, dtype=torch.float64)
    snap = snapshot(m)
    rep = check_model(m, x, n_samples=4)
    assert_unchanged(m, snap)                                         # batch-norm running stats untouched, dropout off
    assert rep.rtol == 1e-8 and rep.dudt_error < 1e-10 and rep.n_samples == 4


@pytest.mark.parametrize("model, message", [
    (UserMLP(use_r=False), "does not depend on r"),
    (lambda z, r, t: UserMLP()(z, r, t)[:, :3], r"returned shape \(2, 3\); it must be z's shape \(2, 4\)"),
    (lambda z, r, t: UserMLP()(z, r, t).double(), "returned dtype torch.float64; it must be z's dtype torch.float32"),
    (lambda z, r, t: UserMLP()(z, r, torch.full_like(r, float(t))), r"raised ValueError: only one element tensors.*not only Python floats"),
    (lambda z, r, t: UserMLP()(z, r, t) * float("nan"), "non-finite"),
    (lambda z, r, t: (z, z), "returned tuple"),
    ("not a model", "must be callable"),
])
def test_fails_clearly(model, message):
    with pytest.raises(ModelCheckError, match=message):
        check_model(model, torch.randn(8, 4))


def test_ignoring_r_is_caught_through_zero_init_layers():
    "A zero-initialised layer hides r at init; the check perturbs it, so only a model that truly ignores r fails."
    class ZeroHead(nn.Module):
        def __init__(self, use_r):
            super().__init__(); self.use_r = use_r
            self.body, self.head = nn.Linear(6, 16), nn.Linear(16, 4)
            nn.init.zeros_(self.head.weight); nn.init.zeros_(self.head.bias)
        def forward(self, z, r, t):
            h = (t - r) if self.use_r else torch.zeros_like(t)
            return z * t[:, None] + self.head(F.silu(self.body(torch.cat([z, t[:, None], h[:, None]], 1))))
    m = ZeroHead(True)
    assert check_model(m, torch.randn(4, 4)).perturbed_zero_tensors == 2 and not m.head.weight.any()
    with pytest.raises(ModelCheckError, match="does not depend on r.*even with its 2 all-zero parameter tensors given random values"):
        check_model(ZeroHead(False), torch.randn(4, 4))


def test_bad_inputs():
    with pytest.raises(ModelCheckError, match="example_batch must be a floating tensor"):
        check_model(UserMLP(), torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ModelCheckError, match="NaN/Inf"):
        check_model(UserMLP(), torch.full((4, 4), float("nan")))
    with pytest.raises(ModelCheckError, match="n_samples=0"):
        check_model(UserMLP(), torch.randn(4, 4), n_samples=0)


def test_finite_difference_reference_where_func_jvp_fails():
    "torch.func.jvp cannot run a forward that reads a data pointer or goes through numpy: a float64 central difference is used."
    class Logs(UserMLP):
        def forward(self, z, r, t):
            t.data_ptr()                                              # e.g. a logging hook; harmless for the JVP
            return super().forward(z, r, t)
    rep = check_model(Logs(), torch.randn(4, 4))
    assert rep.reference.startswith("a float64 central finite difference (torch.func.jvp failed: RuntimeError")
    assert rep.dudt_error < 1e-5
    via_numpy = lambda t: torch.as_tensor(np.cos(t.detach().cpu().numpy()), dtype=t.dtype)   # d/dt invisible to forward AD
    with pytest.raises(ModelCheckError, match=r"disagrees with a float64 central finite difference.*du/dt .*max abs error"):
        check_model(UserMLP(time_fn=via_numpy), torch.randn(4, 4))


def _wrong_silu(input, inplace=False):
    x, xt = fwAD.unpack_dual(input)
    if xt is None: return NotImplemented
    with torch.no_grad(): yt = torch.sigmoid(x) * xt                 # silu' is sigmoid(x) (1 + x (1 - sigmoid(x)))
    return fwAD.make_dual(F.silu(x), yt)


def _wrong_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    x, xt = fwAD.unpack_dual(input)
    if xt is None: return NotImplemented
    y = F.group_norm(x, num_groups, weight, bias, eps)
    with torch.no_grad(): yt = F.group_norm(xt, num_groups, weight, None, eps)   # treats the tangent as if it had its own statistics
    return fwAD.make_dual(y, yt)


def _wrong_conv3d(input, weight, bias=None, *rest, **kw):
    x, xt = fwAD.unpack_dual(input)
    if xt is None: return NotImplemented
    y = torch.conv3d(x, weight, bias, *rest, **kw)
    with torch.no_grad(): yt = torch.conv3d(xt, weight.detach(), bias, *rest, **kw)   # adds the bias to the tangent
    return fwAD.make_dual(y, yt)


@pytest.mark.parametrize("op, rule, module", [(F.silu, _wrong_silu, "SiLU"), (F.group_norm, _wrong_group_norm, "GroupNorm"),
                                             (torch.conv3d, _wrong_conv3d, "Conv")])
def test_a_broken_tangent_rule_is_caught_and_located(op, rule, module):
    unet, x = small_unet(), torch.randn(2, 4, 8, 8, 8)
    assert check_model(unet, x).dudt_error < 1e-5                     # the shipped rule passes
    good = neuromf.jvp.TANGENT_RULES[op]
    neuromf.jvp.TANGENT_RULES[op] = rule
    try:
        with pytest.raises(ModelCheckError, match=r"disagrees with torch\.func\.jvp: du/dt .*tolerance 1e-04; first submodule "
                                                  rf"whose tangent differs from PyTorch's forward AD: '[^']+' \([A-Za-z0-9]*{module}"):
            check_model(unet, x)
        if op is F.silu:
            with pytest.raises(ModelCheckError, match=r"'net\.1' \(SiLU\)"):
                check_model(UserMLP(), torch.randn(4, 4))
            check_model(MeanFlowMLP(), torch.randn(4, 4))             # the analytic JVP does not use the rules
    finally:
        neuromf.jvp.TANGENT_RULES[op] = good
    assert check_model(unet, x).dudt_error < 1e-5
