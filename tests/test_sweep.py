"""The ambient-dimension sweep (issue 12): the table equals the metrics recomputed from the saved samples, an
interrupted sweep resumes without re-training finished cells, the embedding is exactly isometric, bad grid values
are one-line errors."""
import dataclasses, json, re, shutil, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
import pytest, torch
import neuromf.sweep as sw
from neuromf.config import load_config
from neuromf.data.toroid import ToroidConfig, ToroidDataset, TorusEmbedding, torus_point
from neuromf.evaluate import evaluation_noise
from neuromf.metrics.torus import torus_metrics, torus_distance, nearest_torus_point
from neuromf.sweep import SweepSpec, run_sweep, main, HEADLINE
from neuromf.train import list_checkpoints

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model.hidden_dim=32", "model.n_hidden=2", "training.batch_size=128", "training.warmup_steps=20",
         "training.threads=1", "data.n_samples=5000", "training.log_every=20"]


def tiny_args(steps=200):
    return ["--dims", "4,16", "--pred", "u,x", "--loss", "mf", "--steps", str(steps), "--eval-samples", "1000", "--no-progress"]


def tiny_spec(**kw):
    return SweepSpec(**{**dict(dims=(4, 16), preds=("u", "x"), losses=("mf",), steps=200, eval_samples=1000, overrides=tuple(SMALL)), **kw})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny sweep run through the command line: 2 dimensions x 2 variants, 200 steps each."""
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    assert main(["--out", str(out), *tiny_args(), *SMALL]) == 0
    return out, json.loads((out / "sweep.json").read_text())


def recompute(cell_dir: Path) -> dict:
    """Metrics of a cell's saved samples, recomputed from scratch with neuromf.metrics.torus after projecting back."""
    cfg = load_config(cell_dir / "config.yaml")
    emb, saved = TorusEmbedding(cfg.data), torch.load(cell_dir / "samples.pt")
    noise_points = saved["noise_points"]                        # the projected noise the samples came from
    assert torch.equal(noise_points, emb.project(evaluation_noise(cfg).double()))
    out = {}
    for k, x in saved["ema"].items():
        assert x.shape == (cfg.eval.n_samples, cfg.data.ambient_dim)
        x = x.double()
        res = emb.residual(x) if cfg.data.ambient_dim > 4 else None
        m = torus_metrics(emb.project(x), noise_points=noise_points, residual=res)
        m.setdefault("offspan_residual_mean", 0.0)
        r = res if res is not None else torch.zeros(len(x), dtype=torch.float64)
        m["ambient_distance_mean"] = (torus_distance(emb.project(x)) ** 2 + r ** 2).sqrt().mean().item()
        out[str(k)] = m
    return out


def md_rows(md: str, header_start: str) -> list[list[str]]:
    """Rows of every markdown table whose header starts with `header_start`."""
    lines, rows = md.splitlines(), []
    for i in (n for n, l in enumerate(lines) if l.startswith(header_start)):
        for l in lines[i + 2:]:
            if not l.startswith("|"): break
            rows.append([c.strip() for c in l.strip("|").split("|")])
    return rows


def test_tiny_sweep_table_equals_metrics_recomputed_from_samples(tiny):
    out, report = tiny
    names = sorted(c["cell"]["name"] for c in report["cells"])
    assert names == ["D0004_u_mf_s0", "D0004_x_mf_s0", "D0016_u_mf_s0", "D0016_x_mf_s0"]
    md = (out / "sweep.md").read_text()
    rows = md_rows(md, "| D | variant | seed |")
    assert len(rows) == 4 * 3 and all(len(r) == 15 for r in rows)          # 4 cells x (1, 2, 5) steps, 15 columns
    assert [r[7] for r in rows] == ["1"] * 4 + ["2"] * 4 + ["5"] * 4           # one table per step count
    for c in report["cells"]:
        d = out / "cells" / c["cell"]["name"]
        assert c["steps"] == 200 and list_checkpoints(d)[-1][0] == 200
        again = recompute(d)
        assert sorted(again) == ["1", "2", "5"]
        for k, m in again.items():
            for key in HEADLINE:
                assert c["metrics"][k][key] == m[key], (c["cell"]["name"], k, key)       # sweep.json: exactly equal
            row = next(r for r in rows if r[0] == str(c["cell"]["dim"]) and r[1] == c["cell"]["variant"] and r[7] == k)
            assert row[3] == "200"
            for col, key in zip(row[8:], HEADLINE):                                        # sweep.md: same numbers, printed
                assert col == sw._fmt(m[key])
                assert float(col) == pytest.approx(m[key], rel=1e-3, abs=1e-12)
    by = {c["cell"]["name"]: c["metrics"]["1"] for c in report["cells"]}
    assert by["D0004_u_mf_s0"]["offspan_residual_mean"] == 0.0
    assert by["D0016_u_mf_s0"]["offspan_residual_mean"] > 0.0
    assert all(0 < m["distance_mean"] < 1.5 for m in by.values())
    # the pivot: one row per D, one column per variant
    assert md_rows(md, "| D | u-pred, MF | x-pred, MF |")[0][0] == "4"
    # figures
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = sw.sweep_figure(report["cells"])
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert {t.name for t in fig.data} == {"u-pred, MF", "x-pred, MF"}
    assert "u-pred, MF" in (out / "sweep.html").read_text()


