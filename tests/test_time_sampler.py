import math
import pytest, torch
from scipy import stats
from neuromf.time_sampler import sample_logit_normal, sample_r_given_t, sample_t_r


@pytest.mark.parametrize("mu,sigma", [(-0.4, 1.0), (0.8, 0.8)])
def test_P3_T7_logit_normal_distribution(mu, sigma):
    g = torch.Generator().manual_seed(1)
    t = sample_logit_normal(50_000, mu=mu, sigma=sigma, t_min=0.0, generator=g).double()
    logit = torch.log(t / (1 - t)).numpy()
    assert stats.kstest(logit, "norm", args=(mu, sigma)).pvalue > 0.01
    assert abs(logit.mean() - mu) < 0.02 and abs(logit.std() - sigma) < 0.02
    # the wrong distribution is rejected: the test has power
    assert stats.kstest(logit, "norm", args=(mu + 0.1, sigma)).pvalue < 1e-3


def test_clamp_and_dtype():
    t = sample_logit_normal(10_000, mu=-3.0, sigma=2.0, t_min=0.05)
    assert t.min().item() == pytest.approx(0.05) and t.max() <= 1 and t.dtype == torch.float32


def test_r_given_t():
    g = torch.Generator().manual_seed(2)
    t = sample_logit_normal(20_000, generator=g)
    r = sample_r_given_t(t, 0.25, generator=g)
    assert (r <= t).all() and (r >= 0).all()
    assert abs((r == t).float().mean().item() - 0.25) < 0.02
    ratio = (r / t)[r < t].numpy()
    assert stats.kstest(ratio, "uniform").pvalue > 0.01


def test_official_pairing():
    g = torch.Generator().manual_seed(3)
    t, r = sample_t_r(4000, mu=-0.4, sigma=1.0, r_neq_t_fraction=0.5, generator=g)
    assert int((r < t).sum()) == 2000 and (r <= t).all() and (r >= 0).all()
    # t is the max of two logit-normals: P(t < s) = Phi(logit s)^2
    s = 0.4
    expected = stats.norm.cdf((math.log(s / (1 - s)) + 0.4) / 1.0) ** 2
    assert abs((t < s).double().mean().item() - expected) < 0.03


@pytest.mark.parametrize("call,needle", [
    (lambda: sample_logit_normal(0), "batch_size=0"), (lambda: sample_logit_normal(4, sigma=-1.0), "sigma=-1.0"),
    (lambda: sample_logit_normal(4, t_min=-0.1), "t_min=-0.1"), (lambda: sample_logit_normal(4, mu=float("nan")), "mu=nan"),
    (lambda: sample_r_given_t(torch.rand(4), 2.0), "r_equals_t_prob=2.0"),
    (lambda: sample_t_r(4, r_neq_t_fraction=1.5), "r_neq_t_fraction=1.5"),
])
def test_bad_inputs(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
