"""The exact torus flow (neuromf.oracle) against independent computations: a tight LSODA solve of the radial ODE,
a Monte Carlo estimate of E[e - x | z_t = z] that never uses a Bessel function, the MeanFlow identity by finite
differences along the exact flow, and the distribution of z_t reached by pushing Gaussian noise through the flow."""
import math
import numpy as np
import pytest
import torch
from scipy import stats
from neuromf.data.toroid import ToroidConfig, TorusEmbedding, torus_point
from neuromf.metrics.torus import exact_one_step_map, pair_norms
from neuromf.oracle import (A, NEAR_DIAGONAL, ExactMeanFlow, exact_flow, exact_mean_velocity, exact_radial_flow, exact_velocity,
                            oracle_metrics, radial_flow_reference, sample_path)

# Stated tolerance of the fast path against LSODA (rtol 1e-12): radii to 1e-8 absolute, mean velocities to 1e-6
# relative (measured: 1e-9 and 3e-8 on these points).
RADIUS_TOL, VELOCITY_TOL = 1e-8, 1e-6


def _path_radii(n, seed, t_lo=1e-3):
    "Radii of one plane of z ~ p_t at random t, with random r in [0, t] (a tenth of them near the diagonal)."
    rs = np.random.default_rng(seed)
    t = rs.uniform(t_lo, 1.0, n)
    frac = np.where(rs.random(n) < 0.1, rs.uniform(1 - NEAR_DIAGONAL, 1.0, n), rs.uniform(0.0, 1.0, n))
    r = t * frac
    z = sample_path(n, torch.from_numpy(t), generator=torch.Generator().manual_seed(seed))[0]
    return z[:, :2].norm(dim=1).numpy(), t, r


def test_fast_path_matches_lsoda_reference():
    rho, t, r = _path_radii(300, 0)
    edge = np.array([[1e-6, 0.9, 0.3], [0.02, 0.5, 0.1], [2.5, 0.05, 0.01], [6.0, 1.0, 0.5], [0.3, 0.2, 0.0], [A, 1e-4, 5e-5],
                     [1.1, 0.6, 0.6 * (1 - 0.5 * NEAR_DIAGONAL)], [1.1, 0.6, 0.6 * (1 - 2 * NEAR_DIAGONAL)]])
    rho, t, r = np.r_[rho, edge[:, 0]], np.r_[t, edge[:, 1]], np.r_[r, edge[:, 2]]
    got, m = exact_radial_flow(rho, t, r)
    want = radial_flow_reference(rho, t, r)
    assert np.abs(got - want).max() < RADIUS_TOL
    keep = t - r > 1e-3 * t                     # the reference's own rounding dominates (rho - rho_r)/(t - r) below that
    m_ref = (rho[keep] - want[keep]) / (t[keep] - r[keep])
    assert (np.abs(m[keep] - m_ref) / np.maximum(np.abs(m_ref), 1e-2)).max() < VELOCITY_TOL


def test_mean_velocity_is_continuous_across_the_near_diagonal_switch():
    rho = np.array([0.05, 0.4, A, 1.3, 3.0])
    t = np.full(5, 0.7)
    below, _ = exact_radial_flow(rho, t, t * (1 - NEAR_DIAGONAL * (1 - 1e-9)))
    _, m_below = exact_radial_flow(rho, t, t * (1 - NEAR_DIAGONAL * (1 - 1e-9)))
    _, m_above = exact_radial_flow(rho, t, t * (1 - NEAR_DIAGONAL * (1 + 1e-9)))
    np.testing.assert_allclose(m_below, m_above, rtol=1e-7, atol=1e-9)
    _, m_tiny = exact_radial_flow(rho, t, t - 1e-12)     # a hair off the diagonal: the instantaneous velocity
    _, v = exact_radial_flow(rho, t, t)
    np.testing.assert_allclose(m_tiny, v, rtol=1e-9, atol=1e-12)