def test_interrupted_sweep_resumes_without_retraining(tiny, tmp_path, monkeypatch):
    """Stop after one cell, kill the next one mid-training, re-run: the finished cell is read back (never passed to
    train, files untouched), the killed one resumes from its checkpoint, and every number equals the uninterrupted
    sweep's."""
    out = tmp_path / "resumed"
    spec = tiny_spec()
    run_sweep(spec, out, progress=False, max_cells=1, figures=False)
    first = out / "cells" / "D0004_u_mf_s0"
    assert (first / "result.json").is_file() and not (out / "cells" / "D0004_x_mf_s0").exists()
    stamp = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.rglob("*") if p.is_file()}

    real_train, calls = sw.train, []
    def signalled(cfg, out_dir=None, **kw):               # what train() returns after SIGTERM at step 120
        return dataclasses.replace(real_train(cfg, out_dir, **{**kw, "stop_at": 120}), stopped="SIGTERM")
    monkeypatch.setattr(sw, "train", signalled)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM at step 120 of 200 in cell D0004_x_mf_s0"):
        run_sweep(spec, out, progress=False, figures=False)
    second = out / "cells" / "D0004_x_mf_s0"
    assert [s for s, _ in list_checkpoints(second)][-1] == 120 and not (second / "result.json").exists()

    def counting(cfg, out_dir=None, **kw):
        calls.append((Path(out_dir).name, kw.get("resume")))
        return real_train(cfg, out_dir, **kw)
    monkeypatch.setattr(sw, "train", counting)
    report = run_sweep(spec, out, progress=False, figures=False)
    assert calls == [("D0004_x_mf_s0", True), ("D0016_u_mf_s0", False), ("D0016_x_mf_s0", False)]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.rglob("*") if p.is_file()} == stamp
    got = {c["cell"]["name"]: c for c in report["cells"]}
    assert got["D0004_x_mf_s0"]["resumed_from_step"] == 120
    want = {c["cell"]["name"]: c["metrics"] for c in tiny[1]["cells"]}
    assert {n: c["metrics"] for n, c in got.items()} == want         # resume is exact: same numbers as one go
    log = json.loads((out / "calls.json").read_text())
    assert log[-1]["read_back"] == ["D0004_u_mf_s0"] and len(log[-1]["trained"]) == 3
    assert all(len(c["load_before"]) == 3 and len(c["load_after"]) == 3 for c in log)

    calls.clear()                                                       # a finished sweep: nothing trained again
    assert run_sweep(spec, out, progress=False, figures=False)["cells"] == report["cells"] and calls == []


