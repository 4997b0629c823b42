"""Every bad input and fault a user can meet, tried the way a user would, and classified from what actually happens:

  clear      a non-zero exit (or an exception from the API) with one line naming the bad value, file or folder
  warned     the case is legal but risky: it proceeds with a warning that says so (e.g. rflow on a CPU)
  handled    a fault the tool recovers from by design (a bad checkpoint skipped, a stop that checkpoints), with a message
  traceback  a raw traceback from a command
  silent     bad input accepted without a word
  unclear    an error that does not name what is wrong
  lost       finished work (checkpoints, results) damaged or gone

    .venv/bin/python scripts/robustness.py [--out bench_results/robustness.json] [--only SUBSTRING|AREA]   # ~3 minutes

Writes a markdown table (case, how, outcome, message) and the counts. Cases run in-process where the command's
own `main(argv)` is what the console script calls, in subprocesses where signals, locks or processes matter.
"""
import argparse, contextlib, io, json, os, shutil, signal, subprocess, sys, tempfile, time, traceback, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CFG = str(ROOT / "configs" / "toy_toroid.yaml")
SMALL_UNET = str(ROOT / "configs" / "maisi_latents_small.yaml")
TINY = ["model.hidden_dim=32", "model.n_hidden=2", "data.n_samples=2048", "training.batch_size=64", "training.warmup_steps=2",
        "training.log_every=5", "training.threads=1", "eval.n_samples=200", "eval.sample_steps=[1]", "--no-progress", "--no-figures"]
CASES = []


def case(area, name, how):
    def deco(fn): CASES.append((area, name, how, fn)); return fn
    return deco


def run_main(main, argv):
    "A command's main(argv) in this process: (exit code or None if it raised, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        try: code = main(argv)
        except SystemExit as e: code = e.code if isinstance(e.code, int) else 2
        except BaseException: return None, out.getvalue(), err.getvalue() + traceback.format_exc()
    return code, out.getvalue(), err.getvalue()


def classify_cli(code, err, needle):
    lines = [l for l in err.strip().splitlines() if l.strip() and ": warning: " not in l]
    if code is None or "Traceback" in err: return "traceback", (lines[-1] if lines else "")
    if code == 0: return "silent", "exit 0"
    msg = lines[-1] if lines else ""
    if len(lines) != 1: return "unclear", f"{len(lines)} lines: {msg}"
    return ("clear" if needle in msg else "unclear"), msg


def classify_api(fn, needle, exc=Exception):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try: fn()
        except exc as e:
            msg = " ".join(str(e).split())
            return ("clear" if needle in msg else "unclear"), f"{type(e).__name__}: {msg}"
        except BaseException as e: return "unclear", f"{type(e).__name__}: {e}"
    return "silent", "no error"


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    "A tmpfs mounted at `path` for the block (yields None where this machine cannot mount one); unmounted after."
    path.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        yield None; return
    try: yield path
    finally: subprocess.run(["umount", "-l", str(path)])


def train_cli(argv): from neuromf.train_cli import main; return run_main(main, argv)
def toy_cli(argv): from neuromf.toy import main; return run_main(main, argv)


class Env:
    "Shared fixtures: a finished tiny run, latent folders, files of every kind of wrong."
    def __init__(self, tmp: Path):
        import torch
        from neuromf.config import load_config
        from neuromf.data.latents import write_latent_folder, write_toroid_latents
        from neuromf.train import train
        self.tmp = tmp
        self.run = tmp / "done"
        train(load_config(overrides=[o for o in TINY if "=" in o] + ["training.steps=20", "training.checkpoint_every=5"]), self.run, progress=False)
        (tmp / "bad.yaml").write_text("training: {steps: 3\n")
        (tmp / "list.yaml").write_text("- 1\n- 2\n")
        (tmp / "afile").write_text("x")
        (tmp / "empty").mkdir()
        (tmp / "results").mkdir(); (tmp / "results" / "verification_metrics.json").write_text("{}")
        self.lat8 = tmp / "lat8"; write_toroid_latents(load_config(overrides=["data.mode=volumetric", "data.spatial_size=8", "data.n_samples=8"]).data, self.lat8)
        self.lat20 = tmp / "lat20"; write_latent_folder(torch.randn(2, 4, 20, 16, 16), self.lat20)
        self.mixed = tmp / "mixed"; write_latent_folder(torch.randn(2, 4, 8, 8, 8), self.mixed); write_latent_folder(torch.randn(1, 4, 16, 8, 8), self.mixed, prefix="z")
        self.corrupt = tmp / "corrupt"; write_latent_folder(torch.randn(3, 4, 8, 8, 8), self.corrupt); (self.corrupt / "latent_00001.pt").write_bytes(b"garbage")
        self.nolat = tmp / "nolat"; self.nolat.mkdir(); (self.nolat / "readme.txt").write_text("no latents here")
        self._mri = None

    def out(self, name): return str(self.tmp / name)

    def mri(self):
        "The MRI fixtures, built on first use (so `--only` on other cases stays fast)."
        if self._mri is None: self._mri = _mri_fixtures(self.tmp / "mri")
        return self._mri


# --------------------------------------------------------------------------------------------------- configuration
def _cfg_case(name, argv_fn, needle, how):
    @case("config", name, how)
    def _(env): return classify_cli(*[train_cli(argv_fn(env))[i] for i in (0, 2)], needle)

