"""MRI path (issue 10): NIfTI scans -> MAISI latents (neuromf-encode) -> MeanFlow run (neuromf-train) -> one-step samples ->
decoded NIfTI (neuromf-sample), with MONAI's
real AutoencoderKlMaisi (small, randomly initialised, saved to a file and loaded through the same code a user's MAISI
weights go through); bad inputs give one-line errors naming what is wrong."""
import contextlib, io, json, os
from pathlib import Path
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from neuromf.config import load_config
from neuromf.data.latents import LatentDataset, load_latent
from neuromf.mri import encode as enc
from neuromf.mri import sample as smp
from neuromf.mri.autoencoder import autoencoder_config, build_autoencoder, load_autoencoder, save_autoencoder
from neuromf.mri.encode import EncodeSettings, encode_folder, prepare_image, reconstruct_folder, write_nifti, write_phantoms
from neuromf.train import RunFolder, train
from neuromf.train_cli import main as train_main

SMALL = autoencoder_config(num_channels=[8, 8, 8], num_res_blocks=[1, 1, 1], norm_num_groups=4)
SETTINGS = ["--spacing", "3", "3", "3", "--image-size", "32", "32", "32", "--no-progress"]


def run_cli(main, *argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "Phantoms, a small MAISI autoencoder in a file, the encoded latent folder, and a 2-step latent run."
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("mri")
    ae = build_autoencoder(SMALL)
    save_autoencoder(ae, root / "ae.pt"); (root / "ae.yaml").write_text(json.dumps(SMALL))
    write_phantoms(root / "scans", 4, (32, 32, 32), (3.0, 3.0, 3.0))
    code, out, err = run_cli(enc.main, "--images", root / "scans", "--out", root / "latents", "--autoencoder", root / "ae.pt",
                             "--autoencoder-config", root / "ae.yaml", *SETTINGS)
    assert code == 0, err
    (root / "train.yaml").write_text(f"data:\n  source: latents\n  latents_dir: {root / 'latents'}\n  normalize: true\n"
                                     "model:\n  arch: maisi_unet\ntraining:\n  steps: 2\n  batch_size: 2\n  warmup_steps: 1\n"
                                     "  checkpoint_every: 1\n  threads: 1\n")
    code, out, err = run_cli(train_main, "--config", root / "train.yaml", "--out", root / "run", "--no-progress")
    assert code == 0, err
    return root, load_autoencoder(root / "ae.pt", root / "ae.yaml"), LatentDataset(root / "latents", normalize=True)


def test_encoder_output_is_bit_equal_to_monai_autoencoder(setup, tmp_path):
    root, ae, _ = setup
    for name in ("phantom_000", "phantom_003"):
        x, meta = prepare_image(root / f"scans/{name}.nii.gz", EncodeSettings(spacing=(3, 3, 3), image_size=(32, 32, 32)))
        with torch.no_grad(): direct = ae.encode(x)[0][0]
        assert torch.equal(load_latent(root / f"latents/{name}.pt"), direct)
    # NIfTI latents: the same values, with the latent-grid affine, readable by LatentDataset (what neuromf-train reads)
    encode_folder(root / "scans", tmp_path / "nii", ae, EncodeSettings(spacing=(3, 3, 3), image_size=(32, 32, 32), suffix=".nii.gz"), progress=False)
    assert torch.equal(load_latent(tmp_path / "nii/phantom_003.nii.gz"), load_latent(root / "latents/phantom_003.pt"))
    side = json.loads((tmp_path / "nii/phantom_003.json").read_text())
    assert np.allclose(nib.load(tmp_path / "nii/phantom_003.nii.gz").affine, side["latent_affine"], atol=1e-5)
    assert torch.equal(LatentDataset(tmp_path / "nii").tensor(), LatentDataset(root / "latents").tensor())
    # sliding-window encoding equals MONAI's sliding_window_inference around the same encoder
    settings = EncodeSettings(spacing=(3, 3, 3), roi_size=(32, 32, 32), overlap=0.0)
    write_phantoms(tmp_path / "big", 1, (64, 64, 64), (3.0, 3.0, 3.0))
    encode_folder(tmp_path / "big", tmp_path / "latents_sw", ae, settings, progress=False)
    x, _ = prepare_image(tmp_path / "big/phantom_000.nii.gz", settings)
    assert x.shape[2:] == (64, 64, 64)
    with torch.no_grad(): ref = sliding_window_inference(x, [32, 32, 32], 1, lambda v: ae.encode(v)[0], overlap=0.0, mode="gaussian")[0]
    assert torch.equal(load_latent(tmp_path / "latents_sw/phantom_000.pt"), ref)


def test_nifti_in_latent_decode_nifti_out_keeps_shape_orientation_affine(setup, tmp_path):
    root, ae, _ = setup
    # an asymmetric scan, stored with swapped and flipped axes (not RAS) and a shape that needs padding
    a = np.zeros((40, 36, 34), np.float32); a[5:30, 4:20, 3:25] = 0.6; a[30:36, 25:33, 20:30] = 1.0
    aff = np.array([[0, -1.0, 0, 12], [-1.0, 0, 0, 30], [0, 0, 1.0, -20], [0, 0, 0, 1]])
    write_nifti(a, aff, tmp_path / "scans/asym.nii.gz")
    encode_folder(tmp_path / "scans", tmp_path / "latents", ae, EncodeSettings(spacing=(1, 1, 1)), progress=False)
    side = json.loads((tmp_path / "latents/asym.json").read_text())
    assert side["latent_shape"] == [16, 16, 16] and side["image_shape"] == [64, 64, 64]
    assert nib.aff2axcodes(np.array(side["affine"])) == ("R", "A", "S")
    back = nib.load(reconstruct_folder(tmp_path / "latents", ae, tmp_path / "recon", progress=False)[0])
    assert back.shape == a.shape and np.allclose(back.affine, aff, atol=1e-5)
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(aff)
    # the pattern's direction: with an autoencoder that is exact on 4x4x4 blocks, the scan comes back voxel for voxel
    class Block(torch.nn.Module):
        neuromf_config = {"num_channels": [1, 1, 1], "latent_channels": 4}
        def encode(self, x): z = torch.nn.functional.avg_pool3d(x, 4).repeat(1, 4, 1, 1, 1); return z, z
        def decode_stage_2_outputs(self, z): return torch.nn.functional.interpolate(z[:, :1], scale_factor=4, mode="nearest")
    b = np.zeros((32, 64, 32), np.float32); b[4:12, 8:40, 4:28] = 0.5; b[20:28, 44:56, 12:16] = 1.0
    write_nifti(b, aff, tmp_path / "blocks/scans/b.nii.gz")
    encode_folder(tmp_path / "blocks/scans", tmp_path / "blocks/latents", Block(), EncodeSettings(spacing=(1, 1, 1)), progress=False)
    out = nib.load(reconstruct_folder(tmp_path / "blocks/latents", Block(), tmp_path / "blocks/recon", progress=False)[0])
    assert np.array_equal(out.get_fdata(dtype=np.float32), b) and np.array_equal(out.get_fdata(dtype=np.float32)[::-1], b) is False


def test_sampling_and_decoding_equal_one_step_formula_then_decoder(setup, tmp_path):
    root, ae, ds = setup
    code, out, err = run_cli(smp.main, "--run", root / "run", "--n", 3, "--out", tmp_path / "s", "--autoencoder", root / "ae.pt",
                             "--seed", 7, "--no-progress")
    assert code == 0, err
    e = torch.randn((3, 4, 8, 8, 8), generator=torch.Generator().manual_seed(7))
    _, ema = RunFolder(root / "run").load_models()
    with torch.no_grad():
        z = ds.denormalise(e - ema(e, 0.0, 1.0))
        for i in range(3):
            assert torch.allclose(torch.load(tmp_path / f"s/latents/sample_{i:04d}.pt"), z[i], atol=1e-6)
            img = nib.load(tmp_path / f"s/volumes/sample_{i:04d}.nii.gz")
            ref = ae.decode_stage_2_outputs(z[i:i + 1])[0, 0]
            assert torch.allclose(torch.from_numpy(img.get_fdata(dtype=np.float32)), ref, atol=1e-5)
            assert img.header.get_zooms() == (3.0, 3.0, 3.0) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    # seeded and repeatable: a second folder is identical; raw weights and 2 steps give other samples
    run_cli(smp.main, "--run", root / "run", "--n", 3, "--out", tmp_path / "t", "--autoencoder", root / "ae.pt", "--seed", 7, "--no-progress")
    assert np.array_equal(nib.load(tmp_path / "t/volumes/sample_0002.nii.gz").get_fdata(), nib.load(tmp_path / "s/volumes/sample_0002.nii.gz").get_fdata())
    run_cli(smp.main, "--run", root / "run", "--n", 3, "--out", tmp_path / "r", "--seed", 7, "--raw", "--steps", 2, "--no-progress")
    assert not torch.equal(torch.load(tmp_path / "r/latents/sample_0000.pt"), torch.load(tmp_path / "s/latents/sample_0000.pt"))
    info = json.loads((tmp_path / "r/sample_info.json").read_text())
    assert (info["weights"], info["steps"], info["seed"]) == ("raw", 2, 7)


def test_interrupted_encode_resumes_writing_each_latent_once(setup, tmp_path, monkeypatch):
    root, ae, _ = setup
    write_phantoms(tmp_path / "scans", 5, (32, 32, 32), (3.0, 3.0, 3.0))
    writes, real_save = {}, enc._save_latent_atomic
    def counting(z, path, affine):
        writes[path.name] = writes.get(path.name, 0) + 1
        if sum(writes.values()) == 3: raise KeyboardInterrupt          # killed while writing the third latent
        real_save(z, path, affine)
    monkeypatch.setattr(enc, "_save_latent_atomic", counting)
    s = EncodeSettings(spacing=(3, 3, 3), image_size=(32, 32, 32))
    with pytest.raises(KeyboardInterrupt): encode_folder(tmp_path / "scans", tmp_path / "latents", ae, s, progress=False)
    done = sorted(p.name for p in (tmp_path / "latents").glob("*.pt"))
    assert done == ["phantom_000.pt", "phantom_001.pt"]
    assert not [p for p in (tmp_path / "latents").iterdir() if p.name.startswith(".")], "no temporary file left behind"
    mtimes = {n: (tmp_path / "latents" / n).stat().st_mtime_ns for n in done}
    writes.clear(); writes["_offset"] = -10                                # no more interruptions
    summary = encode_folder(tmp_path / "scans", tmp_path / "latents", ae, s, progress=False)
    writes.pop("_offset")
    assert summary.existing == ["phantom_000", "phantom_001"] and summary.encoded == ["phantom_002", "phantom_003", "phantom_004"]
    assert writes == {f"phantom_00{i}.pt": 1 for i in (2, 3, 4)}            # each remaining latent written exactly once
    assert {n: (tmp_path / "latents" / n).stat().st_mtime_ns for n in done} == mtimes
    assert len(LatentDataset(tmp_path / "latents")) == 5


def test_corrupt_scan_is_named_and_skipped(setup, tmp_path):
    root, _, _ = setup
    write_phantoms(tmp_path / "scans", 2, (32, 32, 32), (3.0, 3.0, 3.0))
    (tmp_path / "scans/zz_corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not a NIfTI file")
    truncated = (tmp_path / "scans/phantom_001.nii.gz").read_bytes()[:300]
    (tmp_path / "scans/truncated.nii.gz").write_bytes(truncated)
    code, out, err = run_cli(enc.main, "--images", tmp_path / "scans", "--out", tmp_path / "latents", "--autoencoder", root / "ae.pt",
                             "--autoencoder-config", root / "ae.yaml", *SETTINGS)
    assert code == 1
    assert "skipped zz_corrupt.nii.gz: cannot read zz_corrupt.nii.gz" in err and "skipped truncated.nii.gz" in err
    assert out.strip().splitlines()[-1].startswith("encoded 2 of 4 scans") and "2 failed: truncated, zz_corrupt" in out
    assert sorted(p.name for p in (tmp_path / "latents").glob("*.pt")) == ["phantom_000.pt", "phantom_001.pt"]


def _one_line_error(main, *argv, contains):
    code, out, err = run_cli(main, *argv)
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert contains in err, err
    return err


def test_encode_bad_inputs_are_one_line_errors(setup, tmp_path):
    root, _, _ = setup
    base = ["--out", tmp_path / "out", "--no-progress"]
    _one_line_error(enc.main, "--images", root / "scans", "--autoencoder", tmp_path / "missing.pt", *base,
                    contains="autoencoder weights file not found")
    err = _one_line_error(enc.main, "--images", root / "scans", "--autoencoder", root / "ae.pt", *base,     # small weights, MAISI architecture
                          contains="do not fit the network")
    assert "shape mismatch" in err and "encoder.blocks.0.conv.conv.weight" in err and "--autoencoder-config" in err
    other = {**SMALL, "num_res_blocks": [2, 2, 2]}
    (tmp_path / "other.yaml").write_text(json.dumps(other))
    _one_line_error(enc.main, "--images", root / "scans", "--autoencoder", root / "ae.pt", "--autoencoder-config", tmp_path / "other.yaml",
                    *base, contains="missing key(s) (encoder.blocks.2")
    (tmp_path / "empty").mkdir(); (tmp_path / "empty/readme.txt").write_text("no scans")
    _one_line_error(enc.main, "--images", tmp_path / "empty", "--autoencoder", root / "ae.pt", *base, contains="no NIfTI images")
    _one_line_error(enc.main, "--images", tmp_path / "nowhere", "--autoencoder", root / "ae.pt", *base, contains="image folder not found")
    (tmp_path / "bad.yaml").write_text("latent_chanels: 4\n")
    _one_line_error(enc.main, "--images", root / "scans", "--autoencoder", root / "ae.pt", "--autoencoder-config", tmp_path / "bad.yaml",
                    *base, contains="unknown key(s) ['latent_chanels']")
    _one_line_error(enc.main, "--images", root / "scans", "--autoencoder", root / "ae.pt", "--image-size", 40, 32, 32, *base,
                    contains="divisible by 32")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    _one_line_error(enc.main, "--images", root / "scans", "--autoencoder", tmp_path / "junk.pt", *base, contains="cannot read autoencoder weights file")
    # resuming into a folder encoded differently
    _one_line_error(enc.main, "--images", root / "scans", "--out", root / "latents", "--autoencoder", root / "ae.pt", "--autoencoder-config",
                    root / "ae.yaml", "--spacing", 2, 2, 2, "--no-progress", contains="holds latents encoded differently (spacing")


def test_volume_too_small_for_the_autoencoder(setup, tmp_path):
    root, _, _ = setup
    write_nifti(np.random.rand(20, 40, 40).astype(np.float32), np.diag([1.0, 1, 1, 1]), tmp_path / "scans/thin.nii.gz")
    write_phantoms(tmp_path / "scans", 1, (32, 32, 32), (1.0, 1.0, 1.0))
    code, out, err = run_cli(enc.main, "--images", tmp_path / "scans", "--out", tmp_path / "latents", "--autoencoder", root / "ae.pt",
                             "--autoencoder-config", root / "ae.yaml", "--image-size", 32, 32, 32, "--no-progress")
    assert code == 1
    assert "skipped thin.nii.gz: thin.nii.gz is too small for the autoencoder: (20, 40, 40) voxels" in err
    assert "every axis needs >= 32" in err and "1 failed: thin" in out


def test_sample_bad_inputs_are_one_line_errors(setup, tmp_path):
    root, _, _ = setup
    base = ["--out", tmp_path / "out", "--no-progress"]
    _one_line_error(smp.main, "--run", tmp_path / "nowhere", *base, contains="not a NeuroMF run folder")
    _one_line_error(smp.main, "--run", root / "latents", *base, contains="not a NeuroMF run folder (no config.yaml)")
    torus = root / "torus_run"
    if not torus.exists():
        train(load_config(overrides=["training.steps=1", "training.batch_size=4", "training.warmup_steps=1", "training.threads=1"]),
              torus, progress=False)
    _one_line_error(smp.main, "--run", torus, *base, contains="no latent_stats.json: not a run trained on latents")
    _one_line_error(smp.main, "--run", root / "run", "--autoencoder", tmp_path / "missing.pt", *base, contains="autoencoder weights file not found")
    _one_line_error(smp.main, "--run", root / "run", "--autoencoder", root / "ae.pt", "--autoencoder-config", tmp_path / "none.yaml", *base,
                    contains="autoencoder config file not found")
    three = build_autoencoder({**SMALL, "latent_channels": 3}); save_autoencoder(three, tmp_path / "ae3.pt")
    (tmp_path / "ae3.yaml").write_text(json.dumps({**SMALL, "latent_channels": 3}))
    _one_line_error(smp.main, "--run", root / "run", "--autoencoder", tmp_path / "ae3.pt", "--autoencoder-config", tmp_path / "ae3.yaml",
                    *base, contains="the autoencoder has 3 latent channels but the run's latents have 4")
    _one_line_error(smp.main, "--run", root / "run", "--steps", 0, *base, contains="steps=0 must be an int >= 1")
    _one_line_error(smp.main, "--run", root / "run", "--n", "many", *base, contains="argument --n: invalid int value")
    _one_line_error(smp.main, *base, contains="required: --run")


def _figure_digest(figs: dict) -> str:
    "A digest of every trace's z, x and y values (cheap enough to take after each control change)."
    import hashlib
    h = hashlib.sha1()
    for fig in figs.values():
        for t in fig.data:
            for k in ("z", "x", "y"):
                v = getattr(t, k, None)
                if v is None: continue
                try: h.update(np.asarray(v, dtype=float).tobytes())
                except (TypeError, ValueError): h.update(repr(tuple(v)).encode())
    return h.hexdigest()


def test_volume_dashboard_from_run_and_folders_every_control_redraws(setup, tmp_path):
    from neuromf.dashboards import VolumeDashboard
    root, ae, _ = setup
    d = VolumeDashboard.from_run(root / "run", autoencoder=root / "ae.pt", n=3)
    assert d.sets.count("generated") == 3 and d.sets.count("real") == 4
    assert d.sets.volumes["generated"].shape == (3, 32, 32, 32) and d.sets.spacing == (3.0, 3.0, 3.0)
    z, _, _ = smp.sample_latents(root / "run", n=3)
    assert np.allclose(d.sets.latents["generated"], z.numpy())
    assert "mmd_latent" in d.metrics and "fid_note" in d.metrics
    smp.sample_run(root / "run", tmp_path / "samples", n=3, autoencoder=ae, progress=False)
    f = VolumeDashboard.from_folders(tmp_path / "samples", real=root / "latents")
    assert np.allclose(f.sets.volumes["generated"], d.sets.volumes["generated"], atol=1e-5)
    assert f.sets.names["real"] == ["phantom_000", "phantom_001", "phantom_002", "phantom_003"]
    for dash in (d, f):
        figs = dash.figures
        def state(): return _figure_digest(figs)
        for name, value in [("slice_x", 2), ("slice_y", 30), ("slice_z", 5), ("sample", 2), ("real_sample", 3), ("view", "latent:3")]:
            before = state(); dash.controls[name].value = value
            assert state() != before, name
