"""Short MeanFlow training of the small MAISI UNet preset on the volumetric torus (SPEC 6), then 1-step sampling
and the torus metrics of the samples after projection onto the torus patterns.

    .venv/bin/python scripts/volumetric_unet_demo.py                       # 150 steps, 4 x 16^3, 1 thread (~3 min)
    .venv/bin/python scripts/volumetric_unet_demo.py --steps 400 --prediction x

Writes the run folder (config, checkpoint, loss curve) and demo_results.json under runs/ (gitignored)."""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "toy_toroid_volumetric_unet.yaml")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's, 150)")
    p.add_argument("--size", type=int, default=None, help="spatial size S of the 4 x S^3 volumes, divisible by 8 (default 16)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's, 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--prediction", choices=("u", "x"), default=None, help="u- or x-prediction (default: the config's, u)")
    p.add_argument("--n-samples", type=int, default=None, help="noise draws for the metrics (default: the config's, 256)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/volumetric_unet_demo/<time stamp>)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="further dotted config overrides, e.g. training.lr=1e-3")
    return p.parse_args(argv)


def table(rows) -> str:
    head = f"{'model':22s}{'distance':>10s}{'dist p90':>10s}{'coupling':>10s}{'KS p th1':>10s}{'KS p th2':>10s}{'off-span':>10s}"
    lines = [head, "-" * len(head)]
    for name, m in rows:
        lines.append(f"{name:22s}{m['distance_mean']:10.4f}{m['distance_p90']:10.4f}{m.get('coupling_error_mean', float('nan')):10.4f}"
                     f"{m['ks_p_theta1']:10.3g}{m['ks_p_theta2']:10.3g}{m.get('offspan_residual_mean', float('nan')):10.3g}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from neuromf.config import load_config, config_to_dict
    from neuromf.data.toroid import ToroidDataset
    from neuromf.evaluate import evaluate_models, evaluation_noise
    from neuromf.metrics.torus import torus_metrics
    from neuromf.train import train

    over = [f"training.threads={args.threads}"]
    for key, val in (("training.steps", args.steps), ("data.spatial_size", args.size), ("training.batch_size", args.batch),
                     ("model.prediction_type", args.prediction), ("eval.n_samples", args.n_samples)):
        if val is not None: over.append(f"{key}={val}")
    if args.steps is not None: over.append(f"training.checkpoint_every={args.steps}")
    cfg = load_config(args.config, over + list(args.overrides))
    if cfg.data.spatial_size % 8: sys.exit(f"--size {cfg.data.spatial_size}: the UNet needs a spatial size divisible by 8")
    out = args.out or ROOT / "runs" / "volumetric_unet_demo" / time.strftime("%Y%m%d-%H%M%S")

    dataset = ToroidDataset(cfg.data)
    t0 = time.perf_counter()
    res = train(cfg, out, progress=not args.no_progress, dataset=dataset)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, metrics = evaluate_models({"ema": res.ema_model(), "raw": res.model}, dataset, cfg)
    noise = evaluation_noise(cfg).double()
    emb = dataset.embedding
    baseline = torus_metrics(emb.project(noise), noise_points=emb.project(noise), residual=emb.residual(noise))
    t_eval = time.perf_counter() - t0

    log = res.log
    first, last = log[0], log[-1]
    rows = [("noise (untrained, u=0)", baseline)] + [(f"{w} 1-step", metrics[w]["1"]) for w in ("ema", "raw")]
    rows += [(f"{w} {k}-step", metrics[w][k]) for w in ("ema",) for k in metrics["ema"] if k != "1"]
    print(f"\nraw MF loss (sum over 4 x {cfg.data.spatial_size}^3 voxels, mean of {cfg.training.log_every} steps): "
          f"steps 1-{first['step']}: {first['raw']:.1f}  ->  steps {last['step'] - cfg.training.log_every + 1}-{last['step']}: "
          f"{last['raw']:.1f}  ({last['raw'] / first['raw']:.3f} x)")
    print(f"train {t_train:.0f} s ({cfg.training.steps} steps, batch {cfg.training.batch_size}, {args.threads} thread(s)), eval {t_eval:.0f} s\n")
    print(table(rows))
    result = {"config": config_to_dict(cfg), "run_folder": str(out), "raw_loss_first": first, "raw_loss_last": last,
              "loss_log": log, "metrics": {"noise_baseline": baseline, **metrics},
              "timing": {"train_s": t_train, "eval_s": t_eval, "threads": args.threads}}
    (Path(out) / "demo_results.json").write_text(json.dumps(result, indent=1))
    print(f"\nresults: {Path(out) / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