_cfg_case("missing config file", lambda e: ["--config", "/no/such.yaml", "--out", e.out("x")], "/no/such.yaml", "neuromf-train --config /no/such.yaml")
_cfg_case("malformed YAML", lambda e: ["--config", str(e.tmp / "bad.yaml"), "--out", e.out("x")], "not valid YAML", "unclosed `{` in the file")
_cfg_case("YAML that is not a mapping", lambda e: ["--config", str(e.tmp / "list.yaml"), "--out", e.out("x")], "must hold a mapping", "a YAML list")
_cfg_case("config path is a folder", lambda e: ["--config", str(e.tmp), "--out", e.out("x")], "is not a file", "--config <folder>")
_cfg_case("unknown key", lambda e: ["--config", CFG, "--out", e.out("x"), "training.stepz=3"], "training.stepz", "training.stepz=3")
_cfg_case("wrong type", lambda e: ["--config", CFG, "--out", e.out("x"), "training.lr=fast"], "training.lr", "training.lr=fast")
_cfg_case("negative learning rate", lambda e: ["--config", CFG, "--out", e.out("x"), "training.lr=-1"], "training.lr=-1", "training.lr=-1")
_cfg_case("override without =", lambda e: ["--config", CFG, "--out", e.out("x"), "training.steps"], "section.key=value", "training.steps")
_cfg_case("warm-up longer than the run", lambda e: ["--config", CFG, "--out", e.out("x"), "training.steps=100"], "warmup_steps=500", "training.steps=100 (warm-up 500)")
_cfg_case("unknown prediction type", lambda e: ["--config", CFG, "--out", e.out("x"), "model.prediction_type=v"], "prediction_type='v'", "model.prediction_type=v")
_cfg_case("unknown JVP strategy", lambda e: ["--config", CFG, "--out", e.out("x"), "loss.strategy=autograd"], "loss.strategy='autograd'", "loss.strategy=autograd")
_cfg_case("negative channel weight", lambda e: ["--config", CFG, "--out", e.out("x"), "loss.channel_weights=[1,-1,1,1]"], "channel_weights", "loss.channel_weights=[1,-1,1,1]")
_cfg_case("NaN channel weight", lambda e: ["--config", CFG, "--out", e.out("x"), "loss.channel_weights=[1,.nan,1,1]"], "channel_weights", "loss.channel_weights=[1,.nan,1,1]")
_cfg_case("channel weights, wrong count", lambda e: ["--config", CFG, "--out", e.out("x"), "loss.channel_weights=[1,2]"], "one weight per channel", "2 weights for 4 channels")
_cfg_case("unknown precision", lambda e: ["--config", CFG, "--out", e.out("x"), "training.precision=fp16"], "training.precision='fp16'", "training.precision=fp16")
_cfg_case("unknown device", lambda e: ["--config", CFG, "--out", e.out("x"), "training.device=tpu"], "training.device='tpu'", "training.device=tpu")
_cfg_case("accumulate 0", lambda e: ["--config", CFG, "--out", e.out("x"), "training.accumulate=0"], "training.accumulate=0", "training.accumulate=0")
_cfg_case("keep_checkpoints < 0", lambda e: ["--config", CFG, "--out", e.out("x"), "training.keep_checkpoints=-1"], "keep_checkpoints=-1", "training.keep_checkpoints=-1")
_cfg_case("evaluation at 0 steps", lambda e: ["--config", CFG, "--out", e.out("x"), "eval.sample_steps=[0]"], "eval.sample_steps", "eval.sample_steps=[0]")
_cfg_case("UNet size not divisible by 8", lambda e: ["--config", str(ROOT / "configs/toy_toroid_volumetric_unet.yaml"), "--out", e.out("x"), "data.spatial_size=12"], "divisible by 8", "volumetric torus 12^3 with the UNet")
_cfg_case("UNet on points", lambda e: ["--config", CFG, "--out", e.out("x"), "model.arch=maisi_unet"], "needs volumes", "model.arch=maisi_unet on r4 data")
_cfg_case("init_from without MAISI time scale", lambda e: ["--config", SMALL_UNET, "--out", e.out("x"), "model.unet.init_from=w.pt"], "time_scale", "model.unet.init_from=w.pt, time_scale 1")
_cfg_case("init_from file missing", lambda e: ["--config", SMALL_UNET, "--out", e.out("x"), f"data.latents_dir={e.lat8}", "model.unet.init_from=/no/w.pt", "model.unet.time_scale=1000"], "/no/w.pt", "model.unet.init_from=/no/w.pt")
_cfg_case("CUDA asked, none present", lambda e: ["--config", CFG, "--out", e.out("x"), "training.device=cuda"], "no CUDA device", "training.device=cuda on a CPU machine")
_cfg_case("--nproc-per-node 0", lambda e: ["--config", CFG, "--out", e.out("x"), "--nproc-per-node", "0"], "--nproc-per-node=0", "--nproc-per-node 0")

# ----------------------------------------------------------------------------------------------------- run folders
_cfg_case_rf = lambda name, fn, needle, how: case("run folder", name, how)(lambda env: classify_cli(*[train_cli(fn(env))[i] for i in (0, 2)], needle))
_cfg_case_rf("fresh run on a folder with a run", lambda e: ["--config", CFG, "--out", str(e.run), *TINY, "training.steps=20"], "already holds a run", "same --out twice")
_cfg_case_rf("fresh run on results without checkpoints", lambda e: ["--config", CFG, "--out", str(e.tmp / "results"), *TINY, "training.steps=20"], "already holds a run (verification_metrics.json)", "folder with verification_metrics.json only")
_cfg_case_rf("--out is a file", lambda e: ["--config", CFG, "--out", str(e.tmp / "afile")], "is a file", "--out <file>")
_cfg_case_rf("resume of an empty folder", lambda e: ["--config", CFG, "--out", str(e.tmp / "empty"), "--resume"], "nothing to resume", "--resume on an empty folder")
_cfg_case_rf("resume of a missing folder", lambda e: ["--config", CFG, "--out", e.out("nowhere"), "--resume"], "nothing to resume", "--resume on a path that does not exist")
_cfg_case_rf("resume with a changed config", lambda e: ["--config", CFG, "--out", str(e.run), "--resume", *TINY, "training.steps=20", "loss.p=1.0"], "loss.p: 2.0 -> 1.0", "--resume loss.p=1.0")
_cfg_case_rf("resume with fewer steps than done", lambda e: ["--config", CFG, "--out", str(e.run), "--resume", *TINY, "training.steps=10"], "below the step", "--resume training.steps=10 after 20")
_cfg_case_rf("resume with another global batch", lambda e: ["--config", CFG, "--out", str(e.run), "--resume", *TINY, "training.steps=30", "training.batch_size=32"], "global batch", "--resume training.batch_size=32 (was 64)")


@case("run folder", "--out read-only", "--out on a read-only mount")
def _(env):
    with tmpfs(env.tmp / "ro", "ro,size=1m") as ro:
        if ro is None: return "not run", "cannot mount a read-only tmpfs here"
        code, _, err = train_cli(["--config", CFG, "--out", str(ro / "run"), *TINY])
        return classify_cli(code, err, str(ro / "run"))


