"""`neuromf-bench` runs end to end on a tiny suite and writes the documented JSON (no timing assertions: the numbers
are measured by scripts/bench.sh and reported in the README, not asserted)."""
import json, subprocess, sys
import pytest, torch
from neuromf.bench import BenchCase, main, suite, summarise, time_cases


def test_tiny_suite_writes_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--suite", "tiny", "--rounds", "2", "--warmup", "1", "--no-memory", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["schema_version"] == 1
    assert {"cpu", "cpu_count", "torch", "threads", "platform"} <= set(res["machine"])
    assert res["machine"]["threads"] == 1 and res["settings"]["primary_timer"] == "cpu"
    names = [c["name"] for c in res["cases"]]
    assert names == ["mlp_tiny/fm", "mlp_tiny/mf/exact@r!=t:1", "mlp_tiny/mf/double_backward@r!=t:1"]
    for c in res["cases"]:
        for key in ("wall_ms", "cpu_ms", "ratio_to_fm"):
            assert set(c[key]) == {"median", "p10", "p90"} and c[key]["p10"] <= c[key]["median"] <= c[key]["p90"]
        assert c["n_rounds"] == 2 and c["cpu_ms"]["median"] > 0 and c["memory"] is None
    assert res["cases"][0]["ratio_to_fm"]["median"] == 1.0
    marks = {m["mark"] for m in res["marks"]}
    assert not marks, "the tiny suite has no 'mlp' family, so no marks apply"
    assert res["table"].startswith("| case |") and res["command"].startswith("neuromf-bench --suite tiny")
    printed = capsys.readouterr().out
    assert "mlp_tiny/mf/double_backward" in printed and "results:" in printed


def _rss_mb():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))


def test_memory_probe_is_a_fresh_process_and_ratios_use_the_fm_probe():
    case = BenchCase(model="mlp_tiny", loss="mf", batch=8)
    ballast = torch.ones(64 * 2**20)     # 256 MiB resident here: the probe must not inherit it (ru_maxrss would)
    r = subprocess.run([sys.executable, "-m", "neuromf.bench", "--one", json.dumps(case.__dict__)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mem = json.loads(r.stdout.strip().splitlines()[-1])
    assert mem["kind"] == "cpu_peak_rss" and mem["peak_mb"] >= mem["setup_mb"] > 0
    assert mem["peak_mb"] < _rss_mb() - 128, (mem, _rss_mb())
    del ballast
    fm = BenchCase(model="mlp_tiny", batch=8)
    rows = summarise([fm, case], time_cases([fm, case], 2, 0),
                     {fm.name: dict(mem, peak_mb=100.0, step_mb=10.0), case.name: dict(mem, peak_mb=120.0, step_mb=15.0)}, "cpu")
    assert rows[1]["memory"]["peak_ratio_to_fm"] == 1.2 and rows[1]["memory"]["step_ratio_to_fm"] == 1.5


def test_suites_and_bad_arguments():
    full = [c for cs, _, _ in suite("full") for c in cs]
    assert {c.family for c in full} >= {"mlp", "unet_small@16^3", "unet_small@32^3"}
    assert {c.strategy for c in full if c.loss == "mf"} == {"exact", "exact_func", "exact_nograd", "finite_difference", "double_backward"}
    assert all(any(c.loss == "fm" and c.family == f for c in full) for f in {c.family for c in full})
    assert main(["--suite", "huge"]) == 2
    with pytest.raises(ValueError, match="spatial=12"):
        BenchCase(model="unet_small", spatial=12)
    with pytest.raises(ValueError, match="loss='sm'"):
        BenchCase(loss="sm")
