"""The dashboards in a real browser: JupyterLab served on 127.0.0.1, each dashboard notebook (a temporary copy, so
no widget state reaches the committed one) opened and run in headless Chromium (Debian's `chromium`, driven by
Playwright through `executable_path`; no browser download), the plotly figures rendered, then a slider moved and a
toggle clicked, and the same figures re-drawn with new data. Screenshots go to test-artifacts/; with
NEUROMF_UPDATE_SCREENSHOTS=1 the dashboards' screenshots are also copied to docs/img/ (for the README).

Without /usr/bin/chromium or the playwright package the tests are SKIPPED with the reason (never passed):
install both with `bash scripts/install_browser.sh`."""
import importlib.util, json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("NEUROMF_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMG = ROOT / "docs" / "img"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
DASHBOARDS = [  # notebook, screenshot name, number of plotly figures, (toggle button to click, text the status shows after it)
    ("18_dashboards.fidelity.ipynb", "dashboard_fidelity", 3, ("5", "5 steps")),
    ("19_dashboards.angular_ks.ipynb", "dashboard_angular_ks", 4, ("5", "5 steps")),
    ("26_dashboards.velocity_error.ipynb", "dashboard_velocity_error", 3, ("raw", "raw")),
]
VOLUME_DASHBOARD = "31_dashboards.volumes.ipynb"  # its own test below (other controls)
STATUS = re.compile(r"(sampled|measured) in")  # the status line under each dashboard


def _missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (install it and playwright with: bash scripts/install_browser.sh)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed (bash scripts/install_browser.sh)"
    if importlib.util.find_spec("jupyterlab") is None:
        return "jupyterlab is not installed (pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, method: str = "GET", timeout: float = 5.0):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
        return json.loads(body) if body and r.headers.get_content_type() == "application/json" else None


def _stop_server(proc: subprocess.Popen, base: str):
    "Shut down the kernels and the server we started (REST API), then its process group by PID if still running."
    try:
        for k in _http(f"{base}/api/kernels") or []: _http(f"{base}/api/kernels/{k['id']}", "DELETE")
        _http(f"{base}/api/shutdown", "POST")
        proc.wait(timeout=20)
    except Exception:
        pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = _missing()
    if reason: pytest.skip(reason)
    root = tmp_path_factory.mktemp("lab")
    for nb in [d[0] for d in DASHBOARDS] + [VOLUME_DASHBOARD]: shutil.copy(ROOT / "nbs" / nb, root / nb)
    cfg = root / ".jupyter"
    (cfg / "labconfig").mkdir(parents=True)
    (cfg / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(cfg), "JUPYTERLAB_SETTINGS_DIR": str(root / ".lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".lab-workspaces"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "jupyterlab.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None: pytest.fail(f"jupyter lab exited with {proc.returncode}; see {ARTIFACTS / 'jupyterlab.log'}")
            try:
                _http(f"{base}/api/status"); break
            except Exception:
                if time.time() > deadline: pytest.fail(f"jupyter lab did not answer on {base} within 120 s")
                time.sleep(0.5)
        yield base
    finally:
        _stop_server(proc, base)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try: yield b
        finally: b.close()


# JavaScript run in the page -------------------------------------------------------------------------------------
_FIND = """(path) => { const app = window.jupyterapp; if (!app) return null;
  for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path) return w; return null; }"""

_NOTEBOOK_STATE = """(path) => {
  const w = (""" + _FIND + """)(path);
  if (!w || !w.content || !w.sessionContext || !w.sessionContext.session || !w.sessionContext.session.kernel) return null;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of cells) for (const o of c.model.outputs.toJSON()) if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
  return {kernel: w.sessionContext.session.kernel.status, n: cells.length,
          done: cells.filter(c => c.model.executionCount !== null).length,
          running: w.content.node.querySelectorAll('.jp-InputPrompt').length
                   ? Array.from(w.content.node.querySelectorAll('.jp-InputPrompt')).filter(p => p.textContent.includes('*')).length : 0,
          errors};
}"""

_DIGEST = """() => {
  const h = s => { let x = 5381; for (let i = 0; i < s.length; i++) x = ((x << 5) + x + s.charCodeAt(i)) | 0; return x; };
  const plain = (k, v) => (v && ArrayBuffer.isView(v)) ? Array.from(v) : v;
  return Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    probe: gd.dataset.neuromfProbe || null,
    traces: (gd._fullData || []).length,
    data: h(JSON.stringify((gd.data || []).map(t => [t.x, t.y, t.z]), plain)),
    layout: h(JSON.stringify([(gd.layout || {}).shapes, (gd.layout || {}).annotations, (gd.layout || {}).title])),
    svg: h((gd.querySelector('.cartesianlayer') || {innerHTML: ''}).innerHTML),
    points: gd.querySelectorAll('.scatterlayer .point, .barlayer path, .heatmaplayer image, .gl-container canvas').length,
    nogl: !!gd.querySelector('.no-webgl'),
    legend: Array.from(gd.querySelectorAll('.legendtext')).map(e => e.textContent),
    // a trace whose x and y lengths disagree, or which lost one of them, was partly reset in the browser
    broken: (gd.data || []).filter(t => (t.type || 'scatter') === 'scatter' && ((t.x || []).length !== (t.y || []).length)).map(t => t.name),
  }));
}"""


def _wait(page, js: str, what: str, timeout_s: float = 180, arg=None):
    deadline = time.time() + timeout_s
    while True:
        v = page.evaluate(js, arg) if arg is not None else page.evaluate(js)
        if v: return v
        if time.time() > deadline: raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def _run_notebook(page, base: str, notebook: str, timings: dict):
    t0 = time.time()
    # a fresh workspace per page, so JupyterLab opens only this notebook
    page.goto(f"{base}/lab/workspaces/{Path(notebook).stem.replace('.', '-')}/tree/{notebook}?reset")
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    page.evaluate("() => { window.jupyterapp.shell.collapseLeft(); window.jupyterapp.shell.collapseRight(); }")
    _wait(page, f"(p) => {{ const s = ({_NOTEBOOK_STATE})(p); return s && s.kernel === 'idle'; }}", "the kernel to start", arg=notebook)
    timings["kernel_ready"] = time.time() - t0
    page.evaluate(f"""async (p) => {{ const w = ({_FIND})(p); window.jupyterapp.shell.activateById(w.id);
        await window.jupyterapp.commands.execute('notebook:run-all-cells'); }}""", notebook)
    state = _wait(page, f"""(p) => {{ const s = ({_NOTEBOOK_STATE})(p);
        return s && (s.errors.length || (s.done === s.n && s.running === 0 && s.kernel === 'idle')) ? s : null; }}""",
                  "every cell to run", arg=notebook)
    timings["notebook_run"] = time.time() - t0
    assert not state["errors"], f"{notebook} raised in the browser: {state['errors']}"


def _shot(locator, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    locator.page.wait_for_timeout(300)
    locator.screenshot(path=str(path), animations="disabled")
    return path


def _check_consistent(digests, when: str):
    for i, d in enumerate(digests):
        assert not d["broken"], f"figure {i} {when}: traces {d['broken']} have x and y of different lengths in the browser"
        assert not [t for t in d["legend"] if re.fullmatch(r"trace \d+", t)], f"figure {i} {when}: default trace names in the legend {d['legend']}"


def _changed(page, before, what: str, timeout_s: float = 90):
    "Wait until every figure's data or labels changed; return the new digests."
    js = f"""(before) => {{ const now = ({_DIGEST})();
        return now.length === before.length && now.every((d, i) => d.data !== before[i].data || d.layout !== before[i].layout) ? now : null; }}"""
    now = _wait(page, js, f"the figures to re-draw after {what}", timeout_s, arg=before)
    page.wait_for_timeout(1500)  # let plotly finish drawing (transitions) before reading the SVG / taking screenshots
    now = page.evaluate(_DIGEST)
    _check_consistent(now, f"after {what}")
    return now


def _finish(page, lab, name, console_errors, timings, t0):
    "Whatever happened: the page's screenshot, console errors and timings in test-artifacts/; the page closed, its kernel stopped."
    page.screenshot(path=str(ARTIFACTS / f"{name}_page.png"), full_page=True)
    (ARTIFACTS / f"{name}_console_errors.txt").write_text("\n".join(console_errors))
    timings["total"] = time.time() - t0
    (ARTIFACTS / f"{name}_timings.json").write_text(json.dumps(timings, indent=1))
    page.close()
    for sess in _http(f"{lab}/api/sessions") or []: _http(f"{lab}/api/sessions/{sess['id']}", "DELETE")  # stop its kernel


@pytest.mark.parametrize("notebook,name,n_plots,toggle", DASHBOARDS, ids=[d[1] for d in DASHBOARDS])
def test_dashboard_renders_and_redraws_in_chromium(lab, browser, notebook, name, n_plots, toggle):
    page = browser.new_page(viewport={"width": 1600, "height": 1500})
    t0, timings = time.time(), {}
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        _run_notebook(page, lab, notebook, timings)
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {n_plots}", timeout=90_000)
        page.wait_for_timeout(2000)
        before = page.evaluate(_DIGEST)
        assert len(before) == n_plots, f"expected {n_plots} plotly figures, found {len(before)}"
        assert not any(d["nogl"] for d in before), "plotly reports no WebGL"
        assert all(d["traces"] > 0 and d["points"] > 0 for d in before), f"a figure rendered nothing: {before}"
        _check_consistent(before, "as first drawn")
        out = page.locator(".jp-OutputArea-output").filter(has=page.locator(".js-plotly-plot")).first
        out.scroll_into_view_if_needed()
        first = _shot(out, name)

        # mark the figure elements: after each change the same elements must still be there (updated, not replaced)
        page.evaluate("() => document.querySelectorAll('.js-plotly-plot').forEach((gd, i) => gd.dataset.neuromfProbe = String(i))")
        before = page.evaluate(_DIGEST)
        slider = out.locator(".widget-slider").filter(has_text="checkpoint")
        first_step = slider.locator(".widget-readout").inner_text()
        slider.locator(".noUi-handle").first.focus()
        t1 = time.time()
        page.keyboard.press("Home")
        after = _changed(page, before, "moving the checkpoint slider")
        timings["slider_redraw"] = time.time() - t1
        new_step = slider.locator(".widget-readout").inner_text()
        assert new_step != first_step, f"the checkpoint slider did not move ({first_step})"
        assert [d["probe"] for d in after] == [str(i) for i in range(n_plots)], "figures were replaced, not updated"
        assert any(a["svg"] != b["svg"] for a, b in zip(after, before) if b["svg"] != 5381), "no 2-D figure re-drew its SVG"
        status = out.locator(".widget-html").filter(has_text=STATUS).inner_text()
        assert f"step {new_step}" in status, status
        _shot(out, f"{name}_after_slider")

        t1 = time.time()
        out.locator(".widget-toggle-button").filter(has_text=re.compile(rf"^\s*{toggle[0]}\s*$")).click()
        after2 = _changed(page, after, f"clicking the {toggle[0]!r} button")
        timings["toggle_redraw"] = time.time() - t1
        assert [d["probe"] for d in after2] == [str(i) for i in range(n_plots)]
        assert toggle[1] in out.locator(".widget-html").filter(has_text=STATUS).inner_text()
        _shot(out, f"{name}_after_steps")
        if os.environ.get("NEUROMF_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(first, DOCS_IMG / f"{name}.png")
    finally:
        _finish(page, lab, name, console_errors, timings, t0)


def _changed_figures(page, before, which: list, what: str, timeout_s: float = 90):
    "Wait until the figures at indices `which` changed their data; return the new digests."
    js = f"""([before, which]) => {{ const now = ({_DIGEST})();
        return now.length === before.length && which.every(i => now[i].data !== before[i].data) ? now : null; }}"""
    _wait(page, js, f"figures {which} to re-draw after {what}", timeout_s, arg=[before, which])
    page.wait_for_timeout(1000)
    now = page.evaluate(_DIGEST)
    _check_consistent(now, f"after {what}")
    return now


def test_volume_dashboard_renders_and_redraws_in_chromium(lab, browser):
    "The volume dashboard: slices, histogram and latent statistics drawn; the sample slider, a slice slider and the view re-draw them."
    name = "dashboard_volumes"
    page = browser.new_page(viewport={"width": 1600, "height": 1500})
    t0, timings, console_errors = time.time(), {}, []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        _run_notebook(page, lab, VOLUME_DASHBOARD, timings)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=90_000)
        page.wait_for_timeout(2000)
        before = page.evaluate(_DIGEST)
        assert len(before) == 3, f"expected 3 plotly figures, found {len(before)}"
        assert all(d["traces"] > 0 and d["points"] > 0 for d in before), f"a figure rendered nothing: {before}"
        _check_consistent(before, "as first drawn")
        out = page.locator(".jp-OutputArea-output").filter(has=page.locator(".js-plotly-plot")).first
        first = _shot(out, name)
        page.evaluate("() => document.querySelectorAll('.js-plotly-plot').forEach((gd, i) => gd.dataset.neuromfProbe = String(i))")
        before = page.evaluate(_DIGEST)
        status = out.locator(".widget-html").filter(has_text="drawn in")
        assert "generated <b>" not in status.inner_text() and "generated 0" in status.inner_text(), status.inner_text()

        t1 = time.time()
        out.locator(".widget-slider").filter(has_text="generated sample").locator(".noUi-handle").first.focus()
        page.keyboard.press("End")
        after = _changed_figures(page, before, [0, 1, 2], "moving the generated-sample slider")
        timings["sample_redraw"] = time.time() - t1
        assert [d["probe"] for d in after] == ["0", "1", "2"], "figures were replaced, not updated"
        assert "generated 5" in status.inner_text(), status.inner_text()

        t1 = time.time()
        out.locator(".widget-slider").filter(has_text="axial (z)").locator(".noUi-handle").first.focus()
        page.keyboard.press("Home")
        after2 = _changed_figures(page, after, [0], "moving the axial slice slider")
        timings["slice_redraw"] = time.time() - t1
        assert after2[0]["svg"] != after[0]["svg"], "the slices did not re-draw"
        assert "z=0" in status.inner_text(), status.inner_text()

        t1 = time.time()
        out.locator(".widget-dropdown select").select_option(label="latent channel 1")
        after3 = _changed_figures(page, after2, [0, 1], "choosing latent channel 1")
        timings["view_redraw"] = time.time() - t1
        assert "latent channel 1" in status.inner_text() and [d["probe"] for d in after3] == ["0", "1", "2"]
        _shot(out, f"{name}_after_controls")
        if os.environ.get("NEUROMF_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(first, DOCS_IMG / f"{name}.png")
    finally:
        _finish(page, lab, name, console_errors, timings, t0)
