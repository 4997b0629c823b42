"""The floor of the toy: the same network trained by plain regression on the exact mean velocity u*(z, r, t)
(neuromf.oracle) with the same data, (r, t) distribution, batch, steps, learning-rate schedule and EMA as a MeanFlow
run, beside MF, iMF and x-prediction runs of the same step budget. What the regression cannot reach is capacity
(network, steps, optimiser); what MeanFlow loses on top of it is the objective.

    .venv/bin/python scripts/oracle_floor.py --out runs/oracle_floor                  # every variant, seed 0
    .venv/bin/python scripts/oracle_floor.py --variants floor-u,mf-u --seed 1 training.steps=4000

Writes <out>/<variant>/ (a run folder with verification_metrics.json, including the oracle metrics), and
<out>/floor_summary.json + floor_summary.md. Finished variants are kept and reused (--rerun redoes them)."""
from __future__ import annotations
import argparse, json, math, subprocess, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from neuromf.cli import CLIError, add_debug_flag, run_cli  # noqa: E402

# name -> (label, kind, overrides)
VARIANTS = {
    "floor-u": ("regression on u* (u-pred)", "floor", ["model.prediction_type=u"]),
    "floor-u-mse": ("regression on u* (u-pred, plain MSE)", "floor", ["model.prediction_type=u", "loss.adaptive=false"]),
    "floor-x": ("regression on u* (x-pred)", "floor", ["model.prediction_type=x"]),
    "mf-u": ("MF (u-pred)", "meanflow", ["model.prediction_type=u", "loss.tangent=true"]),
    "imf-u": ("iMF (u-pred)", "meanflow", ["model.prediction_type=u", "loss.tangent=model"]),
    "mf-x": ("MF (x-pred)", "meanflow", ["model.prediction_type=x", "loss.tangent=true"]),
}
CHUNK = 50  # batches whose exact targets are computed in one vectorised oracle call


def floor_batches(cfg, dataset, gen, n_batches):
    "`n_batches` training batches `(z, r, t, u*)` drawn like train() draws them, with the exact mean velocity as target."
    from neuromf.oracle import exact_mean_velocity
    from neuromf.train import sample_times
    b = cfg.training.batch_size
    x = dataset.batch(torch.randint(len(dataset), (n_batches * b,), generator=gen)).double()
    e = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    t, r = sample_times(cfg.time, n_batches * b, gen)
    t, r = t.double(), torch.minimum(r.double(), t.double())
    z = (1 - t.reshape(-1, *([1] * (x.ndim - 1)))) * x + t.reshape(-1, *([1] * (x.ndim - 1))) * e
    u = exact_mean_velocity(z, r, t, cfg.data)
    return [(zc.float(), rc.float(), tc.float(), uc.float()) for zc, rc, tc, uc in
            zip(z.split(b), r.split(b), t.split(b), u.split(b))]


