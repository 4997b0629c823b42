import math
import pytest, torch
from torch import nn
from neuromf.data.toroid import torus_point
from neuromf.metrics.torus import torus_metrics, torus_distance, exact_one_step_map, joint_uniformity, SQRT_HALF
from neuromf.sampling import sample_one_step, sample_multi_step, sample_euler
from neuromf.ema import EMA


def test_distance_zero_on_torus_and_analytic_off_it():
    pts = torus_point((torch.rand(1000, 2, dtype=torch.float64) * 2 - 1) * math.pi)
    assert torus_distance(pts).max() < 1e-14
    # move each plane radially by known amounts a, b: distance sqrt(a^2 + b^2)
    a, b = torch.rand(1000, dtype=torch.float64) * 0.3, torch.rand(1000, dtype=torch.float64) * 0.3
    moved = torch.cat([pts[:, :2] * (1 + a / SQRT_HALF)[:, None], pts[:, 2:] * (1 - b / SQRT_HALF)[:, None]], 1)
    assert torch.allclose(torus_distance(moved), torch.sqrt(a ** 2 + b ** 2), atol=1e-12)
    assert torus_distance(torch.zeros(1, 4, dtype=torch.float64)).item() == pytest.approx(1.0)


def test_uniform_passes_clustered_fails():
    g = torch.Generator().manual_seed(0)
    uni = torus_point((torch.rand(10_000, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi)
    m = torus_metrics(uni)
    assert m["ks_p_theta1"] > 0.01 and m["ks_p_theta2"] > 0.01 and m["joint_p"] > 0.01
    clustered = torus_point(torch.randn(10_000, 2, generator=g, dtype=torch.float64))
    m = torus_metrics(clustered)
    assert m["ks_p_theta1"] < 1e-6 and m["ks_p_theta2"] < 1e-6
    th = (torch.rand(10_000, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    dependent = torus_point(torch.stack([th, -th], 1))
    m = torus_metrics(dependent)
    assert m["ks_p_theta1"] > 0.01 and m["joint_p"] < 1e-6


def test_coupling_error_of_exact_map_is_zero():
    e = torch.randn(5000, 4, dtype=torch.float64)
    m = torus_metrics(exact_one_step_map(e), noise_points=e)
    assert m["coupling_error_mean"] < 1e-12 and m["angle_error_theta1_mean"] < 1e-12
    # swapping the planes of half of the samples gives a known non-zero angle error
    m = torus_metrics(exact_one_step_map(-e), noise_points=e)
    assert m["angle_error_theta1_mean"] == pytest.approx(math.pi, rel=1e-9)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        torus_metrics(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="non-finite"):
        torus_metrics(torch.full((10, 4), float("nan")))


class _ExactPointMass(nn.Module):
    """Average velocity of data concentrated at x*: u(z, r, t) = (z - x*)/t for any r."""
    def __init__(self, target): super().__init__(); self.target = target
    def forward(self, z, r, t):
        t = torch.as_tensor(t, dtype=z.dtype)
        return (z - self.target) / (t.reshape(-1, 1) if t.ndim else t)


def test_samplers_on_known_velocity():
    star = torch.tensor([0.5, 0.5, -0.5, 0.5])
    e = torch.randn(20, 4)
    m = _ExactPointMass(star)
    for out in [sample_one_step(m, e), sample_multi_step(m, e, 1), sample_multi_step(m, e, 7), sample_euler(m, e, 10)]:
        assert torch.allclose(out, star.expand(20, 4), atol=1e-5)
    with pytest.raises(ValueError, match="r=0.9, t=0.2"):
        sample_one_step(m, e, r=0.9, t=0.2)


def test_P3_T8_ema_tracks_and_copies():
    torch.manual_seed(0)
    net = nn.Linear(4, 4)
    manual = net.weight.detach().clone()          # the average computed by hand, from the same initial weights
    ema = EMA(net, decay=0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        net(torch.randn(8, 4)).pow(2).mean().backward(); opt.step(); opt.zero_grad()
        ema.update(net)
        manual = 0.5 * manual + 0.5 * net.weight.detach()
    assert not torch.allclose(manual, net.weight)  # the average lags the weights
    assert torch.allclose(ema.state_dict()["shadow"]["weight"], manual, atol=1e-6)
    target = nn.Linear(4, 4)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])
