"""MeanFlow loss, JVP strategies and prediction types (P2-T2, P2-T3 and the gradient-flow contract)."""
import copy
import pytest, torch
from neuromf.data.toroid import ToroidConfig, ToroidDataset
from neuromf.jvp import compute_meanflow_jvp, JVP_STRATEGIES
from neuromf.losses.meanflow import meanflow_loss, flow_matching_loss
from neuromf.models.mlp import MeanFlowMLP
from neuromf.models.prediction import velocity_from_x_prediction


def _batch(n=64, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = ToroidDataset(ToroidConfig(n_samples=n, seed=seed)).tensor().to(dtype)
    e = torch.randn(x.shape, generator=g, dtype=dtype)
    t = (torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.1)
    r = t * torch.rand(n, generator=g, dtype=dtype)
    z = (1 - t[:, None]) * x + t[:, None] * e
    return z, r, t, x, e


def _model(kind="u", **kw):
    torch.manual_seed(0)
    return MeanFlowMLP(hidden_dim=64, n_frequencies=4, prediction_type=kind, **kw)


@pytest.mark.parametrize("tangent", ["true", "model"])
@pytest.mark.parametrize("strategy", JVP_STRATEGIES)
def test_P2_T2_loss_finite_positive(tangent, strategy):
    z, r, t, x, e = _batch()
    res = meanflow_loss(_model(), z, r, t, x, e, tangent=tangent, strategy=strategy)
    assert res.loss.ndim == 0 and torch.isfinite(res.loss) and res.loss.item() > 0
    assert res.raw_mf.shape == (64,) and (res.raw_mf > 0).all()
    assert (res.raw_fm is None) == (tangent == "true")


@pytest.mark.parametrize("strategy", JVP_STRATEGIES)
def test_P2_T3_jvp_shape(strategy):
    z, r, t, x, e = _batch()
    u, dudt = compute_meanflow_jvp(_model(), z, r, t, e - x, strategy)
    assert u.shape == z.shape and dudt.shape == z.shape


@pytest.mark.parametrize("kind", ["u", "x"])
@pytest.mark.parametrize("tangent", ["true", "model"])
def test_strategies_agree(kind, tangent):
    """All strategies give the same dudt (rel. err < 1e-2 in fp32) for both tangent choices."""
    z, r, t, x, e = _batch(256)
    t = t.clamp(0.2, 0.9)  # keep the FD stencil away from the x-prediction clamp kinks
    r = torch.minimum(r, t)
    m = _model(kind)
    tangent_vec = (e - x) if tangent == "true" else m(z, t, t).detach()
    _, ref = compute_meanflow_jvp(m, z, r, t, tangent_vec, "exact_func")
    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        _, ref64 = torch.func.jvp(lambda zz, tt: m64(zz, r.double(), tt), (z.double(), t.double()),
                                  (tangent_vec.double(), torch.ones_like(t.double())))
    for s in JVP_STRATEGIES:
        with pytest.warns(UserWarning, match="fragile") if (s == "finite_difference" and kind == "x") else _nullcontext():
            u, dudt = compute_meanflow_jvp(m, z, r, t, tangent_vec, s)
        err = ((dudt.double() - ref64).norm() / ref64.norm()).item()
        assert err < 1e-2, (s, err)
        assert ((dudt - ref).norm() / ref.norm()).item() < 1e-2


class _nullcontext:
    def __enter__(self): return self
    def __exit__(self, *a): return False


@pytest.mark.parametrize("tangent", ["true", "model"])
def test_r_equals_t_reduces_to_flow_matching(tangent):
    z, _, t, x, e = _batch()
    m = _model()
    res = meanflow_loss(m, z, t, t, x, e, tangent=tangent, adaptive=False, lambda_mf=1.0)
    fm = flow_matching_loss(m, z, t, x, e)
    expected = fm if tangent == "true" else 2 * fm      # iMF: FM term + lambda * MF term, equal at r = t
    assert torch.allclose(res.loss, expected, rtol=1e-5)


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("strategy", ["exact", "exact_func", "exact_nograd", "finite_difference"])
@pytest.mark.parametrize("adaptive", [True, False])
def test_mf_gradient_is_gradient_against_frozen_target(strategy, adaptive):
    z, r, t, x, e = _batch(128, torch.float64)
    m = _model().double()
    g = _grads(m, meanflow_loss(m, z, r, t, x, e, strategy=strategy, adaptive=adaptive, c=0.05, gamma=0.7).loss)
    with torch.no_grad():
        _, dudt = torch.func.jvp(lambda zz, tt: m(zz, r, tt), (z, t), (e - x, torch.ones_like(t)))
        target = (e - x) - (t - r)[:, None] * dudt
    E = ((m(z, r, t) - target) ** 2).sum(1)
    ref = (E / (E.detach() + 0.05) ** 0.7).mean() if adaptive else E.mean()
    g_ref = _grads(m, ref)
    tol = 1e-4 if strategy == "finite_difference" else 1e-9
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, rtol=tol, atol=tol)
    assert all(a.abs().sum() > 0 for a in g), "every MLP parameter gets a non-zero gradient"


