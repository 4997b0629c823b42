"""Data parallelism and preemption, with real processes: torchrun + gloo on this CPU (SPEC 11).

- 2 processes end with the parameters of 1 process on the same global batch (MLP on the torus, small MAISI UNet on a
  latent folder), also with accumulation 2 and half the per-step batch;
- SIGTERM mid-run exits 0 with a checkpoint, and the resumed run ends bit-identical to an uninterrupted one (1 process
  and 2 processes);
- a latent file that goes bad mid-run stops every rank, naming the file (no hung collective).
"""
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from neuromf.checkpoint import list_checkpoints
from neuromf.config import load_config
from neuromf.data.latents import write_toroid_latents
from neuromf.train import load_run, train

ROOT = Path(__file__).resolve().parent.parent
MLP = ["model.hidden_dim=32", "model.n_hidden=2", "data.n_samples=4096", "training.warmup_steps=2", "training.log_every=5",
       "training.threads=1", "training.check_model=false", "eval.n_samples=200", "eval.sample_steps=[1]"]


def _cli(out, overrides, nproc=1, config=None, launcher="torchrun"):
    "The neuromf-train command line: under torchrun, or with its own --nproc-per-node launcher."
    head = [sys.executable, "-m"]
    if nproc > 1 and launcher == "torchrun": head += ["torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
    tail = [f"--nproc-per-node={nproc}"] if nproc > 1 and launcher == "builtin" else []
    return head + ["neuromf.train_cli", "--config", str(config or ROOT / "configs" / "toy_toroid.yaml"), "--out", str(out),
                   "--no-progress", "--no-figures"] + tail + overrides


def _run(cmd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _params(run_dir):
    raw, ema = load_run(run_dir).load_models()
    return torch.cat([p.flatten() for p in raw.parameters()]), torch.cat([p.flatten() for p in ema.parameters()])


def _close(a, b, tol=2e-5):
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=tol, rtol=tol), (x - y).abs().max().item()


def test_ddp_mlp_equals_one_process_same_global_batch(tmp_path):
    steps = ["training.steps=12", "training.checkpoint_every=12"]
    one = train(load_config(overrides=MLP + steps + ["training.batch_size=64"]), tmp_path / "one", progress=False)
    r = _run(_cli(tmp_path / "two", MLP + steps + ["training.batch_size=32"], nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(_cli(tmp_path / "acc", MLP + steps + ["training.batch_size=16", "training.accumulate=2"], nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    ref = (torch.cat([p.flatten() for p in one.model.parameters()]), torch.cat([p.flatten() for p in one.ema_model().parameters()]))
    _close(ref, _params(tmp_path / "two"))
    _close(ref, _params(tmp_path / "acc"))
    assert not torch.equal(ref[0], torch.cat([p.flatten() for p in load_run(tmp_path / "one").load_models(12)[0].parameters()]) * 0)


def test_ddp_unet_on_latent_folder_equals_one_process(tmp_path):
    lat = tmp_path / "latents"
    write_toroid_latents(load_config(overrides=["data.mode=volumetric", "data.spatial_size=8", "data.n_samples=16"]).data, lat)
    cfg_file = ROOT / "configs" / "maisi_latents_small.yaml"
    common = [f"data.latents_dir={lat}", "training.steps=3", "training.warmup_steps=1", "training.log_every=1",
              "training.checkpoint_every=3", "training.threads=1", "training.check_model=false"]
    one = train(load_config(cfg_file, common + ["training.batch_size=4"]), tmp_path / "one", progress=False)
    r = _run(_cli(tmp_path / "two", common + ["training.batch_size=2"], nproc=2, config=cfg_file))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sample it: neuromf-sample" in r.stdout
    ref = (torch.cat([p.flatten() for p in one.model.parameters()]), torch.cat([p.flatten() for p in one.ema_model().parameters()]))
    _close(ref, _params(tmp_path / "two"), tol=1e-4)


def _sigterm_after_first_checkpoint(cmd, run_dir, target_pid=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 180
    while not list_checkpoints(run_dir) and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_checkpoints_exits_0_and_resume_is_bit_identical(tmp_path, nproc):
    over = MLP + ["training.steps=400", "training.checkpoint_every=40", f"training.batch_size={64 // nproc}"]
    code, out, err = _sigterm_after_first_checkpoint(_cli(tmp_path / "cut", over, nproc, launcher="builtin"), tmp_path / "cut")
    assert code == 0, err[-3000:]
    assert "stopped by SIGTERM at step" in out, out
    done = [s for s, _ in list_checkpoints(tmp_path / "cut")]
    assert done and done[-1] < 400
    assert done[-1] % 40 != 0 or len(done) > 1          # the stop wrote its own checkpoint at the step boundary
    r = _run(_cli(tmp_path / "cut", over, nproc, launcher="builtin") + ["--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    ref = train(load_config(overrides=over[:-1] + ["training.batch_size=64"]), tmp_path / "ref", progress=False)
    a, b = _params(tmp_path / "cut"), (torch.cat([p.flatten() for p in ref.model.parameters()]),
                                        torch.cat([p.flatten() for p in ref.ema_model().parameters()]))
    if nproc == 1: assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])      # bit-identical
    else:
        _close(a, b)                                                                # 2 vs 1 process: fp32 sums
        r2 = _run(_cli(tmp_path / "whole", over, 2))                               # 2 processes, uninterrupted
        assert r2.returncode == 0, r2.stderr[-3000:]
        c = _params(tmp_path / "whole")
        assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])                  # bit-identical on the same world size


def test_a_latent_file_gone_bad_stops_every_rank_naming_it(tmp_path):
    lat = tmp_path / "latents"
    files = write_toroid_latents(load_config(overrides=["data.mode=volumetric", "data.spatial_size=8", "data.n_samples=8"]).data, lat)
    cfg_file = ROOT / "configs" / "maisi_latents_small.yaml"
    over = [f"data.latents_dir={lat}", "training.steps=400", "training.warmup_steps=1", "training.checkpoint_every=2",
            "training.batch_size=1", "training.threads=1", "training.check_model=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(tmp_path / "run", over, 2, cfg_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 180
    while not list_checkpoints(tmp_path / "run") and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    files[3].write_bytes(b"not a tensor")
    t0 = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.time() - t0 < 100, "ranks did not stop together"
    assert files[3].name in err, err[-3000:]
    assert list_checkpoints(tmp_path / "run")                     # finished work kept
