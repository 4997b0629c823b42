"""Issue 13 (nothing silent): samplers call user models the way training does, bad channel weights, uniformity
verdicts on too few samples, and `neuromf-bench` input errors. Each test failed before its fix."""
import json, math, subprocess, sys
import pytest, torch
from torch import nn
from neuromf.sampling import sample_one_step, sample_multi_step, sample_euler


class TrainingStyleModel(nn.Module):
    "A user's model written for training: it concatenates `(B,)` time tensors to the data (fails on Python floats)."
    def __init__(self, dim=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 2, 16), nn.SiLU(), nn.Linear(16, dim))
        self.calls = []

    def forward(self, z, r, t):
        self.calls.append((type(r), type(t), getattr(r, "shape", None), getattr(t, "shape", None),
                           getattr(t, "dtype", None), getattr(t, "device", None)))
        return self.net(torch.cat([z, t[:, None], r[:, None]], 1))


SAMPLERS = {"one_step": lambda m, e, **kw: sample_one_step(m, e, **kw),
            "one_step_r_half": lambda m, e, **kw: sample_one_step(m, e, r=0.5, t=1.0, **kw),
            "multi_step": lambda m, e, **kw: sample_multi_step(m, e, 3, **kw),
            "euler": lambda m, e, **kw: sample_euler(m, e, 4, **kw)}


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_samplers_pass_batch_time_tensors(name, dtype, batch_size):
    torch.manual_seed(0)
    model = TrainingStyleModel().to(dtype)
    e = torch.randn(10, 4, dtype=dtype)
    x = SAMPLERS[name](model, e, batch_size=batch_size)
    assert x.shape == e.shape and x.dtype == dtype and torch.isfinite(x).all()
    chunk = {None: [10], 3: [3, 3, 3, 1]}[batch_size]
    assert model.calls and all(c[0] is torch.Tensor and c[1] is torch.Tensor for c in model.calls)
    assert sorted({c[2][0] for c in model.calls}) == sorted(set(chunk))
    assert all(c[2] == c[3] and c[4] == dtype and c[5] == e.device for c in model.calls)


def test_sampler_results_match_a_hand_written_loop():
    "Same numbers as the formulas of SPEC 5, written out here with explicit (B,) times."
    torch.manual_seed(1)
    m, e = TrainingStyleModel(), torch.randn(7, 4)
    full = lambda v: torch.full((7,), v)
    with torch.no_grad():
        one = e - m(e, full(0.0), full(1.0))
        z = e.clone()
        for hi, lo in [(1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0.0)]: z = z - (hi - lo) * m(z, full(lo), full(hi))
        eu = e.clone()
        for hi, lo in [(1.0, 0.5), (0.5, 0.0)]: eu = eu - (hi - lo) * m(eu, full(hi), full(hi))
    torch.testing.assert_close(sample_one_step(m, e), one)
    torch.testing.assert_close(sample_multi_step(m, e, 3, batch_size=2), z)
    torch.testing.assert_close(sample_euler(m, e, 2), eu)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_samplers_refuse_non_finite_noise(name, bad):
    e = torch.randn(6, 4)
    e[2, 1] = bad
    with pytest.raises(ValueError, match=r"noise contains 1 non-finite value"):
        SAMPLERS[name](TrainingStyleModel(), e)


def test_samplers_refuse_bad_batch_size_and_wrong_output_shape():
    e = torch.randn(6, 4)
    for bs in (0, -2, 2.5):
        with pytest.raises(ValueError, match=f"batch_size={bs!r}"):
            sample_one_step(TrainingStyleModel(), e, batch_size=bs)
    squeeze = lambda z, r, t: z.sum(1, keepdim=True)          # (B, 1): would broadcast silently against (B, 4)
    for fn in (lambda: sample_one_step(squeeze, e), lambda: sample_multi_step(squeeze, e, 2), lambda: sample_euler(squeeze, e, 2)):
        with pytest.raises(ValueError, match=r"model output has shape \(6, 1\).*\(6, 4\)"):
            fn()


