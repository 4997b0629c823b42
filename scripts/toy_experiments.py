"""The toroid experiment's measured numbers: the default config over several seeds, and u- vs x-prediction x
MF vs iMF at the same wall-clock budget. Writes <out>/summary.json and <out>/summary.md (the tables in README).

    .venv/bin/python scripts/toy_experiments.py --out runs/experiments            # 3 seeds + ablation
    .venv/bin/python scripts/toy_experiments.py --seeds 0 --no-ablation            # one run

Each run is a fresh `python -m neuromf.toy` process (so its wall time includes start-up and evaluation).
For the ablation every variant gets the same budget: its steps are set from its own measured speed
(a short timing probe), since an iMF step costs more than an MF step."""
import argparse, json, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VARIANTS = {"u-pred, MF": ["model.prediction_type=u", "loss.tangent=true"],
            "x-pred, MF": ["model.prediction_type=x", "loss.tangent=true"],
            "u-pred, iMF": ["model.prediction_type=u", "loss.tangent=model"],
            "x-pred, iMF": ["model.prediction_type=x", "loss.tangent=model"]}
HEAD = ["d1", "d2", "d5", "d10", "coupling1", "ks_p1", "ks_p2", "joint_p"]


def run(config, out, overrides, reuse=False):
    wall_file = out / "experiment_wall_s.json"
    if reuse and wall_file.is_file() and (out / "verification_metrics.json").is_file():
        wall = json.loads(wall_file.read_text())["wall_s"]
        return _result(out, wall, overrides)
    if out.exists(): subprocess.run(["rm", "-rf", str(out)])
    t0 = time.perf_counter()
    r = subprocess.run([PY, "-m", "neuromf.toy", "--config", str(config), "--out", str(out), "--no-progress", "--no-figures"]
                       + overrides, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not (out / "verification_metrics.json").is_file():
        raise SystemExit(f"run {out} failed:\n{r.stderr[-3000:]}")
    wall_file.write_text(json.dumps({"wall_s": wall}))
    return _result(out, wall, overrides)


def _result(out, wall, overrides):
    import yaml
    m = json.loads((out / "verification_metrics.json").read_text())["ema"]
    steps = yaml.safe_load((out / "config.yaml").read_text())["training"]["steps"]
    return {"wall_s": wall, "steps": steps, "d1": m["1"]["distance_mean"], "d2": m["2"]["distance_mean"], "d5": m["5"]["distance_mean"],
            "d10": m["10"]["distance_mean"], "coupling1": m["1"]["coupling_error_mean"], "ks_p1": m["1"]["ks_p_theta1"],
            "ks_p2": m["1"]["ks_p_theta2"], "joint_p": m["1"]["joint_p"], "overrides": overrides}


def steps_per_second(config, overrides, out, probe_steps=300):
    """Measured training speed of a variant (a short run; its first 50 steps are treated as warm-up)."""
    import torch
    sys.path.insert(0, str(ROOT))
    from neuromf.config import load_config
    from neuromf.train import train
    cfg = load_config(config, overrides + [f"training.steps={probe_steps}", "training.warmup_steps=10", "training.checkpoint_every=100000"])
    torch.set_num_threads(cfg.training.threads or torch.get_num_threads())
    t0 = time.perf_counter(); train(load_config(config, overrides + ["training.steps=50", "training.warmup_steps=10"]), None, progress=False)
    t1 = time.perf_counter(); train(cfg, None, progress=False); t2 = time.perf_counter()
    return probe_steps / (t2 - t1)


def fmt(rows, key_name):
    lines = [f"| {key_name} | wall (s) | steps | 1-NFE dist | 2-step | 5-step | 10-step | coupling (1) | KS p th1 | KS p th2 | joint p |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['wall_s']:.0f} | {r.get('steps', '')} | {r['d1']:.4f} | {r['d2']:.4f} | {r['d5']:.4f} | {r['d10']:.4f} | "
                     f"{r['coupling1']:.4f} | {r['ks_p1']:.3g} | {r['ks_p2']:.3g} | {r['joint_p']:.3g} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "toy_toroid.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "experiments")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs found in --out instead of re-running them")
    ap.add_argument("--budget-s", type=float, default=None, help="ablation wall budget per run (default: the default config's measured wall time)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from neuromf.config import load_config
    base = load_config(args.config)
    summary = {"config": str(args.config), "steps": base.training.steps, "threads": base.training.threads, "seeds": {}, "ablation": {}}
    for s in args.seeds:
        out = args.out / f"default_seed{s}"
        summary["seeds"][f"seed {s}"] = r = run(args.config, out, [f"training.seed={s}"], args.reuse)
        print(f"seed {s}: {json.dumps(r)}", flush=True)
    vals = list(summary["seeds"].values())
    if vals:
        agg = {}
        for k in HEAD + ["wall_s"]:
            xs = [v[k] for v in vals]
            agg[k] = {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": min(xs), "max": max(xs)}
        summary["seed_aggregate"] = agg
    if not args.no_ablation:
        budget = args.budget_s or (statistics.mean(v["wall_s"] for v in vals) if vals else 300.0)
        fixed = max(v["wall_s"] for v in vals) - base.training.steps / steps_per_second(args.config, [], args.out) if vals else 30.0
        for name, ov in VARIANTS.items():
            sps = steps_per_second(args.config, ov, args.out)
            steps = int(max(500, (budget - max(fixed, 10.0)) * sps) // 100 * 100)
            out = args.out / ("ablation_" + name.replace(", ", "_").replace("-", ""))
            r = run(args.config, out, ov + [f"training.steps={steps}", f"training.checkpoint_every={steps}"], args.reuse)
            r["steps_per_s"] = sps
            summary["ablation"][name] = r
            print(f"{name}: {json.dumps(r)}", flush=True)
    md = [f"Config `{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}`, EMA weights, n = 10,000 samples.", ""]
    if vals:
        md += ["### Default config, by seed", "", fmt(summary["seeds"], "seed"), ""]
        a = summary["seed_aggregate"]
        md += [f"Mean +- std over {len(vals)} seeds: 1-NFE distance {a['d1']['mean']:.4f} +- {a['d1']['std']:.4f}, "
               f"5-step {a['d5']['mean']:.4f} +- {a['d5']['std']:.4f}, KS p min {min(a['ks_p1']['min'], a['ks_p2']['min']):.3g}, "
               f"joint p min {a['joint_p']['min']:.3g}, wall {a['wall_s']['mean']:.0f} s.", ""]
    if summary["ablation"]:
        md += ["### u- vs x-prediction, MF vs iMF (same wall budget)", "", fmt(summary["ablation"], "variant"), ""]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "summary.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