def test_imf_gradient_flows_through_u_and_v_tilde_only():
    z, r, t, x, e = _batch(128, torch.float64)
    m = _model().double()
    g = _grads(m, meanflow_loss(m, z, r, t, x, e, tangent="model", lambda_mf=0.5).loss)
    v = e - x
    v_tilde = m(z, t, t)
    with torch.no_grad():
        _, dudt = torch.func.jvp(lambda zz, tt: m(zz, r, tt), (z, t), (v_tilde.detach(), torch.ones_like(t)))
    V = m(z, r, t) + (t - r)[:, None] * dudt
    e_fm, e_mf = ((v_tilde - v) ** 2).sum(1), ((V - v) ** 2).sum(1)
    ref = (e_fm / (e_fm.detach() + 0.01) + 0.5 * e_mf / (e_mf.detach() + 0.01)).mean()
    for a, b in zip(g, _grads(m, ref)):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)
    assert all(a.abs().sum() > 0 for a in g)


def test_raw_losses_are_unweighted():
    z, r, t, x, e = _batch()
    m = _model()
    res = meanflow_loss(m, z, r, t, x, e, tangent="model")
    assert torch.allclose(res.raw_fm, ((m(z, t, t) - (e - x)) ** 2).sum(1).detach(), rtol=1e-5)
    assert not res.raw_mf.requires_grad


def test_x_prediction_conversion_exact():
    m = _model("x")
    z, r, t, _, _ = _batch()
    t = t.clone(); t[:4] = torch.tensor([0.0, 0.01, 0.05, 1.0])
    r = torch.minimum(r, t)
    x_hat = m.net(z, r, t)
    expected = (z - x_hat) / t.clamp(0.05, 1.0)[:, None]
    assert torch.equal(m(z, r, t), expected)
    assert torch.equal(velocity_from_x_prediction(z, x_hat, t, 0.05), expected)


def test_finite_difference_with_x_prediction_warns():
    z, r, t, x, e = _batch()
    with pytest.warns(UserWarning, match="x-prediction"):
        meanflow_loss(_model("x"), z, r, t, x, e, strategy="finite_difference")


@pytest.mark.parametrize("change,needle", [
    (dict(r=torch.full((64,), 0.95), t=torch.full((64,), 0.5)), r"r <= t"),
    (dict(t=torch.full((64,), 1.5)), "t=1.5"),
    (dict(x_0="nan"), "x_0 contains"),
    (dict(eps="short"), "shapes must match"),
    (dict(p=0.0), "p=0.0"), (dict(tangent="both"), "tangent='both'"), (dict(strategy="autograd"), "strategy='autograd'"),
    (dict(c=0.0), "c=0.0"), (dict(gamma=-1.0), "gamma=-1.0"), (dict(lambda_mf=-1.0), "lambda_mf=-1.0"),
])
def test_bad_inputs_are_named(change, needle):
    z, r, t, x, e = _batch()
    kw = dict(r=r, t=t, x_0=x, eps=e)
    kw.update(change)
    if kw["x_0"] is not x and isinstance(kw["x_0"], str): kw["x_0"] = x.clone().index_fill_(0, torch.tensor([3]), float("nan"))
    if isinstance(kw["eps"], str): kw["eps"] = e[:10]
    if "r" in change and "t" not in change: kw["t"] = t
    with pytest.raises(ValueError, match=needle):
        meanflow_loss(_model(), z, kw.pop("r"), kw.pop("t"), kw.pop("x_0"), kw.pop("eps"), **kw)


def test_model_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        _model()(torch.zeros(3, 5), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        _model()(torch.zeros(3, 4), 0.0, torch.ones(2))