# --- channel weights -------------------------------------------------------------------------------------------
from neuromf.losses.lp import lp_loss
from neuromf.losses.meanflow import meanflow_loss, flow_matching_loss
from neuromf.models.mlp import MeanFlowMLP


@pytest.mark.parametrize("weights, message", [
    ([1.0, -0.5, 1.0, 1.0], r"bad at channel\(s\) \[1\]: \[-0.5\]"),
    ([1.0, 1.0, float("nan"), 1.0], r"bad at channel\(s\) \[2\]: \[nan\]"),
    (torch.tensor([float("inf"), 1.0, 1.0, -1.0]), r"bad at channel\(s\) \[0, 3\]: \[inf, -1.0\]"),
    ([1.0, 1.0, 1.0], r"channel_weights=\[1.0, 1.0, 1.0\] has shape \(3,\): need exactly 4 values"),
    (torch.ones(4, 1), r"has shape \(4, 1\): need exactly 4 values"),
    ([0.0, 0.0, 0.0, 0.0], "all zero"),
    ("1,1,1,1", "must be 4 numbers"),
])
def test_bad_channel_weights_are_refused_by_every_loss(weights, message):
    torch.manual_seed(0)
    pred, target = torch.randn(3, 4, 5), torch.zeros(3, 4, 5)
    with pytest.raises(ValueError, match=message):
        lp_loss(pred, target, 2.0, channel_weights=weights)
    m, x, e = MeanFlowMLP(hidden_dim=8, n_hidden=1), torch.randn(6, 4), torch.randn(6, 4)
    r, t = torch.zeros(6), torch.full((6,), 0.5)
    z = 0.5 * x + 0.5 * e
    for tangent in ("true", "model"):
        with pytest.raises(ValueError, match=message):
            meanflow_loss(m, z, r, t, x, e, tangent=tangent, channel_weights=weights)
    with pytest.raises(ValueError, match=message):
        flow_matching_loss(m, z, t, x, e, channel_weights=weights)


def test_good_channel_weights_still_weigh_each_channel():
    pred, target = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    w = [0.0, 2, 0.5]                                            # ints, zeros and a list are fine
    assert lp_loss(pred, target, 1.0, channel_weights=w, reduction="none").tolist() == [4 * 2.5] * 2
    assert lp_loss(pred.double(), target.double(), 2.0, channel_weights=torch.tensor(w)).dtype == torch.float64


# --- uniformity verdicts on too few samples --------------------------------------------------------------------
from neuromf.metrics.torus import (MIN_UNIFORMITY_N, torus_metrics, ks_uniform_angles, joint_uniformity,
                                   exact_one_step_map)


def test_uniformity_verdict_on_too_few_samples_is_refused():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(MIN_UNIFORMITY_N, 4, generator=g, dtype=torch.float64)
    x = exact_one_step_map(e)
    for n in (1, 2, MIN_UNIFORMITY_N - 1):
        with pytest.raises(ValueError, match=f"n={n} sample\\(s\\) refused: a uniformity verdict needs n >= {MIN_UNIFORMITY_N}"):
            torus_metrics(x[:n], noise_points=e[:n])
        with pytest.raises(ValueError, match=f"KS test of an angle on n={n} "):
            ks_uniform_angles(torch.atan2(x[:n, 1], x[:n, 0]))
        with pytest.raises(ValueError, match=f"joint uniformity test on n={n} "):
            joint_uniformity(torch.zeros(n, 2))
    with pytest.raises(ValueError, match="ks_n=10.*n=10 sample"):
        torus_metrics(x, ks_n=10)
    with pytest.raises(ValueError, match="needs n >= 256"):       # a 16 x 16 grid: at least one sample per cell
        joint_uniformity(torch.zeros(200, 2), bins=16)
    m = torus_metrics(x, noise_points=e)                             # exactly the minimum: a verdict
    assert m["ks_n"] == MIN_UNIFORMITY_N and 0 < m["ks_p_theta1"] <= 1 and 0 <= m["joint_p"] <= 1