def train_floor(cfg, out_dir: Path, progress: bool = False):
    "Regression of the config's network on u* with the config's optimiser, schedule, EMA and loss weighting; then evaluate_run."
    from neuromf.config import config_to_yaml
    from neuromf.data.toroid import ToroidDataset
    from neuromf.ema import EMA
    from neuromf.evaluate import evaluate_run
    from neuromf.losses.lp import lp_loss
    from neuromf.losses.meanflow import adaptive_weight
    from neuromf.train import atomic_save, atomic_write_text, build_model, lr_factor
    tc = cfg.training
    threads_before = torch.get_num_threads()
    if tc.threads: torch.set_num_threads(tc.threads)
    try:
        torch.manual_seed(tc.seed)
        gen = torch.Generator().manual_seed(tc.seed)
        dataset = ToroidDataset(cfg.data)
        model = build_model(cfg)
        ema = EMA(model, tc.ema_decay, tc.ema_warmup)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tc))
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_to_yaml(cfg), out_dir / "config.yaml")
        log, win, step, t0, t_oracle = [], {"n": 0, "loss": 0.0, "raw": 0.0, "fixed": 0.0, "nf": 0}, 0, time.perf_counter(), 0.0
        model.train()
        while step < tc.steps:
            t1 = time.perf_counter()
            batches = floor_batches(cfg, dataset, gen, min(CHUNK, tc.steps - step))
            t_oracle += time.perf_counter() - t1
            for z, r, t, target in batches:
                err = lp_loss(model(z, r, t), target, cfg.loss.p, reduction="none")
                w = adaptive_weight(err, cfg.loss.c, cfg.loss.gamma) if cfg.loss.adaptive else torch.ones_like(err)
                loss = (w * err).mean()
                if not torch.isfinite(loss): raise RuntimeError(f"non-finite regression loss at step {step + 1}")
                opt.zero_grad(set_to_none=True); loss.backward()
                if tc.grad_clip: torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step(); sched.step(); ema.update(model); step += 1
                win["n"] += 1; win["loss"] += loss.item(); win["raw"] += err.mean().item()
                if (r == t).any(): win["fixed"] += err[r == t].mean().item(); win["nf"] += 1
                if step % tc.log_every == 0 or step == tc.steps:
                    n = win["n"]
                    log.append({"step": step, "loss": win["loss"] / n, "raw": win["raw"] / n, "raw_mf": win["raw"] / n,
                                "raw_fm_objective": win["fixed"] / max(1, win["nf"]), "lr": sched.get_last_lr()[0]})
                    win = {"n": 0, "loss": 0.0, "raw": 0.0, "fixed": 0.0, "nf": 0}
                    if progress and step % (20 * tc.log_every) == 0:
                        print(f"  step {step}/{tc.steps} raw {log[-1]['raw']:.5f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        t_train = time.perf_counter() - t0
        model.eval()
        atomic_save({"step": step, "model": model.state_dict(), "ema": ema.state_dict()}, out_dir / "floor_model.pt")
        atomic_write_text(json.dumps(log), out_dir / "loss_curves.json")
        timing = {"train_wall_s (this call)": t_train, "oracle_targets_s": t_oracle, "threads": tc.threads or torch.get_num_threads()}
        t1 = time.perf_counter()
        out = evaluate_run(out_dir, cfg, model, ema.averaged_model(model), log, dataset, timing=timing, figures=False)
        out["timing"]["eval_wall_s"] = time.perf_counter() - t1
        atomic_write_text(json.dumps(out, indent=1), out_dir / "verification_metrics.json")
        return out
    finally:
        torch.set_num_threads(threads_before)


def run_meanflow(config: Path, out_dir: Path, overrides: list):
    "A MeanFlow run of the toy (`python -m neuromf.toy`), in its own process."
    if out_dir.exists(): subprocess.run(["rm", "-rf", str(out_dir)], check=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "neuromf.toy", "--config", str(config), "--out", str(out_dir), "--no-progress",
                        "--no-figures", *overrides], capture_output=True, text=True, cwd=ROOT)
    if not (out_dir / "verification_metrics.json").is_file():
        raise CLIError(f"MeanFlow run {out_dir} failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no output'}")
    (out_dir / "wall_s.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0}))


def row(name: str, out_dir: Path) -> dict:
    "The numbers of one finished variant."
    import yaml
    m = json.loads((out_dir / "verification_metrics.json").read_text())
    cfg = yaml.safe_load((out_dir / "config.yaml").read_text())
    ema, o = m["ema"], m["oracle"]["ema"]
    return {"variant": name, "label": VARIANTS[name][0], "kind": VARIANTS[name][1], "steps": cfg["training"]["steps"],
            "train_wall_s": m["timing"].get("train_wall_s (this call)"),
            "d1": ema["1"]["distance_mean"], "d5": ema["5"]["distance_mean"] if "5" in ema else None,
            "coupling1": ema["1"]["coupling_error_mean"], "ks_p_min": min(ema["1"]["ks_p_theta1"], ema["1"]["ks_p_theta2"]),
            "rel_u_mean": o["mean_velocity_rel_error_mean"], "rel_u_r0": o["r0_rel_error_mean"],
            "rel_v": o["instantaneous_rel_error_mean"], "rel_1nfe": o["one_step_rel_error"]}


def markdown(rows: list, seed: int) -> str:
    lines = [f"| variant | steps | train wall (s) | 1-NFE dist | 5-step dist | coupling (1) | KS p min | rel. err. u* (r < t) | r = 0 cut | instantaneous v* | 1-NFE cell |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['steps']} | {r['train_wall_s']:.0f} | {r['d1']:.4f} | {r['d5']:.4f} | {r['coupling1']:.4f} | "
                     f"{r['ks_p_min']:.3g} | {r['rel_u_mean']:.4f} | {r['rel_u_r0']:.4f} | {r['rel_v']:.4f} | {r['rel_1nfe']:.4f} |")
    by = {r["variant"]: r for r in rows}
    if "floor-u" in by and "mf-u" in by:
        f, mf = by["floor-u"], by["mf-u"]
        lines += ["", f"Seed {seed}. Of MF's 1-NFE distance {mf['d1']:.4f}, the exact-target regression of the same network and budget "
                      f"reaches {f['d1']:.4f} (capacity: {100 * f['d1'] / mf['d1']:.0f}%); the MeanFlow objective adds "
                      f"{mf['d1'] - f['d1']:.4f} ({100 * (mf['d1'] - f['d1']) / mf['d1']:.0f}%). Coupling error {f['coupling1']:.4f} vs "
                      f"{mf['coupling1']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="oracle_floor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "toy_toroid.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "oracle_floor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=lambda s: [v for v in s.split(",") if v], default=list(VARIANTS),
                    help=f"comma-separated, any of {','.join(VARIANTS)} (default: all)")
    ap.add_argument("--rerun", action="store_true", help="redo variants that already finished in --out")
    ap.add_argument("--progress", action="store_true", help="print the floor runs' progress")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for every variant, e.g. training.steps=4000")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad: raise CLIError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    if not args.config.is_file(): raise CLIError(f"config file not found: {args.config}")
    from neuromf.config import load_config
    from neuromf.train import atomic_write_text
    base = [*args.overrides, f"training.seed={args.seed}"]
    load_config(args.config, base)                                     # a bad override fails here, before any training
    rows = []
    for name in args.variants:
        label, kind, extra = VARIANTS[name]
        out_dir = args.out / f"{name}_seed{args.seed}"
        done = (out_dir / "verification_metrics.json").is_file() and "oracle" in json.loads((out_dir / "verification_metrics.json").read_text())
        if done and not args.rerun: print(f"{name}: reusing {out_dir}", flush=True)
        else:
            print(f"{name}: training ({label}) -> {out_dir}", flush=True)
            if kind == "floor": train_floor(load_config(args.config, base + extra), out_dir, progress=args.progress)
            else: run_meanflow(args.config, out_dir, base + extra)
        rows.append(row(name, out_dir))
        print(f"  1-NFE distance {rows[-1]['d1']:.4f}, coupling {rows[-1]['coupling1']:.4f}, rel. error of u {rows[-1]['rel_u_mean']:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"seed": args.seed, "config": str(args.config), "overrides": args.overrides, "rows": rows}, indent=1),
                      args.out / f"floor_summary_seed{args.seed}.json")
    md = markdown(rows, args.seed)
    atomic_write_text(md, args.out / f"floor_summary_seed{args.seed}.md")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="oracle_floor"))
