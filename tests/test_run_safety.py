"""Nothing lost, nothing silent (issue 13) and the training engine's own guarantees (issue 9): run-folder lock,
checkpoint verification and fallback, disk full, signals, one-line CLI errors, bf16 on CPU, TensorBoard scalars,
non-cubic latents, checkpoint pruning."""
import json, os, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
import pytest, torch
from neuromf.checkpoint import checkpoint_path, list_checkpoints, manifest_path, verify_checkpoint
from neuromf.config import load_config
from neuromf.data.latents import write_latent_folder
from neuromf.train import train, load_run
from neuromf.train_cli import main as train_main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.hidden_dim=32", "model.n_hidden=2", "data.n_samples=2048", "training.batch_size=64", "training.warmup_steps=2",
        "training.log_every=5", "training.threads=1", "eval.n_samples=200", "eval.sample_steps=[1]"]
CFG = str(ROOT / "configs" / "toy_toroid.yaml")


def _tiny(steps, *extra):
    return load_config(overrides=TINY + [f"training.steps={steps}", f"training.checkpoint_every={max(1, steps // 4)}", *extra])


def _cli(argv, capsys):
    "Run neuromf-train in this process: (exit code, stdout, stderr)."
    code = train_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _popen(argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "neuromf.train_cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def _wait_for_checkpoint(run_dir, proc, timeout=120):
    deadline = time.time() + timeout
    while not list_checkpoints(run_dir) and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()


# --- one run per folder -------------------------------------------------------------------------------------------

def test_two_concurrent_runs_one_refuses_the_other_intact(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--config", CFG, "--out", str(run), "--no-progress", "--no-figures", *TINY, "training.steps=300", "training.checkpoint_every=20"]
    first = _popen(args)
    _wait_for_checkpoint(run, first)
    code, _, err = _cli(args, capsys)                       # a second fresh run on the same folder
    assert code == 2 and err.count("\n") == 1 and ("in use by pid" in err or "already holds a run" in err), err
    code, _, err = _cli(args + ["--resume"], capsys)         # a resume while the first still runs: the lock refuses it
    assert code == 2 and f"run folder {run} is in use by pid {first.pid}" in err, err
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps[-1] == 300 and all(verify_checkpoint(p) is None for _, p in list_checkpoints(run))
    assert json.loads((run / "loss_curves.json").read_text())[-1]["step"] == 300
    assert not (run / ".lock.holder.json").exists()          # released at the end


# --- checkpoints --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "no_manifest"])
def test_bad_last_checkpoint_resume_falls_back_and_ends_equal(tmp_path, damage):
    cfg = _tiny(40)
    ref = train(cfg, tmp_path / "ref", progress=False)
    train(cfg, tmp_path / "run", progress=False, stop_at=30)             # checkpoints at 10, 20, 30
    last = checkpoint_path(tmp_path / "run", 30)
    if damage == "truncate": last.write_bytes(last.read_bytes()[:len(last.read_bytes()) // 2])
    elif damage == "empty": last.write_bytes(b"")
    elif damage == "garbage": last.write_bytes(os.urandom(last.stat().st_size))
    else: manifest_path(last).unlink()
    with pytest.warns(UserWarning, match="step_00000030.pt"):
        res = train(cfg, tmp_path / "run", resume=True, progress=False)  # continues from step 20, naming the bad one
    assert res.log == ref.log
    for a, b in zip(ref.model.parameters(), res.model.parameters()): assert torch.equal(a, b)


def test_dashboards_and_run_folder_skip_a_bad_checkpoint(tmp_path):
    train(_tiny(20), tmp_path, progress=False)
    checkpoint_path(tmp_path, 20).write_bytes(b"\x80\x02garbage")
    with pytest.warns(UserWarning, match="step_00000020.pt"):
        run = load_run(tmp_path)
    assert run.steps == [5, 10, 15]
    from neuromf.dashboards import TorusFidelityDashboard
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dash = TorusFidelityDashboard.from_run(tmp_path, n_samples=200)
    assert dash.metrics["distance_mean"] > 0


def test_keep_checkpoints_and_pins(tmp_path):
    train(_tiny(40, "training.checkpoint_every=5", "training.keep_checkpoints=2", "training.pin_checkpoints=[10]"), tmp_path, progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 35, 40]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [f"step_{s:08d}.{x}" for s in (10, 35, 40) for x in ("json", "pt")]


# --- disk full ----------------------------------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}); disk-full test not run")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_while_checkpointing(small_tmpfs, tmp_path, capsys):
    run = small_tmpfs / "run"
    cfg = _tiny(40, "training.checkpoint_every=10")
    train(cfg, tmp_path / "probe", progress=False, stop_at=10)
    size = checkpoint_path(tmp_path / "probe", 10).stat().st_size
    train(cfg, run, progress=False, stop_at=10)                       # one good checkpoint
    free = shutil.disk_usage(small_tmpfs).free
    (small_tmpfs / "filler").write_bytes(b"\0" * (free - size // 2))   # room for less than one more checkpoint
    code, out, err = _cli(["--config", CFG, "--out", str(run), "--resume", "--no-progress", "--no-figures", *TINY,
                           "training.steps=40", "training.checkpoint_every=10"], capsys)
    assert code != 0 and err.count("\n") == 1 and "no space left on" in err and str(run) in err, err
    assert "Traceback" not in err
    assert verify_checkpoint(checkpoint_path(run, 10)) is None          # the earlier checkpoint is intact
    assert not [p for p in run.rglob(".*tmp*")], list(run.rglob(".*tmp*"))   # no partial files left
    (small_tmpfs / "filler").unlink()
    res = train(cfg, run, resume=True, progress=False)                  # space back: the run finishes
    assert res.step == 40


# --- signals ------------------------------------------------------------------------------------------------------

def test_sigint_checkpoints_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = _popen(["--config", CFG, "--out", str(run), "--no-progress", "--no-figures", *TINY, "training.steps=2000",
                   "training.checkpoint_every=50"])
    _wait_for_checkpoint(run, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "stopped by SIGINT at step" in out
    step = int(out.split("at step ")[1].split(";")[0])
    assert step < 2000 and verify_checkpoint(checkpoint_path(run, step)) is None
    assert json.loads((run / "stopped.json").read_text())["step"] == step


# --- one clear line from the CLI ----------------------------------------------------------------------------------

def _bad_inputs(tmp_path):
    run = tmp_path / "done"
    train(_tiny(8), run, progress=False)
    (tmp_path / "bad.yaml").write_text("training: {steps: 3\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "results").mkdir(); (tmp_path / "results" / "verification_metrics.json").write_text("{}")
    lat = tmp_path / "lat20"; write_latent_folder(torch.randn(2, 4, 20, 16, 16), lat)
    base = ["--no-progress", "--no-figures"]
    return {
        "missing config": (["--config", "/no/such.yaml", "--out", str(tmp_path / "x")], "config file not found: /no/such.yaml"),
        "malformed yaml": (["--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "x")], "is not valid YAML (line 2"),
        "yaml not a mapping": (["--config", str(tmp_path / "list.yaml"), "--out", str(tmp_path / "x")], "must hold a mapping"),
        "unknown key": (["--config", CFG, "--out", str(tmp_path / "x"), "training.stepz=3"], "training.stepz"),
        "bad override syntax": (["--config", CFG, "--out", str(tmp_path / "x"), "training.steps"], "section.key=value"),
        "warm-up longer than run": (["--config", CFG, "--out", str(tmp_path / "x"), "training.steps=100"], "warmup_steps=500"),
        "resume changed config": (["--config", CFG, "--out", str(run), "--resume", *TINY, "training.steps=8", "loss.p=1.0"], "loss.p: 2.0 -> 1.0"),
        "resume fewer steps": (["--config", CFG, "--out", str(run), "--resume", *TINY, "training.steps=4"], "training.steps=4 is below"),
        "resume empty folder": (["--config", CFG, "--out", str(tmp_path / "empty"), "--resume"], "nothing to resume"),
        "fresh run on a run": (["--config", CFG, "--out", str(run), *TINY, "training.steps=8"], "already holds a run"),
        "results without checkpoints": (["--config", CFG, "--out", str(tmp_path / "results"), *TINY, "training.steps=8"], "already holds a run (verification_metrics.json)"),
        "out is a file": (["--config", CFG, "--out", str(tmp_path / "afile")], "is a file, not a folder"),
        "unet size not divisible by 8": (["--config", str(ROOT / "configs" / "toy_toroid_volumetric_unet.yaml"), "--out", str(tmp_path / "x"),
                                          "data.spatial_size=12"], "must be divisible by 8"),
        "latent shape not divisible by 8": (["--config", str(ROOT / "configs" / "maisi_latents_small.yaml"), "--out", str(tmp_path / "x"),
                                             f"data.latents_dir={lat}"], "(20, 16, 16) must be divisible by 8"),
        "latent folder missing": (["--config", str(ROOT / "configs" / "maisi_latents_small.yaml"), "--out", str(tmp_path / "x"),
                                   "data.latents_dir=/no/latents"], "/no/latents"),
        "nproc 0": (["--config", CFG, "--out", str(tmp_path / "x"), "--nproc-per-node", "0"], "--nproc-per-node=0"),
        "cuda without gpu": (["--config", CFG, "--out", str(tmp_path / "x"), "training.device=cuda"], "no CUDA device"),
    }, base


def test_cli_errors_are_one_line(tmp_path, capsys):
    cases, base = _bad_inputs(tmp_path)
    for name, (argv, needle) in cases.items():
        if name == "cuda without gpu" and torch.cuda.is_available(): continue
        code, out, err = _cli(argv + base, capsys)
        assert code == 2, (name, code, err)
        assert err.startswith("neuromf-train: error: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert needle in err, (name, err)
    assert not (tmp_path / "x").exists() or not list_checkpoints(tmp_path / "x")


def test_read_only_out_folder(tmp_path, capsys):
    ro = tmp_path / "ro"; ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a read-only tmpfs here ({r.stderr.strip()}); read-only case not run")
    try:
        code, out, err = _cli(["--config", CFG, "--out", str(ro / "run"), "--no-progress"], capsys)
        assert code == 2 and err.count("\n") == 1 and str(ro / "run") in err, err
    finally: subprocess.run(["umount", "-l", str(ro)])


# --- engine: precision, logs, shapes ------------------------------------------------------------------------------

def test_bf16_step_on_cpu_and_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    lat = tmp_path / "lat"; write_latent_folder(torch.randn(4, 4, 8, 8, 8), lat)
    cfg = load_config(ROOT / "configs" / "maisi_latents_small.yaml", [f"data.latents_dir={lat}", "training.precision=bf16",
                      "training.steps=3", "training.warmup_steps=1", "training.batch_size=2", "training.log_every=1",
                      "training.checkpoint_every=3", "training.threads=1", "loss.strategy=exact_nograd"])
    res = train(cfg, tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in res.log) and len(res.log) == 3
    ev = EventAccumulator(str(tmp_path / "run" / "tensorboard")); ev.Reload()
    tags = set(ev.Tags()["scalars"])
    assert {"loss/weighted", "loss/flow_matching_error", "opt/lr", "opt/grad_norm", "speed/steps_per_s", "memory/peak_mb"} <= tags
    assert [e.step for e in ev.Scalars("loss/weighted")] == [1, 2, 3]
    lines = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3] and all("samples_per_s" in l for l in lines)


def test_non_cubic_latents_train(tmp_path):
    lat = tmp_path / "lat"; write_latent_folder(torch.randn(6, 4, 24, 24, 16), lat)
    cfg = load_config(ROOT / "configs" / "maisi_latents_small.yaml", [f"data.latents_dir={lat}", "training.steps=2",
                      "training.warmup_steps=1", "training.batch_size=2", "training.log_every=1", "training.threads=1"])
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.config.data.latent_shape == [4, 24, 24, 16] and len(res.log) == 2
    assert load_run(tmp_path / "run").latent_stats()["shape"] == [4, 24, 24, 16]
    raw, ema = load_run(tmp_path / "run").load_models()
    assert raw(torch.zeros(1, 4, 24, 24, 16), 0.0, 1.0).shape == (1, 4, 24, 24, 16)