def test_distance_and_coupling_metrics_still_work_on_one_sample():
    e = torch.tensor([[3.0, 4.0, 0.0, -2.0]], dtype=torch.float64)
    one = torus_metrics(0.5 * exact_one_step_map(e), noise_points=e, uniformity=False)
    assert one["n_samples"] == 1 and not any(k.startswith(("ks_", "joint")) for k in one)
    assert one["distance_mean"] == pytest.approx(0.5)                # both pair norms 0.5/sqrt2 short: hypot(a, a) with a = 0.5/sqrt2
    assert one["coupling_error_mean"] == pytest.approx(0.5) and one["angle_error_theta1_mean"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no samples"):
        torus_metrics(torch.zeros(0, 4), uniformity=False)


# --- neuromf-bench input errors and its results file -----------------------------------------------------------
import neuromf.bench as bench

OLD = '{"command": "neuromf-bench --suite full", "cases": [1, 2, 3]}'


@pytest.mark.parametrize("argv, message", [
    (["--only", "typo"], "--only 'typo' matches no benchmark family of suite 'tiny'; valid names (or parts of them): mlp_tiny"),
    (["--rounds", "0"], "--rounds=0 must be an int >= 1"),
    (["--rounds", "-2"], "--rounds=-2 must be an int >= 1"),
    (["--warmup", "-1"], "--warmup=-1 must be an int >= 0"),
    (["--threads", "0"], "--threads=0 must be an int >= 1"),
    (["--rounds", "two"], "argument --rounds: invalid int value: 'two'"),
    ([], "already exists (neuromf-bench --suite full, "),
])
def test_bench_refuses_bad_arguments_in_one_line_and_keeps_the_results_file(tmp_path, capsys, argv, message):
    out = tmp_path / "cpu.json"
    out.write_text(OLD)
    code = bench.main(["--suite", "tiny", "--no-memory", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("neuromf-bench: error: ") and message in err, err
    assert out.read_text() == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["cpu.json"]


def test_bench_api_refuses_the_same(tmp_path):
    with pytest.raises(ValueError, match="--only 'typo' matches no"):
        bench.run_benchmark("tiny", only="typo", memory=False, log=lambda s: None)
    with pytest.raises(ValueError, match="--rounds=0"):
        bench.run_benchmark("tiny", rounds=0, memory=False, log=lambda s: None)


def test_bench_force_replaces_and_a_file_that_appears_during_the_run_is_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cpu.json"
    out.write_text(OLD)
    assert bench.main(["--suite", "tiny", "--no-memory", "--rounds", "1", "--warmup", "0", "--out", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["command"].endswith("--force") and "results: " + str(out) in capsys.readouterr().out
    fresh = tmp_path / "gpu.json"
    real = bench.run_benchmark
    def racing(*a, **kw):                                   # another run writes the same file while this one runs
        res = real(*a, **kw); fresh.write_text(OLD); return res
    monkeypatch.setattr(bench, "run_benchmark", racing)
    assert bench.main(["--suite", "tiny", "--no-memory", "--rounds", "1", "--warmup", "0", "--out", str(fresh)]) == 0
    assert fresh.read_text() == OLD
    beside = [p for p in tmp_path.iterdir() if p.name.startswith("gpu.") and p != fresh]
    assert len(beside) == 1 and json.loads(beside[0].read_text())["cases"]
    assert f"results: {beside[0]} ({fresh} appeared during the run and was kept)" in capsys.readouterr().out


def test_bench_command_line_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "neuromf.bench", "--suite", "tiny", "--only", "nothing", "--out", str(tmp_path / "x.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "valid names" in r.stderr and not (tmp_path / "x.json").exists()


def test_uniformity_tests_refuse_non_finite_angles():
    "Before: KS returned (nan, nan) and the joint test joint_p = 1.0 (a pass) for angles with one NaN."
    a = (torch.rand(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1) * math.pi
    a[7, 0] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        joint_uniformity(a)
    with pytest.raises(ValueError, match="1 non-finite"):
        ks_uniform_angles(a[:, 0])
