"""DDP overhead on this machine: per-step time of the MeanFlow training step on 1 process vs 2 processes (gloo),
and DDP's bucketed reducer (the objective inside DistributedDataParallel, as `neuromf.train` does) vs the official
PyTorch port's route (model.module, backward, then one all-reduce per gradient tensor). Same global batch everywhere.

    .venv/bin/python scripts/bench_ddp.py --out bench_results/ddp_cpu.json          # ~4 minutes on 2 cores

Each case runs in fresh processes; the step is the library's own (`MeanFlowObjective` + `TrainState.update`).
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # name: (config overrides, global batch)
    "mlp": (["model.hidden_dim=256", "model.n_hidden=5", "time.r_equals_t_prob=0.25"], 512),
    "unet_small_16": (["data.mode=volumetric", "data.spatial_size=16", "data.n_samples=256", "model.arch=maisi_unet", "time.r_equals_t_prob=0.25"], 4),
}


def worker(args):
    import torch, torch.distributed as dist
    from neuromf.config import load_config
    from neuromf.distributed import init_distributed, wrap_ddp, BatchStream
    from neuromf.train import build_model, make_dataset, MeanFlowObjective, TrainState, step_batches, train_step
    torch.set_num_threads(args.threads)
    overrides, global_batch = MODELS[args.model]
    ctx = init_distributed("cpu")
    W = ctx.world_size
    cfg = load_config(overrides=overrides + [f"training.batch_size={global_batch // W}", f"training.steps={args.steps}",
                                             "training.warmup_steps=1", "training.check_model=false"])
    dataset, cfg = make_dataset(cfg)
    torch.manual_seed(0)
    state = TrainState.create(build_model(cfg), cfg.training, ctx.device)
    objective = MeanFlowObjective(state.model, cfg.loss)
    if args.route == "ddp": objective = wrap_ddp(objective, ctx)
    stream = BatchStream(len(dataset), cfg.training.batch_size, W, 1, 0)
    params = [p for p in state.model.parameters()]
    times = []
    for micro in step_batches(dataset, cfg, stream, ctx, 0, args.steps):
        t0 = time.perf_counter()
        if args.route == "manual":
            objective(*micro[0]).loss.backward()
            for p in params:                              # the official port: one collective per tensor, after backward
                if p.grad is not None: dist.all_reduce(p.grad); p.grad.div_(W)
            state.update(cfg.training.grad_clip)
        else:
            train_step(state, objective, micro, cfg.training)
        times.append(time.perf_counter() - t0)
    if ctx.distributed:
        check = torch.cat([p.detach().flatten() for p in params])
        ref = check.clone(); dist.broadcast(ref, 0)
        same = bool(torch.equal(ref, check))
        dist.destroy_process_group()
    else: same = True
    if ctx.rank == 0:
        kept = times[args.warmup:]
        print(json.dumps({"model": args.model, "route": args.route, "world": W, "threads": args.threads, "steps": len(kept),
                          "median_ms": 1e3 * statistics.median(kept), "p10_ms": 1e3 * sorted(kept)[len(kept) // 10],
                          "p90_ms": 1e3 * sorted(kept)[9 * len(kept) // 10], "params_equal_across_ranks": same}))


def run_case(model, route, world, threads, steps, warmup):
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"] if world > 1 else [sys.executable])
    cmd += [str(Path(__file__).resolve()), "--worker", "--model", model, "--route", route, "--threads", str(threads),
            "--steps", str(steps), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode: raise SystemExit(f"case {model}/{route}/{world}p failed:\n{r.stderr[-2000:]}")
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--route", default="ddp", choices=["ddp", "manual", "single"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="repeat every case this many times, interleaved")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.worker: return worker(a)
    if a.rounds < 1 or a.steps <= a.warmup: raise SystemExit("bench_ddp: --rounds must be >= 1 and --steps > --warmup")
    steps = {"mlp": (a.steps * 5, a.warmup * 5), "unet_small_16": (a.steps // 2, a.warmup // 2)}
    cases = [(m, route, world, threads) for m in MODELS for (route, world, threads) in
             [("single", 1, 1), ("single", 1, 2), ("ddp", 2, 1), ("manual", 2, 1)]]
    results = {c: [] for c in cases}
    for rnd in range(a.rounds):
        for c in cases:
            res = run_case(*c, *steps[c[0]])
            results[c].append(res)
            print(f"round {rnd + 1}: {c[0]:14s} {c[1]:7s} {c[2]}p x {c[3]}t  {res['median_ms']:8.2f} ms/step", flush=True)
    rows = []
    for c, rs in results.items():
        med = statistics.median(r["median_ms"] for r in rs)
        rows.append({"model": c[0], "route": c[1], "processes": c[2], "threads_per_process": c[3], "median_ms": med,
                     "rounds_ms": [r["median_ms"] for r in rs], "params_equal_across_ranks": all(r["params_equal_across_ranks"] for r in rs)})
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["processes"] == 1 and x["threads_per_process"] == 1)
        r["x_vs_1proc_1thread"] = r["median_ms"] / base["median_ms"]
    import torch
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                       "python": platform.python_version(), "load_before": os.getloadavg()}, "rows": rows}
    lines = ["| model | route | processes x threads | ms / step (median of rounds) | x 1 process, 1 thread |", "|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['route']} | {r['processes']} x {r['threads_per_process']} | {r['median_ms']:.1f} | {r['x_vs_1proc_1thread']:.2f}x |")
    print("\n".join(lines))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
