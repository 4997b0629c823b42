"""Latents stored as files on disk (P3-T13): `.pt` and NIfTI latents in a folder, shape checks, cached per-channel
statistics, and MeanFlow training steps with the MAISI UNet on them; the volumetric torus through the same path."""
import json, os, time
import numpy as np
import pytest, torch
from neuromf.data.latents import LatentDataset, load_latent, save_latent, write_latent_folder, write_toroid_latents, STATS_FILE
from neuromf.data.toroid import ToroidConfig, ToroidDataset
from neuromf.losses.meanflow import meanflow_loss
from neuromf.models.maisi_unet import MAISIUNetWrapper
from neuromf.time_sampler import sample_t_r


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def maisi_like_latents(n, size=16, seed=0):
    "Stand-ins for MAISI latents: 4 channels with different offsets and scales, smooth-ish structure."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, size, size, size, generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1) * 3
    return x * torch.tensor([1.0, 0.5, 2.0, 0.8]).view(1, 4, 1, 1, 1) + torch.tensor([0.3, -1.0, 0.0, 2.0]).view(1, 4, 1, 1, 1)


def test_P3_T13_real_latent_smoke_test(tmp_path):
    lat = maisi_like_latents(6)
    write_latent_folder(lat[:3], tmp_path, ".pt")
    write_latent_folder(lat[3:], tmp_path, ".nii.gz", prefix="nifti")
    ds = LatentDataset(tmp_path, normalize=True)
    assert len(ds) == 6 and ds.shape == (4, 16, 16, 16) and not ds.stats_from_cache
    # files are read back exactly (sorted names: latent_* then nifti_*)
    raw = LatentDataset(tmp_path)
    assert torch.equal(raw.tensor(), lat)
    ref = lat.double()
    torch.testing.assert_close(raw.mean.double(), ref.mean((0, 2, 3, 4)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(raw.std.double(), ref.std((0, 2, 3, 4), correction=0), rtol=1e-5, atol=1e-6)
    assert raw.stats_from_cache and (tmp_path / STATS_FILE).is_file()
    # a MeanFlow training step on normalised latents from disk
    torch.manual_seed(0)
    model = MAISIUNetWrapper()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1):
        x = ds.batch(torch.randint(len(ds), (2,), generator=g))
        assert x.shape == (2, 4, 16, 16, 16) and abs(x.mean().item()) < 0.5
        e = torch.randn(x.shape, generator=g)
        t, r = sample_t_r(2, generator=g)
        z = (1 - t.view(-1, 1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1, 1) * e
        res = meanflow_loss(model, z, r, t, x, e, tangent="model")
        assert torch.isfinite(res.loss) and (res.raw_mf > 0).all()
        opt.zero_grad(); res.loss.backward(); opt.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_stats_cache_is_used_and_invalidated(tmp_path):
    lat = maisi_like_latents(3, size=8)
    write_latent_folder(lat, tmp_path)
    a = LatentDataset(tmp_path)
    cached = json.loads((tmp_path / STATS_FILE).read_text())
    assert cached["n_files"] == 3 and cached["shape"] == [4, 8, 8, 8] and len(cached["fingerprint"]) == 3
    assert LatentDataset(tmp_path).stats_from_cache
    # a changed file invalidates the cache
    time.sleep(0.01)
    save_latent(lat[0] * 2, tmp_path / "latent_00000.pt")
    b = LatentDataset(tmp_path)
    assert not b.stats_from_cache and not torch.allclose(a.std, b.std)
    assert not LatentDataset(tmp_path, use_cache=False).stats_from_cache


def test_bad_latent_files_are_named(tmp_path):
    write_latent_folder(maisi_like_latents(2, size=8), tmp_path)
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="cannot read latent file .*broken.nii.gz"): LatentDataset(tmp_path)
    os.remove(tmp_path / "broken.nii.gz")
    save_latent(torch.randn(4, 8, 8, 16), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide.pt has shape \(4, 8, 8, 16\), expected \(4, 8, 8, 8\)"): LatentDataset(tmp_path)
    os.remove(tmp_path / "wide.pt")
    bad = torch.randn(4, 8, 8, 8); bad[0, 0, 0, 0] = float("nan")
    save_latent(bad, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="nan.pt holds non-finite values"): LatentDataset(tmp_path)
    os.remove(tmp_path / "nan.pt")
    torch.save({"z": torch.randn(4, 8, 8, 8)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="dict.pt.*not a tensor"): LatentDataset(tmp_path)
    os.remove(tmp_path / "dict.pt")
    assert len(LatentDataset(tmp_path)) == 2
    with pytest.raises(ValueError, match="3 channels, expected 4"):
        LatentDataset(tmp_path, shape=(3, 8, 8, 8))
    with pytest.raises(IndexError): LatentDataset(tmp_path)[5]


def test_spatial_size_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no latent files"): LatentDataset(tmp_path)
    save_latent(torch.randn(4, 12, 16, 16), tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"spatial size \(12, 16, 16\) must be divisible by 8"): LatentDataset(tmp_path)
    assert LatentDataset(tmp_path, spatial_multiple=4).shape == (4, 12, 16, 16)


def test_nifti_layout_is_channels_last(tmp_path):
    "NIfTI latents are (X, Y, Z, C) on disk, as MAISI writes them, and (C, X, Y, Z) in memory."
    import nibabel as nib
    x = torch.randn(4, 8, 8, 16)
    save_latent(x, tmp_path / "a.nii.gz")
    img = nib.load(str(tmp_path / "a.nii.gz"))
    assert img.shape == (8, 8, 16, 4)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 2], x[2].numpy())
    assert torch.equal(load_latent(tmp_path / "a.nii.gz"), x)


def test_torus_folder_roundtrip(tmp_path):
    "The volumetric torus written as latent files reads back as the same volumes; projection recovers the points."
    cfg = ToroidConfig(mode="volumetric", spatial_size=8, n_samples=10, seed=3)
    paths = write_toroid_latents(cfg, tmp_path, ".nii.gz")
    assert len(paths) == 10 and all(p.name.startswith("torus_") for p in paths)
    torus, ds = ToroidDataset(cfg), LatentDataset(tmp_path)
    assert torch.equal(ds.tensor(), torus.tensor())
    torch.testing.assert_close(torus.to_points(ds.tensor().double()), torus.points, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="mode='r4'"): write_toroid_latents(ToroidConfig(), tmp_path / "r4")
