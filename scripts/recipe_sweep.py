"""Screen toy-recipe variants at a fixed step count (deterministic) and read where each one's error lives with the
oracle: 1-NFE distance, coupling error, 5-step distance, and the relative mean-velocity error over (r, t), on the
r = 0 cut, on the diagonal and at the 1-NFE cell. Each variant is a fresh `python -m neuromf.toy` run; finished
runs are reused. Writes <out>/sweep_summary.json and <out>/sweep_summary.md.

    .venv/bin/python scripts/recipe_sweep.py --out runs/sweep --steps 8000 \\
        base= lr3e-3=training.lr=0.003 "wide=model.hidden_dim=384 model.n_hidden=4"

Each positional argument is NAME=OVERRIDES (space-separated dotted overrides; empty for the defaults)."""
from __future__ import annotations
import argparse, json, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from neuromf.cli import CLIError, add_debug_flag, run_cli  # noqa: E402


def parse_variant(spec: str) -> tuple[str, list]:
    if "=" not in spec: raise CLIError(f"variant {spec!r} must look like NAME=OVERRIDES (e.g. 'lr=training.lr=0.003', or 'base=')")
    name, rest = spec.split("=", 1)
    if not name or "/" in name: raise CLIError(f"variant {spec!r}: the name before '=' must be a plain word")
    return name, rest.split()


def result(out: Path, wall: float | None) -> dict:
    import yaml
    m = json.loads((out / "verification_metrics.json").read_text())
    steps = yaml.safe_load((out / "config.yaml").read_text())["training"]["steps"]
    e, o = m["ema"], m["oracle"]["ema"]
    return {"steps": steps, "wall_s": wall, "d1": e["1"]["distance_mean"], "d2": e["2"]["distance_mean"], "d5": e["5"]["distance_mean"],
            "coupling1": e["1"]["coupling_error_mean"], "ks_p_min": min(e["1"]["ks_p_theta1"], e["1"]["ks_p_theta2"]),
            "joint_p": e["1"]["joint_p"], "rel_u": o["mean_velocity_rel_error_mean"], "rel_r0": o["r0_rel_error_mean"],
            "rel_v": o["instantaneous_rel_error_mean"], "rel_1nfe": o["one_step_rel_error"],
            "raw_d1": m["raw"]["1"]["distance_mean"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="recipe_sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="NAME=OVERRIDES")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "toy_toroid.yaml")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="training.threads of every run (default 1)")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    from neuromf.config import load_config
    from neuromf.train import atomic_write_text
    rows = {}
    for name, ov in variants:
        overrides = [f"training.steps={args.steps}", f"training.seed={args.seed}", f"training.threads={args.threads}",
                     f"training.checkpoint_every={args.steps}", *ov]
        load_config(args.config, overrides)                          # a bad override fails before any training
        out = args.out / f"{name}_s{args.seed}_{args.steps}"
        wall_file = out / "sweep_wall_s.json"
        if (out / "verification_metrics.json").is_file() and wall_file.is_file():
            print(f"{name}: reusing {out}", flush=True)
        else:
            if out.exists(): subprocess.run(["rm", "-rf", str(out)], check=True)
            print(f"{name}: {' '.join(ov) or '(defaults)'} -> {out}", flush=True)
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "neuromf.toy", "--config", str(args.config), "--out", str(out), "--no-progress",
                                "--no-figures", *overrides], capture_output=True, text=True, cwd=ROOT)
            if not (out / "verification_metrics.json").is_file():
                raise CLIError(f"run {name} failed (exit {r.returncode}): {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
            wall_file.write_text(json.dumps({"wall_s": time.perf_counter() - t0}))
        rows[name] = {"overrides": ov, **result(out, json.loads(wall_file.read_text())["wall_s"])}
        r = rows[name]
        print(f"  1-NFE {r['d1']:.4f} (raw {r['raw_d1']:.4f}), 5-step {r['d5']:.4f}, coupling {r['coupling1']:.4f}, rel u {r['rel_u']:.4f}, "
              f"r=0 {r['rel_r0']:.4f}, v {r['rel_v']:.4f}, 1-NFE cell {r['rel_1nfe']:.4f}, {r['wall_s']:.0f} s", flush=True)
    lines = [f"Seed {args.seed}, {args.steps} steps, training.threads={args.threads}, EMA weights, 10,000 samples.", "",
             "| variant | overrides | 1-NFE dist | 2-step | 5-step | coupling (1) | KS p min | rel. err. u (r < t) | r = 0 cut | v (r = t) | 1-NFE cell | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | `{' '.join(r['overrides']) or '-'}` | {r['d1']:.4f} | {r['d2']:.4f} | {r['d5']:.4f} | {r['coupling1']:.4f} | "
                     f"{r['ks_p_min']:.3g} | {r['rel_u']:.4f} | {r['rel_r0']:.4f} | {r['rel_v']:.4f} | {r['rel_1nfe']:.4f} | {r['wall_s']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = args.out / "sweep_summary.json"
    old = json.loads(summary.read_text()) if summary.is_file() else {}
    old.update({f"{k}_s{args.seed}_{args.steps}": v for k, v in rows.items()})
    atomic_write_text(json.dumps(old, indent=1), summary)
    atomic_write_text("\n".join(lines) + "\n", args.out / f"sweep_s{args.seed}_{args.steps}.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="recipe_sweep"))
