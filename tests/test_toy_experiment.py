"""The toroid experiment end to end on a short configuration (P2-T4..T8), resume and config errors."""
import json, os, signal, subprocess, sys, time
from dataclasses import replace
from pathlib import Path
import pytest, torch
from neuromf.config import load_config, config_to_dict, ExperimentConfig
from neuromf.data.toroid import ToroidDataset
from neuromf.toy import main, run_experiment
from neuromf.train import train, list_checkpoints, NonFiniteLossError, load_run

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "configs" / "toy_toroid_short.yaml"


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """One short u-prediction run and one short x-prediction run, shared by the P2-T4..T8 tests."""
    torch.set_num_threads(1)
    out = {}
    for kind in ("u", "x"):
        cfg = load_config(SHORT, [f"model.prediction_type={kind}"])
        d = tmp_path_factory.mktemp(f"short_{kind}")
        out[kind] = (cfg, run_experiment(cfg, d, progress=False, figures=False), d)
    return out


def _row(metrics, rid):
    return next(r for r in metrics["verification"] if r["id"] == rid)


def test_P2_T4_raw_loss_decreases(short_runs):
    for kind in ("u", "x"):
        cfg, m, d = short_runs[kind]
        log = json.loads((d / "loss_curves.json").read_text())
        steps = cfg.training.steps     # the short run is < 100 epochs of its 1e6-point torus: read 1%, 10%, 100%
        at = lambda k: next(e for e in log if e["step"] >= max(1, steps * k // 100))["raw_fm_objective"]
        assert at(100) < at(10) < at(1), (kind, at(1), at(10), at(100))
        assert _row(m, "P2-T4")["status"] == "PASS"
    # the weighted loss (gamma = 1) is flat by construction: it is not what P2-T4 reads
    assert abs(log[-1]["loss"] - log[0]["loss"]) < 0.2


# The short CI run reaches the P2-T5 bar in 3,000 steps with x-prediction (which converges faster early); the
# default u-prediction needs its full budget for that (README) and is checked here for convergence (P2-T4, P2-T8).
SHORT_KIND = "x"


def test_P2_T5_one_step_on_torus(short_runs):
    _, m, _ = short_runs[SHORT_KIND]
    assert m["ema"]["1"]["distance_mean"] < 0.1
    assert _row(m, "P2-T5")["status"] == "PASS"


def test_P2_T6_angles_uniform(short_runs):
    _, m, _ = short_runs[SHORT_KIND]
    assert m["ema"]["1"]["ks_p_theta1"] > 0.01 and m["ema"]["1"]["ks_p_theta2"] > 0.01


def test_P2_T7_five_steps_not_worse(short_runs):
    _, m, _ = short_runs[SHORT_KIND]
    assert m["ema"]["5"]["distance_mean"] <= m["ema"]["1"]["distance_mean"]


def test_P2_T8_u_and_x_prediction_converge(short_runs):
    """Both prediction types converge: raw loss below tau (half its start) and 1-NFE samples far closer to the
    torus than the noise they start from (mean distance ~1.0)."""
    for kind in ("u", "x"):
        _, m, d = short_runs[kind]
        log = json.loads((d / "loss_curves.json").read_text())
        assert log[-1]["raw_fm_objective"] < 0.7 * log[0]["raw_fm_objective"], kind
        assert _row(m, "P2-T8")["status"] == "PASS"
        assert m["ema"]["1"]["distance_mean"] < 0.2, (kind, m["ema"]["1"]["distance_mean"])


def test_outputs_layout(short_runs):
    cfg, m, d = short_runs[SHORT_KIND]
    s = torch.load(d / "generated_samples.pt")
    assert s["noise"].shape == (cfg.eval.n_samples, 4)
    for w in ("ema", "raw"):
        assert sorted(s[w]) == [1, 2, 5, 10] and s[w][5].shape == (cfg.eval.n_samples, 4)
    metrics = json.loads((d / "verification_metrics.json").read_text())
    assert set(metrics["ema"]) == {"1", "2", "5", "10"} and "coupling_error_mean" in metrics["ema"]["1"]
    report = (d / "verification_report.md").read_text()
    assert all(f"P2-T{i}" in report for i in range(1, 9))


def _tiny(steps=60):
    return load_config(overrides=[f"training.steps={steps}", "training.batch_size=64", "training.log_every=10",
                                  "training.checkpoint_every=20", "training.warmup_steps=5", "model.hidden_dim=32",
                                  "model.n_hidden=2", "data.n_samples=512", "eval.n_samples=500", "training.threads=1"])


def test_resume_equals_uninterrupted(tmp_path):
    cfg = _tiny()
    full = run_experiment(cfg, tmp_path / "full", progress=False, figures=False)
    train(cfg, tmp_path / "cut", progress=False, stop_at=30)          # interrupted after step 30 (checkpoint at 30)
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, figures=False)
    for w in ("ema", "raw"):
        assert full[w] == resumed[w]
    a = torch.load(tmp_path / "full" / "generated_samples.pt"); b = torch.load(tmp_path / "cut" / "generated_samples.pt")
    assert torch.equal(a["ema"][1], b["ema"][1])


def test_killed_process_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real `python -m neuromf.toy` run after its first checkpoint, resume it, compare with an uninterrupted run."""
    args = ["training.steps=400", "training.warmup_steps=20", "training.batch_size=64", "training.checkpoint_every=50", "training.log_every=10",
            "model.hidden_dim=32", "model.n_hidden=2", "data.n_samples=512", "eval.n_samples=500", "training.threads=1"]
    cmd = [sys.executable, "-m", "neuromf.toy", "--no-progress", "--no-figures"]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")] + args, capture_output=True, text=True)
    assert ref.returncode in (0, 1), ref.stderr      # 1: this tiny run fails P2-T5/T6, which is not what is tested here
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "run")] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_checkpoints(tmp_path / "run") and time.time() < deadline: time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    done = [s for s, _ in list_checkpoints(tmp_path / "run")]
    assert done and done[-1] < 400, f"the run was not interrupted mid-way: {done}"
    # a kill during a write can leave a hidden temp file behind; every named checkpoint must still load whole
    for _, p in list_checkpoints(tmp_path / "run"): torch.load(p, weights_only=False)
    r = subprocess.run(cmd + ["--out", str(tmp_path / "run"), "--resume"] + args, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    ref = json.loads((tmp_path / "ref" / "verification_metrics.json").read_text())
    got = json.loads((tmp_path / "run" / "verification_metrics.json").read_text())
    assert ref["ema"] == got["ema"] and ref["raw"] == got["raw"]


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    cfg = _tiny(40)
    train(cfg, tmp_path, progress=False, stop_at=20)
    poisoned = ToroidDataset(cfg.data)
    poisoned._data[:] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"at step 21.*step_00000020\.pt"):
        train(cfg, tmp_path, resume=True, progress=False, dataset=poisoned)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20]
    load_run(tmp_path).load_models(20)


def test_default_yaml_is_the_builtin_default():
    assert config_to_dict(load_config(ROOT / "configs" / "toy_toroid.yaml")) == config_to_dict(load_config())


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), ExperimentConfig)


@pytest.mark.parametrize("override,needle", [
    ("training.stepz=5", "training.stepz"), ("training.lr=fast", "training.lr"), ("training.lr=-0.1", "training.lr=-0.1"),
    ("model.prediction_type=v", "model.prediction_type='v'"), ("data.mode=cube", "mode='cube'"),
    ("time.sampler=uniform", "time.sampler='uniform'"), ("loss.strategy=autograd", "loss.strategy='autograd'"),
    ("eval.sample_steps=[0]", "eval.sample_steps"), ("model.arch=maisi_unet", "model.arch='maisi_unet'"),
])
def test_bad_config_is_named(override, needle, capsys, tmp_path):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_config(overrides=[override])
    assert main(["--out", str(tmp_path / "x"), override]) == 2
    assert needle.split("=")[0] in capsys.readouterr().err


def test_unknown_yaml_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"; p.write_text("loss:\n  tangnet: model\n")
    with pytest.raises(ValueError, match="loss.tangnet"):
        load_config(p)


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    cfg = _tiny(20)
    train(cfg, tmp_path, progress=False)
    assert main(["--out", str(tmp_path), "training.steps=20", "training.warmup_steps=5"]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_full_budget_quality(tmp_path):
    """The default config, full budget (minutes): the README marks. Run by scripts/toy_experiments.py too."""
    torch.set_num_threads(1)
    m = run_experiment(load_config(ROOT / "configs" / "toy_toroid.yaml"), tmp_path, progress=False, figures=False)
    e = m["ema"]
    assert e["1"]["distance_mean"] <= 0.03 and e["5"]["distance_mean"] <= 0.015
    assert min(e["1"]["ks_p_theta1"], e["1"]["ks_p_theta2"]) > 0.05 and e["1"]["joint_p"] > 0.01