def test_changed_settings_error_and_larger_grid_only_adds_cells(tiny, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny[0], out)
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("result.json")}
    assert main(["--out", str(out), *tiny_args(steps=300), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings" in err and "steps: 200 -> 300" in err
    assert main(["--out", str(out), *tiny_args(), *SMALL[:-1], "training.log_every=10"]) == 2      # a changed base config
    assert "base_config.training.log_every: 20 -> 10" in capsys.readouterr().err
    report = run_sweep(tiny_spec(dims=(4, 16, 8), preds=("u",)), out, progress=False, figures=False)           # adds D = 8, u only
    assert len(report["cells"]) == 5 and {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.parametrize("dim", [4, 16, 1024])
def test_embedding_is_exactly_isometric(dim):
    g = torch.Generator().manual_seed(dim)
    emb = TorusEmbedding(ToroidConfig(ambient_dim=dim))
    test_points = torus_point((torch.rand(300, 2, generator=g, dtype=torch.float64) * 2 - 1) * torch.pi)
    q = emb.embed(test_points)
    dist = lambda a: torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist")
    torch.testing.assert_close(dist(q), dist(test_points), atol=1e-12, rtol=0)          # distances on the torus kept
    torch.testing.assert_close(emb.project(q), test_points, atol=1e-14, rtol=0)         # projection inverts the embedding
    assert emb.residual(q).max() < 1e-6
    z4 = torch.randn(300, 4, generator=g, dtype=torch.float64) * 0.5                    # points off the torus, in R^4
    torch.testing.assert_close(torus_distance(emb.project(emb.embed(z4))), torus_distance(z4), atol=1e-13, rtol=0)
    zd = torch.randn(300, dim, generator=g, dtype=torch.float64)                        # any point of R^D: distance to the
    nearest = emb.embed(nearest_torus_point(emb.project(zd)))                           # embedded torus = torus distance
    torch.testing.assert_close((zd - nearest).norm(dim=1) ** 2,                         # of the projection (+) residual
                               torus_distance(emb.project(zd)) ** 2 + emb.residual(zd) ** 2, atol=1e-9, rtol=0)
    cfg = ToroidConfig(ambient_dim=dim, n_samples=2000, seed=1)                        # the sweep's lazy dataset = eager one
    idx = torch.randint(2000, (256,), generator=g)
    assert torch.equal(sw.sweep_dataset(cfg).batch(idx), ToroidDataset(cfg).batch(idx))


@pytest.mark.parametrize("args, needle", [
    (["--dims", "2,16"], "--dims: 2 is not an integer >= 4"),
    (["--dims", "4,0"], "--dims: 0 is not an integer >= 4"),
    (["--pred", "u,v"], "unknown prediction type 'v'"),
    (["--loss", "mf,fm"], "unknown loss 'fm'"),
    (["--dims", ""], "--dims is empty"),
    (["--pred", ","], "--pred is empty"),
    (["--budget-s", "0"], "--budget-s=0.0"),
    (["--budget-s", "-10"], "must be a number of seconds > 0"),
    (["--steps", "0"], "--steps=0"),
    (["--steps", "5"], "training.warmup_steps=500: is longer than the run"),
    (["--max-cells", "0"], "--max-cells=0"),
    (["data.ambient_dim=8"], "sets a key the sweep controls"),
    (["training.lr=abc"], "training.lr"),
])
def test_bad_input_is_one_clear_line(args, needle, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not out.exists()


def test_out_that_is_a_file_is_one_clear_line(tmp_path, capsys):
    f = tmp_path / "afile"; f.write_text("x")
    assert main(["--out", str(f), "--no-progress", "--dims", "4", "--pred", "u", "--loss", "mf", "--steps", "20", "training.warmup_steps=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {f} is a file, not a sweep folder" in err and "Traceback" not in err, err
    assert f.read_text() == "x"


def test_cli_process_one_line_and_usage_errors(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "neuromf.sweep", "--out", str(tmp_path / "x"), "--dims", "4,2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr == ("neuromf-sweep: error: --dims: 2 is not an integer >= 4 (D is the ambient dimension; "
                                              "the torus lives in R^4) (--debug shows the traceback)\n"), r.stderr
    for args, needle in ((["--dims", "4,abc"], "'abc' is not an integer"), (["--steps", "10", "--budget-s", "5"], "not allowed with argument"),
                         (["--bogus"], "unrecognized arguments: --bogus")):
        assert main(["--out", str(tmp_path / "x"), *args]) == 2                             # argparse's own errors: one line too
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "see neuromf-sweep --help" in err, err
    assert not (tmp_path / "x").exists()


def test_budget_becomes_steps_from_measured_speed(tmp_path, monkeypatch):
    spec = tiny_spec(dims=(4,), preds=("u",), steps=None, budget_s=1.5, probe_steps=20, eval_samples=500)
    report = run_sweep(spec, tmp_path / "b", progress=False, figures=False)
    r = report["cells"][0]
    speeds = json.loads((tmp_path / "b" / "speeds.json").read_text())
    assert r["probe_steps_per_s"] == speeds["D4_u_mf"] > 0
    assert (r["steps"], r["checkpoint_every"]) == sw.plan_steps(1.5, speeds["D4_u_mf"], spec.checkpoints_per_cell)
    assert r["budget_s"] == 1.5 and r["clock"] == "wall" and r["train_wall_s"] > 0 and r["train_cpu_s"] > 0 and r["train_steps_per_s"] > 0
    assert json.loads((tmp_path / "b" / "cells" / "D0004_u_mf_s0" / "plan.json").read_text())["steps"] == r["steps"]
    monkeypatch.setattr(sw, "measure_speed", lambda *a, **k: pytest.fail("probed again"))   # a new seed reuses the speed
    r2 = run_sweep(tiny_spec(dims=(4,), preds=("u",), steps=None, budget_s=1.5, probe_steps=20, eval_samples=500, seeds=(0, 1)),
                   tmp_path / "b", progress=False, figures=False)
    assert [c["steps"] for c in r2["cells"]] == [r["steps"]] * 2


def test_speed_probe_excludes_one_time_costs(monkeypatch):
    """A fake training step of 2 ms after a one-time 0.1 s start-up (like the first optimiser's lazy import of
    torch._dynamo): the probe must report ~500 steps/s, not an overestimate from a start-up in the short run."""
    import time
    state = {"first": True}
    def fake_train(cfg, out_dir=None, progress=True, dataset=None, **kw):
        if state["first"]: time.sleep(0.1); state["first"] = False
        time.sleep(cfg.training.steps * 0.002)
        return SimpleNamespace(stopped=None, step=cfg.training.steps)
    monkeypatch.setattr(sw, "train", fake_train)
    sps = sw.measure_speed(load_config(), None, probe_steps=100, warmup_steps=10)
    assert 400 < sps < 550, sps
