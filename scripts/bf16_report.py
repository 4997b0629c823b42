"""What runs in bf16 under `training.precision=bf16`: the matmul/convolution FLOPs of one full training step (forward,
JVP, loss, backward), grouped by the dtype they run in, for each JVP strategy and tangent, on the small MAISI UNet and
the toy MLP. Counted with a dispatch mode over aten ops and torch's own FLOP formulas (torch.utils.flop_counter).

    .venv/bin/python scripts/bf16_report.py [--out bench_results/bf16_cpu.json]     # ~1 minute on 2 cores
"""
import argparse, json, warnings
from collections import defaultdict
from pathlib import Path
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

warnings.filterwarnings("ignore")


class DtypeFlops(TorchDispatchMode):
    "FLOPs of matmul/convolution ops by the dtype of their first tensor input."
    def __init__(self):
        super().__init__(); self.flops = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            dtype = next((a.dtype for a in args if isinstance(a, torch.Tensor)), None)
            try: self.flops[str(dtype).replace("torch.", "")] += flop_registry[packet](*args, **kwargs, out_val=out)
            except Exception: pass
        return out


def one_step(model_kind, strategy, tangent):
    from neuromf.config import load_config
    from neuromf.train import build_model, make_dataset, MeanFlowObjective, TrainState, step_batches, train_step
    from neuromf.distributed import DistContext, BatchStream
    over = [f"loss.strategy={strategy}", f"loss.tangent={tangent}", "training.precision=bf16", "training.steps=2", "training.warmup_steps=1",
            "time.r_equals_t_prob=0.25"]   # the recipe bench_results/bf16_cpu.json was measured with
    if model_kind == "unet_small_16":
        over += ["data.mode=volumetric", "data.spatial_size=16", "data.n_samples=8", "model.arch=maisi_unet", "training.batch_size=2"]
    else: over += ["model.hidden_dim=256", "training.batch_size=256", "data.n_samples=1024"]
    cfg = load_config(overrides=over)
    ds, cfg = make_dataset(cfg)
    torch.manual_seed(0)
    state = TrainState.create(build_model(cfg), cfg.training, torch.device("cpu"))
    obj = MeanFlowObjective(state.model, cfg.loss)
    micro = next(step_batches(ds, cfg, BatchStream(len(ds), cfg.training.batch_size), DistContext(), 0, 1))
    with torch.backends.mkldnn.flags(enabled=False), DtypeFlops() as m:
        train_step(state, obj, micro, cfg.training)
    total = sum(m.flops.values())
    return {k: v / total for k, v in m.flops.items()}, total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for model in ("unet_small_16", "mlp"):
        for tangent in ("true", "model"):
            for strategy in ("exact", "exact_nograd", "finite_difference", "exact_func"):
                share, total = one_step(model, strategy, tangent)
                rows.append({"model": model, "loss": "MF" if tangent == "true" else "iMF", "strategy": strategy,
                             "bf16_share": share.get("bfloat16", 0.0), "fp32_share": share.get("float32", 0.0), "gflop": total / 1e9})
                print(f"{model:14s} {rows[-1]['loss']:4s} {strategy:18s} bf16 {100 * rows[-1]['bf16_share']:5.1f}%  "
                      f"fp32 {100 * rows[-1]['fp32_share']:5.1f}%  ({total / 1e9:.2f} GFLOP)", flush=True)
    lines = ["| model | loss | JVP strategy | matmul/conv FLOPs in bf16 | in fp32 | GFLOP / step |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['loss']} | {r['strategy']} | {100 * r['bf16_share']:.0f}% | {100 * r['fp32_share']:.0f}% | {r['gflop']:.2f} |" for r in rows]
    print("\n".join(lines))
    if a.out: a.out.parent.mkdir(parents=True, exist_ok=True); a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
