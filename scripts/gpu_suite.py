"""The GPU suite (issue 9): MAISI's rflow UNet (~179 M parameters) at MAISI latent sizes, bf16 and fp32, batch 1/2/4:
forward, flow-matching (FM), MeanFlow (MF) and improved MeanFlow (iMF) training steps with the library's own step
(`MeanFlowObjective` + `TrainState.update`), peak memory, samples/s, MF/FM ratio; then a short real training run of the
small preset on the volumetric torus, checked against P2-T5/T6.

    python scripts/gpu_suite.py --out bench_results/gpu.json                  # on a CUDA machine (~10 minutes)
    python scripts/gpu_suite.py --device cpu --tiny                           # smoke test of the code path on a CPU

Not run in CI. Never reports a number it did not measure: without CUDA it exits with one line.
"""
import argparse, json, os, platform, statistics, subprocess, sys, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
warnings.filterwarnings("ignore")


def _sync(dev):
    import torch
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def time_case(shape, batch, loss, strategy, precision, dev, reps, warmup, preset):
    "Median seconds per call and peak memory of one case (forward, or a full training step)."
    import torch
    from neuromf.config import load_config
    from neuromf.train import build_model, MeanFlowObjective, TrainState, train_step
    over = ["model.arch=maisi_unet", f"model.unet.preset={preset}", "data.source=latents", "data.latents_dir=unused",
            f"data.latent_shape=[{','.join(map(str, shape))}]", f"training.precision={precision}", f"loss.strategy={strategy}",
            f"loss.tangent={'model' if loss == 'imf' else 'true'}", "training.steps=10", "training.warmup_steps=1",
            f"model.unet.use_flash_attention={str(dev.type == 'cuda').lower()}"]
    cfg = load_config(overrides=over)
    torch.manual_seed(0)
    state = TrainState.create(build_model(cfg), cfg.training, dev)
    obj = MeanFlowObjective(state.model, cfg.loss, dev)
    g = torch.Generator(dev).manual_seed(0)
    x = torch.randn((batch, *shape), generator=g, device=dev); e = torch.randn_like(x)
    t = torch.rand(batch, generator=g, device=dev); r = t * torch.rand(batch, generator=g, device=dev)
    if loss == "fm": r = t.clone()                           # r = t: MF reduces to flow matching (no JVP rows)
    def step():
        if loss == "forward":
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"): state.model(x, r, t)
        else: train_step(state, obj, [(x, e, t, r)], cfg.training)
    for _ in range(warmup): step()
    _sync(dev)
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); step(); _sync(dev); times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    n_params = sum(p.numel() for p in state.model.parameters())
    del state, obj
    if dev.type == "cuda": torch.cuda.empty_cache()
    return {"median_s": statistics.median(times), "peak_gib": peak, "params_m": n_params / 1e6}


def short_training(dev, steps, out):
    "The small preset on the volumetric torus (4 x 16^3), trained and verified by neuromf-train."
    cmd = [sys.executable, "-m", "neuromf.train_cli", "--config", str(ROOT / "configs" / "toy_toroid_volumetric_unet.yaml"),
           "--out", str(out), "--no-progress", "--no-figures", f"training.steps={steps}", "training.batch_size=32",
           f"training.device={dev.type}", "training.threads=0", "training.checkpoint_every=100000", "eval.n_samples=2000",
           "eval.batch_size=500", "eval.sample_steps=[1,2]", f"training.warmup_steps={min(100, steps // 10)}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode: return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed", "wall_s": wall}
    m = json.loads((Path(out) / "verification_metrics.json").read_text())
    rows = {v["id"]: v for v in m["verification"]}
    return {"steps": steps, "wall_s": wall, "distance_1nfe_ema": m["ema"]["1"]["distance_mean"],
            "ks_p": [m["ema"]["1"]["ks_p_theta1"], m["ema"]["1"]["ks_p_theta2"]],
            "P2-T5": rows["P2-T5"]["status"], "P2-T6": rows["P2-T6"]["status"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="small preset at 4x16^3, 2 reps: a smoke test of the code path")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    import torch
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: no CUDA device here; run it on a GPU machine (or --device cpu --tiny to check the code path)")
    dev = torch.device(a.device)
    if a.tiny: shapes, batches, preset, reps, warm, precisions = [(4, 16, 16, 16)], [1, 2], "small", 2, 1, ["fp32"]
    else: shapes, batches, preset, reps, warm, precisions = [(4, 48, 48, 48), (4, 64, 64, 32)], [1, 2, 4], "rflow", a.reps, 3, ["bf16", "fp32"]
    rows = []
    for shape in shapes:
        for precision in precisions:
            for b in batches:
                for loss, strategy in [("forward", "exact"), ("fm", "exact"), ("mf", "exact"), ("mf", "exact_nograd"), ("imf", "exact")]:
                    try: res = time_case(shape, b, loss, strategy, precision, dev, reps, warm, preset)
                    except torch.cuda.OutOfMemoryError: res = {"median_s": None, "peak_gib": None, "oom": True}
                    row = {"shape": list(shape), "batch": b, "precision": precision, "case": loss, "strategy": strategy, **res}
                    if res.get("median_s"): row["samples_per_s"] = b / res["median_s"]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    for r in rows:
        fm = next((x for x in rows if x["shape"] == r["shape"] and x["batch"] == r["batch"] and x["precision"] == r["precision"]
                   and x["case"] == "fm"), None)
        if fm and fm.get("median_s") and r.get("median_s"): r["x_fm_step"] = r["median_s"] / fm["median_s"]
    train = short_training(dev, 20 if a.tiny else a.train_steps, Path("runs") / f"gpu_suite_train_{int(time.time())}")
    print(json.dumps({"short_training": train}), flush=True)
    info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(), "torch": torch.__version__}
    lines = ["| latent | precision | batch | case | JVP | ms | x FM step | samples/s | peak GiB |", "|---|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ms = f"{1e3 * r['median_s']:.1f}" if r.get("median_s") else "OOM"
        lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['precision']} | {r['batch']} | {r['case']} | {r['strategy'] if r['case'] in ('mf', 'imf') else '-'} "
                     f"| {ms} | {r.get('x_fm_step', float('nan')):.2f} | {r.get('samples_per_s', float('nan')):.1f} | {r.get('peak_gib') or float('nan'):.1f} |")
    print("\n".join(lines))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": info, "rows": rows, "short_training": train}, indent=1))


if __name__ == "__main__":
    main()
