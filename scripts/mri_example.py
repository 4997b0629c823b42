"""The whole MRI path on data the project makes itself, on a CPU, in minutes:

  synthetic brain-like phantoms (NIfTI) -> a small MAISI autoencoder trained on them -> neuromf-encode -> a MeanFlow
  MAISI UNet (small preset) trained on the standardised latents (neuromf-train, configs/mri_example.yaml) -> neuromf-sample (1 step, EMA) -> decoded NIfTI
  volumes -> metrics (latent MMD, MS-SSIM among samples, reconstruction error; FID with --feature-net) -> a summary.

What it proves: every piece of the path runs end to end with MONAI's real components and the files are what they say
(orientation, spacing, shapes). What it does not: anything about quality on real MRI (phantoms are nested ellipsoids,
the autoencoder and the UNet are tiny and briefly trained). Each stage is skipped when its output exists, so a killed
run continues where it stopped.

    .venv/bin/python scripts/mri_example.py --out runs/mri_example
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "mri_example")
    p.add_argument("--n-scans", type=int, default=48, help="phantoms to make (the last --n-heldout are held out)")
    p.add_argument("--n-heldout", type=int, default=16, help="phantoms kept out of training (the perfect-generator reference)")
    p.add_argument("--size", type=int, default=32, help="phantom size (voxels per axis, multiple of 32)")
    p.add_argument("--spacing", type=float, default=6.0, help="phantom voxel size in mm")
    p.add_argument("--ae-steps", type=int, default=400, help="autoencoder training steps")
    p.add_argument("--train-steps", type=int, default=3000, help="MeanFlow training steps (configs/mri_example.yaml)")
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--figure", type=Path, help="also write a PNG of mid-slices, real vs generated (needs Pillow)")
    p.add_argument("--feature-net", type=Path, help="MedicalNet-style ResNet weights for FID (optional)")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


AE_CONFIG = dict(num_channels=[8, 16, 32], num_res_blocks=[1, 1, 1], norm_num_groups=8)   # 4 latent channels, 4x smaller


def stage(name, t0=[time.perf_counter()]):
    now = time.perf_counter()
    print(f"[{now - t0[0]:7.1f} s] {name}", flush=True)


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    from neuromf.mri.autoencoder import autoencoder_config, build_autoencoder, fit_autoencoder, load_autoencoder, save_autoencoder
    from neuromf.mri.encode import EncodeSettings, encoded_inputs, prepare_image, write_phantoms, main as encode_main
    from neuromf.mri.sample import main as sample_main
    from neuromf.metrics.volumes import pairwise_ms_ssim, volume_metrics, latent_mmd
    from neuromf.mri.autoencoder import decode_latents, encode_images
    out, timings = a.out, {}
    out.mkdir(parents=True, exist_ok=True)
    n_train = a.n_scans - a.n_heldout
    settings = ["--spacing", *[str(a.spacing)] * 3, "--image-size", *[str(a.size)] * 3, "--no-progress", "--threads", str(a.threads)]

    t = time.perf_counter()
    stage("1/6 phantoms")
    if not (out / "scans").is_dir():
        write_phantoms(out / "scans_tmp", a.n_scans, (a.size,) * 3, (a.spacing,) * 3)
        (out / "scans").mkdir(); (out / "heldout").mkdir()
        for i, f in enumerate(sorted((out / "scans_tmp").iterdir())): f.rename(out / ("scans" if i < n_train else "heldout") / f.name)
        (out / "scans_tmp").rmdir()
    timings["phantoms"] = time.perf_counter() - t

    t = time.perf_counter()
    stage(f"2/6 autoencoder: {a.ae_steps} steps (batch 2) of L1 + KL on the {n_train} training phantoms")
    cfg = autoencoder_config(**AE_CONFIG)
    es = EncodeSettings(spacing=(a.spacing,) * 3, image_size=(a.size,) * 3)
    if not (out / "autoencoder.pt").is_file():
        vols = torch.cat([prepare_image(f, es)[0] for f in sorted((out / "scans").iterdir())])
        torch.manual_seed(0)
        ae = build_autoencoder(cfg)
        losses = fit_autoencoder(ae, vols, steps=a.ae_steps, batch_size=2, lr=3e-3, progress=True)
        save_autoencoder(ae, out / "autoencoder.pt")
        (out / "autoencoder.yaml").write_text(json.dumps(cfg, indent=1))
        (out / "autoencoder_losses.json").write_text(json.dumps(losses))
    ae = load_autoencoder(out / "autoencoder.pt", out / "autoencoder.yaml")
    timings["autoencoder"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("3/6 neuromf-encode")
    code = encode_main(["--images", str(out / "scans"), "--out", str(out / "latents"), "--autoencoder", str(out / "autoencoder.pt"),
                        "--autoencoder-config", str(out / "autoencoder.yaml"), *settings])
    if code: sys.exit(f"neuromf-encode failed with exit code {code}")
    timings["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    stage(f"4/6 neuromf-train: {a.train_steps} steps, MAISI UNet (small preset) on standardised latents")
    run = out / "run"
    from neuromf.train_cli import main as train_main
    from neuromf.checkpoint import list_checkpoints
    done = list_checkpoints(run)
    if not done or done[-1][0] < a.train_steps:
        code = train_main(["--config", str(ROOT / "configs" / "mri_example.yaml"), "--out", str(run), *(["--resume"] if done else []),
                           f"data.latents_dir={(out / 'latents').resolve()}", f"training.steps={a.train_steps}", f"training.threads={a.threads}",
                           f"training.warmup_steps={min(20, a.train_steps)}", f"training.checkpoint_every={min(100, a.train_steps)}"])
        if code: sys.exit(f"neuromf-train failed with exit code {code}")
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    stage(f"5/6 neuromf-sample: {a.n_samples} samples, 1 step and 2 steps, EMA weights, decoded")
    for steps, folder in ((1, "samples"), (2, "samples_2step")):
        code = sample_main(["--run", str(run), "--n", str(a.n_samples), "--steps", str(steps), "--out", str(out / folder),
                            "--autoencoder", str(out / "autoencoder.pt"), "--seed", "0", "--no-progress", "--threads", str(a.threads)])
        if code: sys.exit(f"neuromf-sample failed with exit code {code}")
    timings["sample"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("6/6 evaluation")
    from neuromf.dashboards.volumes import read_latents, read_volume_folder
    real_v, _ = encoded_inputs(out / "latents")
    real_z, _ = read_latents(out / "latents", None)
    held_v = torch.cat([prepare_image(f, es)[0] for f in sorted((out / "heldout").iterdir())])
    gen_v = torch.from_numpy(read_volume_folder(out / "samples" / "volumes")[0])[:, None]
    gen_z, _ = read_latents(out / "samples" / "latents", None)
    gen2_v = torch.from_numpy(read_volume_folder(out / "samples_2step" / "volumes")[0])[:, None]
    gen2_z, _ = read_latents(out / "samples_2step" / "latents", None)
    with torch.no_grad():
        held_z = encode_images(ae, held_v)
        held_rec = decode_latents(ae, held_z)
        noise_z = torch.randn(gen_z.shape, generator=torch.Generator().manual_seed(1)) * real_z.std((0, 2, 3, 4), keepdim=True) + real_z.mean((0, 2, 3, 4), keepdim=True)
        noise_v = decode_latents(ae, noise_z)
    n = min(len(gen_z), len(held_z))
    rows = {
        "1-step samples (EMA)": volume_metrics(real_z, gen_z, real_v[:, 0], gen_v[:, 0], a.feature_net),
        "2-step samples (EMA)": volume_metrics(real_z, gen2_z, real_v[:, 0], gen2_v[:, 0], a.feature_net),
        "held-out real phantoms (a perfect generator)": volume_metrics(real_z, held_z[:n], real_v[:, 0], held_v[:n, 0], a.feature_net),
        "Gaussian latents, the data's channel mean/std (no model)": volume_metrics(real_z, noise_z[:n], real_v[:, 0], noise_v[:n, 0], a.feature_net),
    }
    recon = {"heldout_l1": (held_rec - held_v).abs().mean().item(),
             "heldout_ms_ssim_to_input": float(np.mean([pairwise_ms_ssim(torch.stack([held_v[i], held_rec[i]]))["ms_ssim"] for i in range(len(held_v))]))}
    timings["evaluate"] = time.perf_counter() - t
    result = {"rows": rows, "autoencoder_reconstruction": recon, "timings_s": timings,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}, "torch_threads": torch.get_num_threads()}
    (out / "example_metrics.json").write_text(json.dumps(result, indent=1))
    print(f"\nautoencoder on held-out phantoms: L1 {recon['heldout_l1']:.4f}, MS-SSIM(input, reconstruction) {recon['heldout_ms_ssim_to_input']:.4f}")
    print(f"{'set':64s} {'latent MMD':>11s} {'MS-SSIM':>8s} {'FID':>8s}")
    for name, m in rows.items():
        print(f"{name:64s} {m['mmd_latent']:11.5f} {m['ms_ssim_generated']:8.4f} {m.get('fid', float('nan')):8.3f}")
    print(f"MS-SSIM among the training phantoms: {rows['1-step samples (EMA)']['ms_ssim_real']:.4f}")
    print("wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    if a.figure: print(f"figure: {slices_png(real_v[:4, 0], gen_v[:4, 0], a.figure)}")
    print(f"written: {out}/samples/volumes/*.nii.gz, {out}/example_metrics.json")
    return 0


def slices_png(real: torch.Tensor, generated: torch.Tensor, path: Path, zoom: int = 4) -> Path:
    "A PNG grid: for each volume its mid axial, coronal and sagittal slices (RAS, neurological view); real row above generated."
    from PIL import Image
    def tiles(v):
        x, y, z = (s // 2 for s in v.shape)
        return [v[:, :, z].T.flip(0), v[:, y, :].T.flip(0), v[x, :, :].T.flip(0)]   # rows top to bottom = anterior/superior first
    rows = [torch.cat([t for v in vols for t in tiles(v) + [torch.full((v.shape[2], 2), 1.0)]], 1) for vols in (real, generated)]
    w = max(r.shape[1] for r in rows)
    grid = torch.cat([torch.nn.functional.pad(r, (0, w - r.shape[1])) for r in (rows[0], torch.ones(2, w), rows[1])], 0)
    img = Image.fromarray((grid.clamp(0, 1) * 255).to(torch.uint8).numpy()).resize((w * zoom, grid.shape[0] * zoom), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True); img.save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
