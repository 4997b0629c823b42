"""Headless tests of the dashboards (no browser): every control changed programmatically, the figures updated in place
(same figure and trace objects, one batched message per figure), and what they show equal to neuromf.metrics.torus on
samples recomputed here independently (run checkpoint + seeded noise + the samplers)."""
import math, shutil, subprocess, sys
import numpy as np
import pytest
import torch
from plotly.basedatatypes import Undefined
from neuromf.checkpoint import load_checkpoint, save_checkpoint
from neuromf.dashboards import AngularKSDashboard, TorusFidelityDashboard
from neuromf.dashboards.common import RunSampler, TensorSamples, fmt, make_demo_run, update_in_place
from neuromf.dashboards.angular_ks import P_FLOOR
from neuromf.data.toroid import ToroidConfig, ToroidDataset, torus_angles
from neuromf.metrics.torus import pair_norms, torus_distance, torus_metrics
from neuromf.sampling import sample_multi_step, sample_one_step
from neuromf.train import load_run

CONTROL_CHANGES = [("n_steps", 5), ("weights", "raw"), ("checkpoint", "first"), ("n", 1000), ("n_steps", 10), ("weights", "ema")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("dash") / "run"
    make_demo_run(path, steps=200, n_checkpoints=4)
    return path


def expected_draw(run_dir, step, weights, n_steps, n):
    "Samples and metrics recomputed without the dashboard code: checkpoint, seeded noise, sampler, torus_metrics."
    run = load_run(run_dir)
    raw, ema = run.load_models(step)
    model = ema if weights == "ema" else raw
    noise = torch.randn((n, 4), generator=torch.Generator().manual_seed(run.config.eval.seed))
    x = sample_one_step(model, noise) if n_steps == 1 else sample_multi_step(model, noise, n_steps)
    return x.double(), torus_metrics(x.double(), noise.double())


def count_messages(figures):
    "Patch each FigureWidget's senders to count the messages it sends to the front-end."
    counts = {name: {} for name in figures}
    for name, fig in figures.items():
        for kind in ("update", "restyle", "relayout", "addTraces", "deleteTraces", "moveTraces"):
            attr = f"_send_{kind}_msg"
            orig = getattr(fig, attr)
            def wrapped(*a, _orig=orig, _name=name, _kind=kind, **k):
                counts[_name][_kind] = counts[_name].get(_kind, 0) + 1
                # an `undefined` in a batched restyle resets that property in the browser (see update_in_place)
                for prop, vals in (k.get("restyle_data") or {}).items():
                    assert not any(v is Undefined for v in vals), f"{_name}: {prop} sent as undefined for some traces"
                    assert all(v.flags.c_contiguous for v in vals if isinstance(v, np.ndarray)), f"{_name}: {prop} not contiguous"
                return _orig(*a, **k)
            setattr(fig, attr, wrapped)
    return counts


def change_controls(dash, run_dir, check):
    "Change every control in turn; after each, check in-place updates and call `check(dash)`."
    figs = dict(dash.figures)
    traces = {k: list(f.data) for k, f in figs.items()}
    counts = count_messages(figs)
    steps = load_run(run_dir).steps
    for name, value in CONTROL_CHANGES:
        value = steps[0] if value == "first" else value
        before = {k: repr([t.to_plotly_json() for t in f.data]) + repr(f.layout.to_plotly_json()) for k, f in figs.items()}
        for c in counts.values(): c.clear()
        assert dash.controls.widgets[name].value != value
        dash.controls.widgets[name].value = value
        for k, f in figs.items():
            assert dash.figures[k] is f, f"{name}: figure {k} replaced"
            assert all(a is b for a, b in zip(f.data, traces[k], strict=True)), f"{name}: traces of {k} replaced"
            assert counts[k] == {"update": 1}, f"{name}: figure {k} sent {counts[k]} (expected one batched update)"
            assert repr([t.to_plotly_json() for t in f.data]) + repr(f.layout.to_plotly_json()) != before[k], f"{name}: {k} unchanged"
        v = dash.controls.values
        x, m = expected_draw(run_dir, v["step"], v["weights"], v["n_steps"], v["n"])
        assert dash.metrics == pytest.approx(m, rel=1e-6, abs=1e-9)
        assert f"step {v['step']}" in dash.status.value
        check(dash, x)


def test_fidelity_dashboard_controls(run_dir):
    dash = TorusFidelityDashboard.from_run(run_dir, n_samples=500)
    assert dash.controls.values == {"step": 200, "weights": "ema", "n_steps": 1, "n": 500}

    def check(d, x):
        m, f = d.metrics, d.figures
        dist = torus_distance(x).numpy()
        np.testing.assert_allclose(f["distances"].data[0].x, dist, atol=1e-6)
        np.testing.assert_allclose(f["torus"].data[1].marker.color, dist, atol=1e-6)
        np.testing.assert_allclose(np.stack([f["pair_norms"].data[0].x, f["pair_norms"].data[0].y], 1), pair_norms(x).numpy(), atol=1e-6)
        ang = torus_angles(x)
        xyz = np.stack([f["torus"].data[1].x, f["torus"].data[1].y, f["torus"].data[1].z], 1)
        np.testing.assert_allclose(np.arctan2(xyz[:, 1], xyz[:, 0]), ang[:, 0].numpy(), atol=1e-5)
        assert list(f["distances"].data[3].x) == [m["distance_mean"]] * 2
        assert fmt(m["distance_mean"]) in f["distances"].layout.title.text
        for key in ("distance_mean", "distance_p90", "coupling_error_mean", "angle_error_theta1_mean"):
            assert fmt(m[key]) in d.table.value
        assert f["torus"].data[1].marker.cmax == max(0.2, m["distance_p90"])

    check(dash, expected_draw(run_dir, 200, "ema", 1, 500)[0])
    change_controls(dash, run_dir, check)


def test_angular_ks_dashboard_controls(run_dir):
    dash = AngularKSDashboard.from_run(run_dir, n_samples=500)
    steps = load_run(run_dir).steps

    def check(d, x):
        m, f = d.metrics, d.figures
        ang = torus_angles(x).numpy()
        for col, key in enumerate(("theta1", "theta2")):
            np.testing.assert_allclose(f["histograms"].data[2 * col].x, ang[:, col], atol=1e-6)
            ecdf = f["ecdf"].data[3 * col + 1]
            np.testing.assert_allclose(ecdf.x[1:-1], np.sort(ang[:, col]), atol=1e-6)
            gap = f["ecdf"].data[3 * col + 2]
            assert abs(gap.y[1] - gap.y[0]) == pytest.approx(m[f"ks_stat_{key}"], abs=1e-9)
            label = f"D = {fmt(m[f'ks_stat_{key}'])}, p = {fmt(m[f'ks_p_{key}'])}"
            assert label in f["ecdf"].layout.annotations[col].text and f["ecdf"].layout.annotations[col + 2].text == label
            assert f["ecdf"].layout.annotations[col + 2].x == gap.x[0]
            assert fmt(m[f"ks_p_{key}"]) in d.table.value
        np.testing.assert_allclose(f["joint"].data[0].x, ang[:, 0], atol=1e-6)
        assert f["joint"].data[0].zmid == m["ks_n"] / 64
        assert fmt(m["joint_chi2_p"]) in f["joint"].layout.title.text and fmt(m["joint_p"]) in f["joint"].layout.title.text
        v = d.controls.values
        assert list(f["training"].data[0].x) == steps and f["training"].layout.shapes[0].x0 == v["step"]
        for s in (steps[0], steps[-1]):  # the training panel shows each checkpoint's metrics at the current settings
            ms = expected_draw(run_dir, s, v["weights"], v["n_steps"], v["n"])[1]
            i = steps.index(s)
            for trace, key in zip(f["training"].data[:3], ("ks_p_theta1", "ks_p_theta2", "joint_p")):
                assert trace.customdata[i] == pytest.approx(ms[key], rel=1e-6, abs=1e-12)
                assert trace.y[i] == pytest.approx(max(ms[key], P_FLOOR), rel=1e-6)

    check(dash, expected_draw(run_dir, 200, "ema", 1, 500)[0])
    change_controls(dash, run_dir, check)


@pytest.mark.parametrize("cls", [TorusFidelityDashboard, AngularKSDashboard])
def test_dashboards_on_samples_in_memory(cls):
    ds = ToroidDataset(ToroidConfig(n_samples=800, ambient_dim=6))
    dash = cls.from_samples(ds.tensor(), noise=torch.randn(800, 6), embedding=ds.embedding)
    m = dash.metrics
    assert m["n_samples"] == 800 and m["distance_max"] < 1e-6 and "offspan_residual_mean" in m and "coupling_error_mean" in m
    assert m == torus_metrics(ds.embedding.project(ds.tensor().double()), dash.draw.noise, dash.draw.residual)
    for w in ("n_steps", "weights", "checkpoint"): assert dash.controls.widgets[w].layout.display == "none"
    figs = dict(dash.figures)
    dash.controls.n.value = 500
    assert dash.metrics["n_samples"] == 500 and all(dash.figures[k] is figs[k] for k in figs)
    vol = ToroidDataset(ToroidConfig(n_samples=100, mode="volumetric", spatial_size=4))
    vdash = cls.from_samples(vol.tensor(), embedding=vol.config)
    assert vdash.metrics["distance_max"] < 1e-5 and vdash.metrics["offspan_residual_mean"] < 1e-5
    few = vol.tensor()[:50]                         # too few for a uniformity verdict (neuromf.metrics.torus.MIN_UNIFORMITY_N)
    if cls is AngularKSDashboard:
        with pytest.raises(ValueError, match="n=50 sample.*needs n >= 100"): cls.from_samples(few, embedding=vol.config)
    else:
        small = cls.from_samples(few, embedding=vol.config).metrics
        assert small["n_samples"] == 50 and small["distance_max"] < 1e-5 and "ks_p_theta1" not in small
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_bad_inputs_name_the_bad_value(run_dir):
    with pytest.raises(ValueError, match=r"\(10, 6\)"): TorusFidelityDashboard.from_samples(torch.zeros(10, 6))
    with pytest.raises(ValueError, match="sample shape"): TorusFidelityDashboard.from_samples(torch.zeros(10, 6), embedding=ToroidConfig())
    with pytest.raises(TypeError, match="cannot show list"): AngularKSDashboard([1, 2])
    with pytest.raises(FileNotFoundError, match="no config.yaml"): TorusFidelityDashboard.from_run(run_dir / "missing")
    with pytest.raises(ValueError, match="step=7"): TorusFidelityDashboard.from_run(run_dir, step=7)
    with pytest.raises(ValueError, match="n_steps=3"): AngularKSDashboard.from_run(run_dir, n_steps=3)
    with pytest.raises(ValueError, match="weights='avg'"): AngularKSDashboard.from_run(run_dir, weights="avg")
    src = RunSampler(run_dir, max_samples=1000)
    with pytest.raises(ValueError, match="n=5000"): src.draw(n=5000)
    with pytest.raises(ValueError, match="n=3"): TensorSamples(torch.zeros(2, 4)).draw(n=3)
    fig = TorusFidelityDashboard.from_run(run_dir, n_samples=250).figures["distances"]
    with pytest.raises(ValueError, match="same properties"): update_in_place(fig, {0: {"x": [1]}, 3: {"x": [1, 1], "name": "m"}})


def test_diverged_checkpoint_shows_a_message_and_keeps_the_figures(run_dir, tmp_path):
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    run = load_run(bad)
    first = run.steps[0]
    state = load_checkpoint(run.checkpoints[first])
    for sd in (state["model"], state["ema"]["shadow"]):
        for k, v in sd.items():
            if torch.is_tensor(v) and v.is_floating_point(): v.fill_(float("nan"))
    save_checkpoint(state, bad, first)                  # a whole, verified checkpoint of a diverged model
    dash = TorusFidelityDashboard.from_run(bad, n_samples=250)
    shown = dash.metrics
    x_before = dash.figures["torus"].data[1].x
    dash.controls.checkpoint.value = first
    assert "non-finite" in dash.status.value and dash.metrics is shown and dash.figures["torus"].data[1].x is x_before


def test_same_settings_same_samples(run_dir):
    a = TorusFidelityDashboard.from_run(run_dir, n_samples=250, n_steps=2)
    b = AngularKSDashboard.from_run(run_dir, n_samples=250, n_steps=2)
    assert a.metrics == b.metrics
    assert TorusFidelityDashboard.from_run(run_dir, n_samples=250, seed=1).metrics != a.metrics


def test_lazy_top_level_exports():
    code = ("import sys, neuromf; assert 'plotly' not in sys.modules and 'ipywidgets' not in sys.modules; "
            "from neuromf.dashboards import TorusFidelityDashboard as T, AngularKSDashboard as A; "
            "assert neuromf.TorusFidelityDashboard is T and neuromf.AngularKSDashboard is A; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# --- mean-velocity error dashboard (neuromf.dashboards.velocity_error) -------------------------------------------------
VE_CHANGES = [("weights", "raw"), ("checkpoint", "first"), ("n", 250), ("weights", "ema")]


def expected_velocity_errors(run_dir, step, weights, n, n_times, noise_per_point=8):
    "Every number of the velocity-error dashboard, recomputed from the checkpoint, seeded points and the oracle's primitives."
    from neuromf.oracle import exact_mean_velocity, sample_path
    from neuromf.metrics.torus import exact_one_step_map
    run = load_run(run_dir)
    raw, ema = run.load_models(step)
    model = ema if weights == "ema" else raw
    seed = run.config.eval.seed
    _, x, e = sample_path(n, 0.0, None, torch.Generator().manual_seed(seed))
    times = [i / n_times for i in range(1, n_times + 1)]
    rel, ab = np.full((n_times + 1, n_times), np.nan), np.full((n_times + 1, n_times), np.nan)
    for i, t in enumerate(times):
        z = (1 - t) * x + t * e
        for j, r in enumerate([0.0, *times]):
            if r > t + 1e-12: continue
            u_star = exact_mean_velocity(z, r, t)
            with torch.no_grad(): u = model(z.float(), r, t).double()
            err = (u - u_star).norm(dim=1)
            rel[j, i], ab[j, i] = (err.mean() / u_star.norm(dim=1).mean()).item(), err.mean().item()
    noise = sample_path(noise_per_point * n, 1.0, None, torch.Generator().manual_seed(seed + 1))[0]
    with torch.no_grad(): u1 = model(noise.float(), 0.0, 1.0).double()
    per = (u1 - (noise - exact_one_step_map(noise))).norm(dim=1).numpy()
    ang = torus_angles(noise).numpy()
    prof = np.stack([[per[(ang[:, c] >= lo) & (ang[:, c] < lo + 2 * math.pi / 24)].mean() for lo in -math.pi + np.arange(24) * 2 * math.pi / 24]
                     for c in (0, 1)])
    return rel, ab, prof, per.mean()


def test_velocity_error_dashboard_controls(run_dir):
    from neuromf.dashboards import VelocityErrorDashboard
    dash = VelocityErrorDashboard.from_run(run_dir, n_points=500, n_times=5)
    assert dash.controls.values == {"step": 200, "weights": "ema", "n_steps": 1, "n": 500}
    assert dash.controls.n_steps.layout.display == "none"
    steps = load_run(run_dir).steps

    def check(d):
        v, f = d.controls.values, d.figures
        rel, ab, prof, mean1 = expected_velocity_errors(run_dir, v["step"], v["weights"], v["n"], 5)
        np.testing.assert_allclose(np.asarray(f["heatmap"].data[0].z, dtype=float), rel, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(f["heatmap"].data[0].customdata, dtype=float), ab, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f["cut"].data[0].y, rel[0], rtol=1e-6)
        np.testing.assert_allclose(f["cut"].data[1].y, [rel[i + 1, i] for i in range(5)], rtol=1e-6)
        np.testing.assert_allclose(np.stack([f["angles"].data[0].y, f["angles"].data[1].y]), prof, rtol=1e-6)
        assert d.metrics["one_step_error_mean"] == pytest.approx(mean1, rel=1e-6)
        assert d.metrics["mean_velocity_rel_error_mean"] == pytest.approx(np.mean([rel[j, i] for i in range(5) for j in range(i + 1)]), rel=1e-6)
        assert fmt(d.metrics["mean_velocity_rel_error_mean"]) in f["heatmap"].layout.title.text
        assert fmt(d.metrics["r0_rel_error_mean"]) in d.table.value and f"step {v['step']}" in d.status.value

    check(dash)
    figs = dict(dash.figures)
    traces = {k: list(f.data) for k, f in figs.items()}
    counts = count_messages(figs)
    for name, value in VE_CHANGES:
        value = steps[0] if value == "first" else value
        before = {k: repr([t.to_plotly_json() for t in f.data]) for k, f in figs.items()}
        for c in counts.values(): c.clear()
        assert dash.controls.widgets[name].value != value
        dash.controls.widgets[name].value = value
        for k, f in figs.items():
            assert dash.figures[k] is f and all(a is b for a, b in zip(f.data, traces[k], strict=True)), f"{name}: {k} replaced"
            assert counts[k] == {"update": 1}, f"{name}: figure {k} sent {counts[k]} (expected one batched update)"
            assert repr([t.to_plotly_json() for t in f.data]) != before[k], f"{name}: {k} unchanged"
        check(dash)


def test_velocity_error_dashboard_known_answers_and_bad_inputs(run_dir, tmp_path):
    from neuromf.dashboards import VelocityErrorDashboard
    from neuromf.oracle import ExactMeanFlow
    cfg = ToroidConfig(ambient_dim=7)
    exact = VelocityErrorDashboard.from_model(ExactMeanFlow(cfg), embedding=cfg, n_points=250, n_times=4)
    assert np.nanmax(np.asarray(exact.figures["heatmap"].data[0].z, dtype=float)) < 1e-5 and exact.metrics["one_step_error_mean"] < 1e-5
    for w in ("weights", "checkpoint"): assert exact.controls.widgets[w].layout.display == "none"
    with pytest.raises(ValueError, match="step=7"): VelocityErrorDashboard.from_run(run_dir, step=7)
    with pytest.raises(TypeError, match="RunSampler or ModelSource"): VelocityErrorDashboard(str(run_dir))
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    run = load_run(bad)
    state = load_checkpoint(run.checkpoints[run.steps[0]])
    for sd in (state["model"], state["ema"]["shadow"]):
        for v in sd.values():
            if torch.is_tensor(v) and v.is_floating_point(): v.fill_(float("nan"))
    save_checkpoint(state, bad, run.steps[0])            # a whole, verified checkpoint of a diverged model
    dash = VelocityErrorDashboard.from_run(bad, n_points=250, n_times=4)
    shown, z_before = dash.metrics, dash.figures["heatmap"].data[0].z
    dash.controls.checkpoint.value = run.steps[0]
    assert "non-finite" in dash.status.value and dash.metrics == shown and dash.figures["heatmap"].data[0].z is z_before