def _popen_train(argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "neuromf.train_cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def _wait_ckpt(run, proc, timeout=120):
    from neuromf.checkpoint import list_checkpoints
    t = time.time() + timeout
    while not list_checkpoints(run) and proc.poll() is None and time.time() < t: time.sleep(0.05)


@case("run folder", "two runs on one folder", "start a run; start a second (fresh, then --resume) on its folder 0.5 s later")
def _(env):
    from neuromf.checkpoint import list_checkpoints, verify_checkpoint
    run = env.tmp / "busy"
    argv = ["--config", CFG, "--out", str(run), *TINY, "training.steps=200", "training.checkpoint_every=20"]
    first = _popen_train(argv); _wait_ckpt(run, first)
    outcomes = [classify_cli(*[train_cli(a)[i] for i in (0, 2)], "in use by pid") for a in (argv, argv + ["--resume"])]
    first.communicate(timeout=300)
    if first.returncode != 0 or not all(verify_checkpoint(p) is None for _, p in list_checkpoints(run)) or list_checkpoints(run)[-1][0] != 200:
        return "lost", "the first run's results were damaged"
    ok = outcomes[1][0] == "clear" and outcomes[0][1] and ("already holds a run" in outcomes[0][1] or "in use" in outcomes[0][1])
    return ("clear" if ok else "unclear"), outcomes[1][1]


# ------------------------------------------------------------------------------------------------------ checkpoints
def _damaged_resume(env, damage):
    from neuromf.checkpoint import checkpoint_path, manifest_path
    run = env.tmp / f"dmg_{damage}"; shutil.copytree(env.run, run)
    last = checkpoint_path(run, 20)
    if damage == "truncated": last.write_bytes(last.read_bytes()[:200])
    elif damage == "zero bytes": last.write_bytes(b"")
    elif damage == "garbage": last.write_bytes(os.urandom(last.stat().st_size))
    elif damage == "no manifest": manifest_path(last).unlink()
    code, out, err = train_cli(["--config", CFG, "--out", str(run), "--resume", *TINY, "training.steps=30"])
    if code != 0: return classify_cli(code, err, "step_00000020")
    warn = next((l for l in err.splitlines() if "step_00000020" in l), "")
    return ("handled", warn) if warn else ("silent", "resumed without naming the skipped checkpoint")

for _d in ("truncated", "zero bytes", "garbage", "no manifest"):
    case("checkpoints", f"{_d} last checkpoint, --resume", f"damage step 20, then --resume")(lambda env, d=_d: _damaged_resume(env, d))


@case("checkpoints", "every checkpoint bad, --resume", "empty every checkpoint file, then --resume")
def _(env):
    from neuromf.checkpoint import list_checkpoints
    run = env.tmp / "allbad"; shutil.copytree(env.run, run)
    for _, p in list_checkpoints(run): p.write_bytes(b"")
    return classify_cli(*[train_cli(["--config", CFG, "--out", str(run), "--resume", *TINY, "training.steps=30"])[i] for i in (0, 2)], "no usable checkpoint")


@case("checkpoints", "dashboard on a run with a bad checkpoint", "TorusFidelityDashboard.from_run after emptying the last checkpoint")
def _(env):
    from neuromf.checkpoint import checkpoint_path
    from neuromf.dashboards import TorusFidelityDashboard
    run = env.tmp / "dashbad"; shutil.copytree(env.run, run); checkpoint_path(run, 20).write_bytes(b"")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try: d = TorusFidelityDashboard.from_run(run, n_samples=200)
        except Exception as e: return "unclear", f"{type(e).__name__}: {e}"
    msg = next((str(x.message) for x in w if "step_00000020" in str(x.message)), "")
    return ("handled" if msg else "silent"), msg or "bad checkpoint not named"


@case("checkpoints", "load_run on a folder that is not a run", "neuromf.load_run('<empty folder>')")
def _(env):
    from neuromf.train import load_run
    return classify_api(lambda: load_run(env.tmp / "empty"), "not a NeuroMF run folder")


@case("checkpoints", "load_models at a step that does not exist", "load_run(run).load_models(7)")
def _(env):
    from neuromf.train import load_run
    return classify_api(lambda: load_run(env.run).load_models(7), "no checkpoint at step 7")


# ------------------------------------------------------------------------------------------------------- disk full
@case("disk", "disk full while checkpointing", "3 MB tmpfs filled to less than one checkpoint, then --resume")
def _(env):
    from neuromf.checkpoint import checkpoint_path, verify_checkpoint
    with tmpfs(env.tmp / "fs", "size=3m") as mnt:
        if mnt is None: return "not run", "cannot mount a tmpfs here"
        run = mnt / "run"; shutil.copytree(env.run, run)
        size = checkpoint_path(run, 20).stat().st_size
        (mnt / "filler").write_bytes(b"\0" * (shutil.disk_usage(mnt).free - size // 2))
        code, _, err = train_cli(["--config", CFG, "--out", str(run), "--resume", *TINY, "training.steps=40", "training.checkpoint_every=5"])
        if verify_checkpoint(checkpoint_path(run, 20)) is not None: return "lost", "earlier checkpoint damaged"
        if list(run.rglob(".*tmp*")): return "lost", "partial files left behind"
        return classify_cli(code, err, "no space left on")


@case("disk", "disk full while writing figures", "tmpfs filled before the figures of a finished run")
def _(env):
    import torch
    from neuromf.config import load_config
    from neuromf.evaluate import write_figures, make_figures
    with tmpfs(env.tmp / "fs2", "size=2m") as mnt:
        if mnt is None: return "not run", "cannot mount a tmpfs here"
        import plotly.graph_objects as go
        (mnt / "filler").write_bytes(b"\0" * (shutil.disk_usage(mnt).free - 200_000))   # plotly.min.js needs ~4.5 MB
        res = classify_api(lambda: write_figures({"loss": go.Figure()}, mnt / "figures"), "No space left on device: '" + str(mnt / "figures"))
        left = list((mnt / "figures").glob("*")) if (mnt / "figures").exists() else []
        return ("lost", f"partial files left: {left}") if left else res


@case("disk", "truncated plotly.min.js from an earlier run", "cut figures/plotly.min.js to 1 kB, write figures again")
def _(env):
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
    from neuromf.evaluate import write_figures
    d = env.tmp / "figs"; write_figures({"a": go.Figure()}, d)
    (d / "plotly.min.js").write_text(get_plotlyjs()[:1000])
    write_figures({"a": go.Figure()}, d)
    return ("handled", "bundle re-written whole") if (d / "plotly.min.js").read_text() == get_plotlyjs() else ("lost", "truncated bundle kept")


# --------------------------------------------------------------------------------------------------------- signals
def _signal_case(sig, nproc=1):
    def fn(env):
        run = env.tmp / f"sig_{sig}_{nproc}"
        argv = ["--config", CFG, "--out", str(run), *TINY, "training.steps=3000", "training.checkpoint_every=40"]
        if nproc > 1: argv += [f"--nproc-per-node={nproc}", "training.batch_size=32"]
        p = _popen_train(argv); _wait_ckpt(run, p)
        p.send_signal(sig); out, err = p.communicate(timeout=180)
        if "Traceback" in err: return "traceback", err.strip().splitlines()[-1]
        line = next((l for l in out.splitlines() if "stopped by" in l), "")
        return ("handled" if p.returncode == 0 and line else "unclear"), line or f"exit {p.returncode}"
    return fn

case("signals", "SIGTERM during training", "kill -TERM <neuromf-train> after its first checkpoint")(_signal_case(signal.SIGTERM))
case("signals", "Ctrl-C (SIGINT) during training", "kill -INT <neuromf-train> after its first checkpoint")(_signal_case(signal.SIGINT))
case("signals", "SIGTERM to a 2-process run", "neuromf-train --nproc-per-node 2; kill -TERM <launcher>")(_signal_case(signal.SIGTERM, 2))


@case("signals", "SIGKILL during training, then --resume", "kill -9 after the first checkpoint; --resume")
def _(env):
    from neuromf.checkpoint import list_checkpoints
    run = env.tmp / "killed"
    argv = ["--config", CFG, "--out", str(run), *TINY, "training.steps=200", "training.checkpoint_every=20"]
    p = _popen_train(argv); _wait_ckpt(run, p); p.kill(); p.wait()
    code, out, err = train_cli(argv + ["--resume"])
    return ("handled", f"resumed to step {list_checkpoints(run)[-1][0]}") if code == 0 else classify_cli(code, err, "")


# ------------------------------------------------------------------------------------------------ training faults
@case("training", "NaN in the training data", "train on torus data poisoned with NaN")
def _(env):
    from neuromf.config import load_config
    from neuromf.data.toroid import ToroidDataset
    from neuromf.train import train
    cfg = load_config(overrides=[o for o in TINY if "=" in o] + ["training.steps=10", "training.checkpoint_every=5"])
    ds = ToroidDataset(cfg.data); ds._data[:] = float("nan")
    return classify_api(lambda: train(cfg, env.tmp / "nan", progress=False, dataset=ds), "training samples contain NaN")


@case("training", "non-finite loss mid-run", "resume a run on data poisoned with NaN, model check off")
def _(env):
    from neuromf.config import load_config
    from neuromf.data.toroid import ToroidDataset
    from neuromf.train import train
    run = env.tmp / "nan_mid"; shutil.copytree(env.run, run)
    cfg = load_config(overrides=[o for o in TINY if "=" in o] + ["training.steps=30", "training.checkpoint_every=5", "training.check_model=false"])
    ds = ToroidDataset(cfg.data); ds._data[:] = float("nan")
    return classify_api(lambda: train(cfg, run, resume=True, progress=False, dataset=ds), "non-finite loss or gradient at step 21; no update applied from that step on; last good checkpoint")


@case("training", "latent folder missing", "data.latents_dir=/no/latents")
def _(env): return classify_cli(*[train_cli(["--config", SMALL_UNET, "--out", env.out("x"), "data.latents_dir=/no/latents"])[i] for i in (0, 2)], "/no/latents")

@case("training", "latent folder without latents", "data.latents_dir=<folder with a .txt only>")
def _(env): return classify_cli(*[train_cli(["--config", SMALL_UNET, "--out", env.out("x"), f"data.latents_dir={env.nolat}"])[i] for i in (0, 2)], str(env.nolat))

@case("training", "latents not divisible by 8", "4 x 20 x 16 x 16 latents with the UNet")
def _(env): return classify_cli(*[train_cli(["--config", SMALL_UNET, "--out", env.out("x"), f"data.latents_dir={env.lat20}"])[i] for i in (0, 2)], "divisible by 8")

@case("training", "latents of mixed shapes", "a folder with 4x8^3 and 4x16x8x8 files")
def _(env): return classify_cli(*[train_cli(["--config", SMALL_UNET, "--out", env.out("x"), f"data.latents_dir={env.mixed}"])[i] for i in (0, 2)], "z_00000.pt")

@case("training", "corrupt latent file", "one .pt file overwritten with garbage")
def _(env): return classify_cli(*[train_cli(["--config", SMALL_UNET, "--out", env.out("x"), f"data.latents_dir={env.corrupt}"])[i] for i in (0, 2)], "latent_00001.pt")


@case("training", "latent file corrupted mid-run, 2 processes", "neuromf-train --nproc-per-node 2; garble one latent after the first checkpoint")
def _(env):
    lat = env.tmp / "lat_mid"; shutil.copytree(env.lat8, lat)
    run = env.tmp / "ddp_bad"
    p = _popen_train(["--config", SMALL_UNET, "--out", str(run), f"data.latents_dir={lat}", "training.steps=400", "training.warmup_steps=1",
                      "training.checkpoint_every=2", "training.batch_size=1", "training.threads=1", "training.check_model=false",
                      "--nproc-per-node=2", "--no-progress"])
    _wait_ckpt(run, p)
    bad = sorted(lat.glob("*.pt"))[3]; bad.write_bytes(b"garbage")
    t0 = time.time(); out, err = p.communicate(timeout=180)
    if time.time() - t0 > 120: return "unclear", "ranks did not stop together"
    lines = [l for l in err.splitlines() if "error:" in l]
    named = [l for l in lines if bad.name in l]
    if p.returncode == 0: return "silent", "exit 0"
    return ("clear" if named else "unclear"), (named or lines or ["?"])[0][-200:]


@case("training", "rflow preset on a CPU", "model.unet.preset=rflow, training.device=cpu")
def _(env):
    import torch
    from neuromf.config import load_config
    from neuromf.train import build_model, _warn_if_large
    cfg = load_config(SMALL_UNET, ["model.unet.preset=rflow", "data.latent_shape=[4,16,16,16]"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always"); _warn_if_large(build_model(cfg), torch.device("cpu"))
    msg = next((str(x.message) for x in w if "GiB" in str(x.message)), "")
    return ("warned" if msg else "silent"), msg


@case("training", "volumetric torus, default evaluation", "data.mode=volumetric (4x32^3) with eval.n_samples=10000: memory needed")
def _(env):
    from neuromf.config import load_config
    from neuromf.evaluate import check_eval_memory
    need = check_eval_memory(load_config(overrides=["data.mode=volumetric"]), 2)
    return ("handled", f"evaluated in blocks: ~{need / 2**30:.2f} GiB held (was 5.2 GB of noise)") if need < 2**30 else ("lost", f"{need / 2**30:.1f} GiB")


@case("training", "evaluation larger than memory", "data.ambient_dim=1024, eval.n_samples=10^7")
def _(env):
    from neuromf.config import load_config
    from neuromf.evaluate import check_eval_memory
    return classify_api(lambda: check_eval_memory(load_config(overrides=["data.ambient_dim=1024", "eval.n_samples=10000000"]), 2), "lower eval.n_samples")


# ------------------------------------------------------------------------------------------------ the library's API
class _CatModel:
    "A user model written for training: concatenates z with (B,) time columns."
    def __init__(self):
        import torch
        self.lin = torch.nn.Linear(6, 4)
    def __call__(self, z, r, t):
        import torch
        return self.lin(torch.cat([z, t[:, None], r[:, None]], 1))

def _sampler_case(name, call):
    @case("API", f"{name} on a user model with (B,) times", f"{name}(model using t[:, None], noise)")
    def _(env):
        import torch
        with torch.no_grad(): x = call(_CatModel(), torch.randn(6, 4))
        return ("handled", f"works: samples {tuple(x.shape)}") if x.shape == (6, 4) else ("unclear", str(x.shape))

for _n in ("sample_one_step", "sample_multi_step", "sample_euler"):
    _sampler_case(_n, lambda m, e, n=_n: getattr(__import__("neuromf.sampling", fromlist=[n]), n)(m, e, *(() if n == "sample_one_step" else (2,))))

def _api_case(name, how, fn, needle):
    case("API", name, how)(lambda env: classify_api(fn, needle))

def _nan_noise():
    import torch
    e = torch.randn(6, 4); e[1, 2] = float("nan"); return e
_api_case("sampling from NaN noise", "sample_one_step(MeanFlowMLP(), noise with a NaN)",
          lambda: __import__("neuromf").sample_one_step(__import__("neuromf").MeanFlowMLP(), _nan_noise()), "non-finite")
_api_case("sampler batch_size 0", "sample_one_step(model, e, batch_size=0)",
          lambda: __import__("neuromf").sample_one_step(__import__("neuromf").MeanFlowMLP(), __import__("torch").randn(6, 4), batch_size=0), "batch_size=0")
_api_case("model output of the wrong shape at sampling", "sample_one_step(lambda z, r, t: z.sum(1, keepdim=True), e)",
          lambda: __import__("neuromf").sample_one_step(lambda z, r, t: z.sum(1, keepdim=True), __import__("torch").randn(6, 4)), "must be z's shape")

def _lp(w):
    import torch
    from neuromf.losses.lp import lp_loss
    return lambda: lp_loss(torch.randn(2, 4, 3), torch.randn(2, 4, 3), 2.0, channel_weights=w)
_api_case("negative channel weight (API)", "lp_loss(..., channel_weights=[1, -1, 1, 1])", _lp([1, -1, 1, 1]), "bad at channel(s) [1]")
_api_case("NaN channel weight (API)", "lp_loss(..., channel_weights=[1, nan, 1, 1])", _lp([1, float("nan"), 1, 1]), "bad at channel(s) [1]")
_api_case("all-zero channel weights", "lp_loss(..., channel_weights=[0, 0, 0, 0])", _lp([0, 0, 0, 0]), "all zero")
_api_case("channel weights as a string", "lp_loss(..., channel_weights='1,1,1,1')", _lp("1,1,1,1"), "channel_weights='1,1,1,1'")

def _pts(n):
    import torch
    from neuromf.data.toroid import torus_point
    return torus_point(torch.rand(n, 2, dtype=torch.float64) * 6.28 - 3.14)
_api_case("uniformity verdict on one sample", "torus_metrics(one point)", lambda: __import__("neuromf").torus_metrics(_pts(1)), "needs n >= 100")
_api_case("joint test on 5 samples", "joint_uniformity(5 angle pairs)",
          lambda: __import__("neuromf.metrics.torus", fromlist=["x"]).joint_uniformity(__import__("torch").rand(5, 2)), "needs n >= ")
_api_case("NaN angle in the KS test", "ks_uniform_angles(angles with a NaN)",
          lambda: __import__("neuromf.metrics.torus", fromlist=["x"]).ks_uniform_angles(__import__("torch").tensor([0.1] * 150 + [float("nan")])), "non-finite")
_api_case("angular KS dashboard on 50 samples", "AngularKSDashboard.from_samples(50 points)",
          lambda: __import__("neuromf.dashboards", fromlist=["x"]).AngularKSDashboard.from_samples(_pts(50)), "needs n >= 100")

class _NoR:
    def __init__(self):
        import torch; self.net = __import__("neuromf").MeanFlowMLP(hidden_dim=16, n_hidden=1)
    def __call__(self, z, r, t): return self.net(z, t, t)
_api_case("check_model: a model that ignores r", "neuromf.check_model(model ignoring r, batch)",
          lambda: __import__("neuromf").check_model(_NoR(), __import__("torch").randn(4, 4)), "does not depend on r")
_api_case("check_model: output of the wrong shape", "neuromf.check_model(lambda z, r, t: z[:, :3], batch)",
          lambda: __import__("neuromf").check_model(lambda z, r, t: z[:, :3] * t[:, None], __import__("torch").randn(4, 4)), "must be z's shape")
_api_case("check_model: float-only times", "check_model(model calling float(t))",
          lambda: __import__("neuromf").check_model(lambda z, r, t: z * float(t) + float(r), __import__("torch").randn(4, 4)), "(B,) tensors")


# ------------------------------------------------------------------------------------------------------- benchmark
def bench_cli(argv): from neuromf.bench import main; return run_main(main, argv)

def _bench_case(name, how, argv_fn, needle):
    case("benchmark", name, how)(lambda env: classify_cli(*[bench_cli(argv_fn(env))[i] for i in (0, 2)], needle))

_bench_case("--only that matches nothing", "neuromf-bench --suite tiny --only typo", lambda e: ["--suite", "tiny", "--only", "typo", "--no-memory", "--out", e.out("b.json")], "matches no benchmark")
_bench_case("--rounds 0", "neuromf-bench --rounds 0", lambda e: ["--suite", "tiny", "--rounds", "0", "--no-memory", "--out", e.out("b.json")], "--rounds=0")
_bench_case("--rounds -3", "neuromf-bench --rounds -3", lambda e: ["--suite", "tiny", "--rounds", "-3", "--no-memory", "--out", e.out("b.json")], "--rounds=-3")
_bench_case("--warmup -1", "neuromf-bench --warmup -1", lambda e: ["--suite", "tiny", "--warmup", "-1", "--no-memory", "--out", e.out("b.json")], "--warmup=-1")
_bench_case("--threads 0", "neuromf-bench --threads 0", lambda e: ["--suite", "tiny", "--threads", "0", "--no-memory", "--out", e.out("b.json")], "--threads=0")
_bench_case("--out is a folder", "neuromf-bench --out <folder>", lambda e: ["--suite", "tiny", "--no-memory", "--out", str(e.tmp)], "is a directory")
_bench_case("--rounds abc", "neuromf-bench --rounds abc", lambda e: ["--rounds", "abc"], "invalid int value")


@case("benchmark", "existing results file", "neuromf-bench ... --out <existing results>")
def _(env):
    f = env.tmp / "old.json"; f.write_text('{"old": true}')
    res = classify_cli(*[bench_cli(["--suite", "tiny", "--no-memory", "--out", str(f)])[i] for i in (0, 2)], "already exists")
    return res if f.read_text() == '{"old": true}' else ("lost", "results file replaced")


# ------------------------------------------------------------------------------------------------------------- MRI
AE_CONFIG = dict(num_channels=[8, 16, 32], num_res_blocks=[1, 1, 1], norm_num_groups=8)   # scripts/mri_example.py's: 4 latent channels, 4x smaller
ENC = ["--spacing", "3", "3", "3", "--image-size", "32", "32", "32", "--threads", "1", "--no-progress"]


def encode_cli(argv): from neuromf.mri.encode import main; return run_main(main, [str(a) for a in argv])
def sample_cli(argv): from neuromf.mri.sample import main; return run_main(main, [str(a) for a in argv])


def _mri_fixtures(root: Path):
    "A tiny autoencoder in a file (and its config), 3 phantoms of 32^3, their latents (neuromf-encode) and a 2-step run on them."
    import json, torch
    from types import SimpleNamespace
    from neuromf.mri.autoencoder import autoencoder_config, build_autoencoder, save_autoencoder
    from neuromf.mri.encode import write_phantoms
    m = SimpleNamespace(root=root, ae=root / "ae.pt", ae_cfg=root / "ae.json", scans=root / "scans", latents=root / "latents", run=root / "run")
    root.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = autoencoder_config(**AE_CONFIG)
        save_autoencoder(build_autoencoder(cfg), m.ae); m.ae_cfg.write_text(json.dumps(cfg))
        write_phantoms(m.scans, 3, (32, 32, 32), (3.0, 3.0, 3.0))
        code, _, err = encode_cli(["--images", m.scans, "--out", m.latents, "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg, *ENC])
        if code != 0: raise RuntimeError(f"MRI fixture: neuromf-encode failed: {err.strip()[-300:]}")
        code, _, err = train_cli(["--config", SMALL_UNET, "--out", str(m.run), f"data.latents_dir={m.latents}", "data.normalize=true",
                                  "training.steps=2", "training.batch_size=2", "training.warmup_steps=1", "training.checkpoint_every=1",
                                  "training.threads=1", "--no-progress", "--no-figures"])
        if code != 0: raise RuntimeError(f"MRI fixture: neuromf-train on the latents failed: {err.strip()[-300:]}")
    return m


def _other_autoencoder(m, name, **changes):
    "An autoencoder file `name.pt` (and `name.json`) of AE_CONFIG with `changes`, random weights."
    import json, torch
    from neuromf.mri.autoencoder import autoencoder_config, build_autoencoder, save_autoencoder
    cfg = autoencoder_config(**{**AE_CONFIG, **changes})
    with torch.random.fork_rng():
        torch.manual_seed(1)
        save_autoencoder(build_autoencoder(cfg), m.root / f"{name}.pt")
    (m.root / f"{name}.json").write_text(json.dumps(cfg))
    return m.root / f"{name}.pt", m.root / f"{name}.json"


def _ae_args(files): return ["--autoencoder", files[0], "--autoencoder-config", files[1]]


def _mri_case(name, how, cli, argv_fn, needle):
    "A neuromf-encode / neuromf-sample case: `argv_fn(env, m)` the arguments, `needle` (or `needle(env, m)`) what the one line must name."
    @case("MRI", name, how)
    def _(env):
        m = env.mri()
        code, _, err = cli(argv_fn(env, m))
        return classify_cli(code, err, needle(env, m) if callable(needle) else needle)

_mri_case("encode: autoencoder weights file missing", "neuromf-encode --autoencoder /no/ae.pt", encode_cli,
          lambda e, m: ["--images", m.scans, "--out", e.out("enc_noweights"), "--autoencoder", "/no/ae.pt", *ENC], "/no/ae.pt")
_mri_case("encode: weights of another architecture", "neuromf-encode --autoencoder <small AE's weights>, no --autoencoder-config (MAISI's architecture)",
          encode_cli, lambda e, m: ["--images", m.scans, "--out", e.out("enc_otherarch"), "--autoencoder", m.ae, *ENC],
          "shape mismatch(es) (encoder.blocks.0.conv.conv.weight")
_mri_case("encode: config with more res blocks than the weights", "neuromf-encode --autoencoder-config <num_res_blocks [2, 2, 2]>", encode_cli,
          lambda e, m: ["--images", m.scans, "--out", e.out("enc_moreblocks"), "--autoencoder", m.ae, "--autoencoder-config",
                        _other_autoencoder(m, "ae_2blocks", num_res_blocks=[2, 2, 2])[1], *ENC], "missing key(s) (encoder.blocks.2.")
_mri_case("encode: folder without images", "neuromf-encode --images <folder with a .txt only>", encode_cli,
          lambda e, m: ["--images", e.nolat, "--out", e.out("enc_noimg"), "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg, *ENC],
          lambda e, m: f"no NIfTI images (.nii.gz, .nii) in {e.nolat}")
_mri_case("encode: images folder missing", "neuromf-encode --images /no/scans", encode_cli,
          lambda e, m: ["--images", "/no/scans", "--out", e.out("enc_noimg"), "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg, *ENC],
          "/no/scans")
_mri_case("encode: --image-size not a multiple of 32", "neuromf-encode --image-size 40 32 32", encode_cli,
          lambda e, m: ["--images", m.scans, "--out", e.out("enc_size"), "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg,
                        *ENC, "--image-size", "40", "32", "32"], "image_size=(40, 32, 32)")
_mri_case("encode: resume with other settings", "neuromf-encode into the fixture's latent folder with --spacing 2 2 2", encode_cli,
          lambda e, m: ["--images", m.scans, "--out", m.latents, "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg,
                        *ENC, "--spacing", "2", "2", "2"], "spacing: [3.0, 3.0, 3.0] -> [2.0, 2.0, 2.0]")


@case("MRI", "encode: volume too small for the autoencoder", "neuromf-encode on a 16 x 24 x 24 scan at 1 mm (--spacing 1 1 1)")
def _(env):
    from neuromf.mri.encode import brain_phantom, centred_affine, write_nifti
    m = env.mri(); d = env.tmp / "small_scans"
    write_nifti(brain_phantom((16, 24, 24)), centred_affine((16, 24, 24)), d / "thin.nii.gz")
    code, _, err = encode_cli(["--images", d, "--out", env.out("enc_small"), "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg,
                               *ENC, "--spacing", "1", "1", "1"])
    return classify_cli(code, err, "thin.nii.gz is too small for the autoencoder: (16, 24, 24) voxels")


@case("MRI", "encode: corrupt NIfTI among good scans", "neuromf-encode on 3 phantoms and one .nii.gz of garbage")
def _(env):
    m = env.mri(); d = env.tmp / "corrupt_scans"; shutil.copytree(m.scans, d)
    (d / "phantom_001b.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not a NIfTI file")
    out = env.tmp / "enc_corrupt"
    code, stdout, err = encode_cli(["--images", d, "--out", out, "--autoencoder", m.ae, "--autoencoder-config", m.ae_cfg, *ENC])
    if code is None or "Traceback" in err: return classify_cli(code, err, "")
    if code == 0: return "silent", "exit 0"
    skipped = next((l for l in err.splitlines() if "phantom_001b.nii.gz" in l), "")
    if sorted(p.name for p in out.glob("*.pt")) != [f"phantom_00{i}.pt" for i in range(3)]: return "lost", "the good scans were not all encoded"
    summary = (stdout.strip().splitlines() or [""])[-1]
    return ("handled", f"{skipped} / {summary}") if skipped and "1 failed: phantom_001b" in summary else ("unclear", err.strip()[-200:])


_mri_case("sample: folder that is not a run", "neuromf-sample --run <a latent folder>", sample_cli,
          lambda e, m: ["--run", m.latents, "--out", e.out("smp_norun"), "--no-progress"], lambda e, m: f"not a NeuroMF run folder (no config.yaml): {m.latents}")
_mri_case("sample: a run not trained on latents", "neuromf-sample --run <a torus run>", sample_cli,
          lambda e, m: ["--run", e.run, "--out", e.out("smp_torus"), "--no-progress"], "no latent_stats.json")
_mri_case("sample: --steps 0", "neuromf-sample --steps 0", sample_cli,
          lambda e, m: ["--run", m.run, "--out", e.out("smp_steps0"), "--steps", "0", "--no-progress"], "steps=0")
_mri_case("sample: --n 0", "neuromf-sample --n 0", sample_cli,
          lambda e, m: ["--run", m.run, "--out", e.out("smp_n0"), "--n", "0", "--no-progress"], "n=0")
_mri_case("sample: autoencoder with other latent channels", "neuromf-sample --autoencoder <AE with 3 latent channels> --autoencoder-config <its config>",
          sample_cli, lambda e, m: ["--run", m.run, "--out", e.out("smp_ch3"), "--n", "1", "--no-progress",
                                    *_ae_args(_other_autoencoder(m, "ae_3ch", latent_channels=3))],
          "the autoencoder has 3 latent channels but the run's latents have 4")
_mri_case("sample: autoencoder weights of another architecture", "neuromf-sample --autoencoder <[8, 8, 8] AE's weights> (architecture recorded by neuromf-encode)",
          sample_cli, lambda e, m: ["--run", m.run, "--out", e.out("smp_arch"), "--n", "1", "--no-progress", "--autoencoder",
                                    _other_autoencoder(m, "ae_888", num_channels=[8, 8, 8], norm_num_groups=4)[0]],
          "encoder.blocks.3.conv1.conv.conv.weight (8, 8, 3, 3, 3) in the file vs (16, 8, 3, 3, 3) in the network")


@case("MRI", "sample: autoencoder that did not encode the latents", "neuromf-sample --autoencoder <same architecture, other weights>")
def _(env):
    m = env.mri()
    code, out, err = sample_cli(["--run", m.run, "--out", env.out("smp_other"), "--n", "1", "--no-progress", *_ae_args(_other_autoencoder(m, "ae_other"))])
    if code != 0: return classify_cli(code, err, "")
    line = (out.strip().splitlines() or [""])[-1]
    head, _, warn = line.partition("; WARNING: ")
    return ("warned", f"WARNING: {warn} ({head})") if warn.startswith("this autoencoder is not the one that encoded the training latents") else ("silent", line)


# ----------------------------------------------------------------------------------------------------------- sweep
def sweep_cli(argv): from neuromf.sweep import main; return run_main(main, [str(a) for a in argv])

SWEEP = ["--steps", "20", "--eval-samples", "200", "--probe-steps", "10", "--no-progress", "--no-figures", "training.warmup_steps=2"]

def _sweep_case(name, how, argv_fn, needle):
    @case("sweep", name, how)
    def _(env):
        out = env.tmp / ("sweep_" + "".join(c if c.isalnum() else "_" for c in name))
        code, _, err = sweep_cli(["--out", out, *SWEEP, *argv_fn(env)])
        res = classify_cli(code, err, needle(env) if callable(needle) else needle)
        return ("unclear", f"{res[1]} (and created {out})") if res[0] == "clear" and out.exists() else res

_sweep_case("--dims with D < 4", "neuromf-sweep --dims 4,2", lambda e: ["--dims", "4,2"], "--dims: 2 is not an integer >= 4")
_sweep_case("unknown prediction type", "neuromf-sweep --pred u,v", lambda e: ["--dims", "4", "--pred", "u,v"], "unknown prediction type 'v'")
_sweep_case("unknown loss", "neuromf-sweep --loss mf,fm", lambda e: ["--dims", "4", "--loss", "mf,fm"], "unknown loss 'fm'")


@case("sweep", "--out is a file", "neuromf-sweep --out <file>")
def _(env):
    f = env.tmp / "sweep_afile"; f.write_text("x")
    code, _, err = sweep_cli(["--out", f, *SWEEP, "--dims", "4", "--pred", "u", "--loss", "mf"])
    res = classify_cli(code, err, f"{f} is a file")
    return res if f.read_text() == "x" else ("lost", "the file was overwritten")


# --------------------------------------------------------------------------------------- oracle and volume metrics
def _oracle(z, r, t):
    from neuromf.oracle import exact_mean_velocity
    return lambda: exact_mean_velocity(z, r, t)

def _z(*shape):
    import torch
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))

_api_case("exact mean velocity with r > t", "oracle.exact_mean_velocity(z, r=0.8, t=0.5)", lambda: _oracle(_z(5, 4), 0.8, 0.5)(), "r=0.8, t=0.5")
_api_case("exact mean velocity at t = 0", "oracle.exact_mean_velocity(z, r=0, t=0)", lambda: _oracle(_z(5, 4), 0.0, 0.0)(), "t=0")
_api_case("exact mean velocity, z of the wrong shape", "oracle.exact_mean_velocity(z of shape (5, 3), 0, 0.5)",
          lambda: _oracle(_z(5, 3), 0.0, 0.5)(), "got (5, 3)")
_api_case("exact mean velocity, r of the wrong length", "oracle.exact_mean_velocity(z (5, 4), r of shape (3,), 0.5)",
          lambda: _oracle(_z(5, 4), _z(3).abs() * 0.1, 0.5)(), "got (3,)")

_api_case("FID without a feature network file", "metrics.volumes.load_feature_net(None)",
          lambda: __import__("neuromf.metrics.volumes", fromlist=["x"]).load_feature_net(None), "none was given and nothing can be downloaded")
_api_case("FID with a missing feature network file", "volume_metrics(real_volumes, generated_volumes, feature_net='/no/resnet.pth')",
          lambda: __import__("neuromf.metrics.volumes", fromlist=["x"]).volume_metrics(real_volumes=_z(3, 16, 16, 16).abs(), generated_volumes=_z(3, 16, 16, 16).abs(),
                                                                                       feature_net="/no/resnet.pth"), "/no/resnet.pth")
_api_case("FID on features of different sizes", "metrics.volumes.fid(features (5, 8), features (5, 7))",
          lambda: __import__("neuromf.metrics.volumes", fromlist=["x"]).fid(_z(5, 8), _z(5, 7)), "(5, 7)")
_api_case("latent MMD on latents of different shapes", "metrics.volumes.latent_mmd(4 x 8^3 latents, 4 x 8 x 8 x 4 latents)",
          lambda: __import__("neuromf.metrics.volumes", fromlist=["x"]).latent_mmd(_z(4, 4, 8, 8, 8), _z(4, 4, 8, 8, 4)), "(4, 8, 8, 4)")


@case("API", "volume metrics without a feature network", "volume_metrics(real_volumes, generated_volumes) (no feature_net)")
def _(env):
    from neuromf.metrics.volumes import volume_metrics
    r = volume_metrics(real_volumes=_z(3, 16, 16, 16).abs(), generated_volumes=_z(3, 16, 16, 16).abs())
    if "fid" in r: return "unclear", f"FID computed without a feature network: {r['fid']}"
    note = r.get("fid_note", "")
    return ("handled", f"no FID; fid_note: {note}") if "feature_net=PATH" in note else ("silent", "no FID and no note why")



def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=None, help="run the cases whose name (or area: MRI, sweep, API, ...) contains this")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch; torch.set_num_threads(1)
    cases = [c for c in CASES if a.only is None or a.only in c[1] or a.only == c[0]]
    if not cases: raise SystemExit(f"robustness: no case name or area contains {a.only!r}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        env = Env(Path(d))
        for area, name, how, fn in cases:
            t0 = time.time()
            try: outcome, msg = fn(env)
            except Exception as e: outcome, msg = "traceback", f"{type(e).__name__}: {e}"
            rows.append({"area": area, "case": name, "how": how, "outcome": outcome, "message": msg, "seconds": round(time.time() - t0, 1)})
            print(f"{outcome:9s} {area:12s} {name}: {msg[:150]}", flush=True)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("clear", "warned", "handled", "traceback", "silent", "unclear", "lost", "not run")}
    print("\n" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + f" ({len(rows)} cases)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"counts": counts, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