def test_identities_of_the_issue():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    z, _, _ = sample_path(4000, 0.35, generator=g)
    torch.testing.assert_close(exact_mean_velocity(z, 0.35, 0.35), exact_velocity(z, 0.35), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(exact_mean_velocity(e, 0.0, 1.0), e - exact_one_step_map(e), rtol=1e-12, atol=1e-12)


def test_meanflow_identity_along_the_exact_flow():
    "u*(z_t, r, t) = v*(z_t, t) - (t - r) d/dt u*(z_t, r, t), the total derivative taken along the exact trajectory."
    g = torch.Generator().manual_seed(2)
    n, h = 2000, 1e-4
    for r, t in [(0.0, 0.8), (0.2, 0.6), (0.05, 0.3), (0.5, 0.95)]:
        top, _, _ = sample_path(n, t + h, generator=g)           # points at t + h, moved back along the exact flow
        z_t, z_lo = exact_flow(top, t + h, t), exact_flow(top, t + h, t - h)
        dudt = (exact_mean_velocity(top, r, t + h) - exact_mean_velocity(z_lo, r, t - h)) / (2 * h)
        lhs = exact_mean_velocity(z_t, r, t)
        rhs = exact_velocity(z_t, t) - (t - r) * dudt
        assert ((lhs - rhs).norm(dim=1).mean() / lhs.norm(dim=1).mean()).item() < 1e-6, (r, t)


@pytest.mark.parametrize("t", [0.15, 0.5, 0.9])
def test_velocity_matches_monte_carlo_posterior_mean(t):
    "E[e - x | z_t = z] by importance sampling of the data angle (likelihood weights, no Bessel function) vs v*."
    g = torch.Generator().manual_seed(3)
    z, _, _ = sample_path(8, t, generator=g)
    th = (torch.rand(300_000, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    x = torus_point(th)
    for zi in z:
        logw = -((zi - (1 - t) * x) ** 2).sum(1) / (2 * t * t)
        w = torch.softmax(logw, 0)
        samples = (zi - x) / t                                          # e - x for each candidate x
        mc = (w[:, None] * samples).sum(0)
        se = ((w[:, None] ** 2 * (samples - mc) ** 2).sum(0)).sqrt()    # delta-method standard error
        exact = exact_velocity(zi[None], t)[0]
        assert ((mc - exact).abs() <= 5 * se + 1e-9).all(), (zi, mc, exact, se)
        assert se.max() < 2e-2                                          # resolution of the check


def test_velocity_off_span_in_higher_dimension():
    cfg = ToroidConfig(ambient_dim=10, seed=3)
    emb = TorusEmbedding(cfg)
    z, x, e = sample_path(500, 0.4, cfg, torch.Generator().manual_seed(4))
    v = exact_velocity(z, 0.4, cfg)
    perp = z - emb.embed(emb.project(z))
    torch.testing.assert_close(v - emb.embed(emb.project(v)), perp / 0.4)    # = e_perp: what e - x is off the span
    torch.testing.assert_close(perp / 0.4, e - emb.embed(emb.project(e)))
    torch.testing.assert_close(emb.project(v), exact_velocity(emb.project(z), 0.4))


@pytest.mark.parametrize("t", [0.7, 0.4, 0.1])
def test_pushing_noise_through_the_flow_gives_z_t(t):
    g = torch.Generator().manual_seed(5)
    n = 20_000
    pushed = exact_flow(torch.randn(n, 4, generator=g, dtype=torch.float64), 1.0, t)
    direct = sample_path(n, t, generator=g)[0]
    for col in (0, 1):
        p = stats.ks_2samp(pair_norms(pushed)[:, col].numpy(), pair_norms(direct)[:, col].numpy()).pvalue
        assert p > 0.01, (t, col, p)
    wrong = sample_path(n, t + 0.05, generator=g)[0]          # the test can tell t from t + 0.05
    assert stats.ks_2samp(pair_norms(pushed)[:, 0].numpy(), pair_norms(wrong)[:, 0].numpy()).pvalue < 1e-6


def test_edge_cases():
    g = torch.Generator().manual_seed(6)
    z, x, _ = sample_path(1000, 1e-9, generator=g)                  # t -> 0: z is within 1e-8 of the data
    torch.testing.assert_close(exact_flow(z, 1e-9, 0.0), exact_one_step_map(z), rtol=0, atol=1e-12)
    u = exact_mean_velocity(z, 5e-10, 1e-9)
    assert torch.isfinite(u).all()
    rho = z[:, :2].norm(dim=1).numpy()
    want = radial_flow_reference(rho[:20], 1e-9, 5e-10)
    np.testing.assert_allclose(exact_radial_flow(rho[:20], 1e-9, 5e-10)[0], want, atol=1e-14)
    e = torch.randn(100, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(exact_flow(e, 0.6, 0.0), exact_one_step_map(e))     # r = 0: radial projection
    torch.testing.assert_close(exact_flow(e, 0.6, 0.6), e)                            # r = t: identity
    zero = torch.tensor([[0.0, 0.0, 0.3, -0.2]], dtype=torch.float64)                # the origin of the first plane stays
    for r in (0.0, 0.2):
        assert exact_flow(zero, 0.5, r)[0, :2].abs().max() == 0 and exact_mean_velocity(zero, r, 0.5)[0, :2].abs().max() == 0
    t = torch.tensor([0.3, 0.9], dtype=torch.float64); r = torch.tensor([0.1, 0.0], dtype=torch.float64)
    two = e[:2]
    torch.testing.assert_close(exact_mean_velocity(two, r, t), torch.cat([exact_mean_velocity(two[:1], 0.1, 0.3),
                                                                          exact_mean_velocity(two[1:], 0.0, 0.9)]))


def test_bad_inputs_name_the_bad_value():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="t must be > 0.*t=0"): exact_mean_velocity(z, 0.0, 0.0)
    with pytest.raises(ValueError, match="r=0.7"): exact_flow(z, 0.5, 0.7)
    with pytest.raises(ValueError, match="t=1.5"): exact_velocity(z, 1.5)
    with pytest.raises(ValueError, match=r"\(3, 6\)"): exact_velocity(torch.randn(3, 6), 0.5)
    with pytest.raises(ValueError, match="shape"): exact_velocity(torch.randn(3, 6), 0.5, ToroidConfig(ambient_dim=8))
    with pytest.raises(ValueError, match="non-finite"): exact_velocity(torch.full((2, 4), float("nan")), 0.5)
    with pytest.raises(ValueError, match=r"shape \(3,\)"): exact_velocity(z, torch.rand(4))
    with pytest.raises(TypeError, match="embedding must be"): exact_velocity(z, 0.5, "r4")


def test_trained_network_error_map_is_finite_and_far_below_an_untrained_one(tmp_path):
    from neuromf.dashboards.common import make_demo_run
    from neuromf.train import build_model
    torch.set_num_threads(1)
    run = make_demo_run(tmp_path / "run", steps=400, n_checkpoints=1, overrides=["training.threads=1"])
    _, ema = run.load_models()
    torch.manual_seed(0)
    untrained = build_model(run.config).eval()
    res = oracle_metrics({"trained": ema, "untrained": untrained, "exact": ExactMeanFlow()}, n_times=6, n_points=300, n_noise=1000)
    tr, un, ex = res["trained"], res["untrained"], res["exact"]
    grid = np.array(tr["mean_velocity_rel_error"], dtype=float)
    assert np.isfinite(grid[~np.isnan(grid)]).all() and (~np.isnan(grid)).sum() == 6 + 21
    assert tr["mean_velocity_rel_error_mean"] < 0.5 * un["mean_velocity_rel_error_mean"]
    assert tr["sampling"]["1"]["final"] < 0.5 * un["sampling"]["1"]["final"]
    assert ex["mean_velocity_rel_error_mean"] < 1e-5 and ex["sampling"]["10"]["final"] < 1e-5
