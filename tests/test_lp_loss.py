import pytest, torch
from neuromf.losses.lp import lp_loss

P_VALUES = [1.0, 1.5, 2.0, 3.0]


def _reference(pred, target, p, w=None):
    # explicit loops over samples and channels
    B, C = pred.shape[:2]
    out = torch.zeros(B, dtype=pred.dtype)
    for b in range(B):
        for c in range(C):
            out[b] += (1.0 if w is None else w[c]) * (pred[b, c] - target[b, c]).abs().pow(p).sum()
    return out


@pytest.mark.parametrize("p", P_VALUES)
def test_P3_T6_perchannel_lp_loss(p):
    pred, target = torch.randn(3, 4, 5, 6, 7, dtype=torch.float64), torch.randn(3, 4, 5, 6, 7, dtype=torch.float64)
    ref = _reference(pred, target, p)
    assert torch.allclose(lp_loss(pred, target, p, reduction="none"), ref)
    assert torch.allclose(lp_loss(pred, target, p), ref.mean())
    assert torch.allclose(lp_loss(pred, target, p, reduction="sum"), ref.sum())
    # finite gradient at pred == target
    x = target.clone().requires_grad_(True)
    lp_loss(x, target, p).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() == 0


@pytest.mark.parametrize("p", P_VALUES)
def test_P3_T6_perchannel_lp_loss_with_weights(p):
    pred, target = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, 3, dtype=torch.float64)
    w = torch.tensor([0.5, 2.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(lp_loss(pred, target, p, channel_weights=w, reduction="none"), _reference(pred, target, p, w))
    # a zero weight really removes its channel
    moved = pred.clone(); moved[:, 2] += 100.0
    assert torch.allclose(lp_loss(moved, target, p, w), lp_loss(pred, target, p, w))


def test_fractional_p():
    pred, target = torch.tensor([[4.0]]), torch.tensor([[0.0]])
    assert lp_loss(pred, target, 0.5).item() == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(p=0.0), "p=0.0"), (dict(p=-2.0), "p=-2.0"), (dict(p=float("inf")), "p=inf"),
    (dict(reduction="avg"), "reduction='avg'"), (dict(channel_weights=torch.ones(3)), "channel_weights"),
])
def test_bad_inputs(kwargs, needle):
    x = torch.zeros(2, 4, 5)
    with pytest.raises(ValueError, match=needle):
        lp_loss(x, x, **{"p": 2.0, **kwargs})


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        lp_loss(torch.zeros(2, 4), torch.zeros(2, 3))
