"""One training code path for torus volumes in memory and latent files on disk."""
import torch
from neuromf.config import load_config
from neuromf.data.latents import LatentDataset, write_toroid_latents
from neuromf.data.toroid import ToroidDataset
from neuromf.train import train


def test_training_on_a_latent_folder_matches_in_memory_torus(tmp_path):
    cfg = load_config(overrides=["data.mode=volumetric", "data.spatial_size=8", "data.n_samples=32", "model.hidden_dim=32",
                                 "model.n_hidden=2", "training.steps=100", "training.batch_size=16", "training.log_every=10",
                                 "training.warmup_steps=3", "training.threads=1"])
    write_toroid_latents(cfg.data, tmp_path / "latents")
    from_files = train(cfg, progress=False, dataset=LatentDataset(tmp_path / "latents"))
    in_memory = train(cfg, progress=False, dataset=ToroidDataset(cfg.data))
    assert from_files.log == in_memory.log                      # bit-identical batches, identical run
    assert from_files.log[-1]["raw"] < from_files.log[0]["raw"]
    for a, b in zip(from_files.model.parameters(), in_memory.model.parameters()): assert torch.equal(a, b)


def test_shape_mismatch_is_named(tmp_path):
    cfg = load_config(overrides=["data.mode=volumetric", "data.spatial_size=8", "data.n_samples=4"])
    write_toroid_latents(cfg.data, tmp_path / "latents")
    wrong = load_config(overrides=["data.mode=volumetric", "data.spatial_size=16", "training.steps=2", "training.warmup_steps=1", "training.batch_size=2"])
    import pytest
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 8\).*\(4, 16, 16, 16\)"):
        train(wrong, progress=False, dataset=LatentDataset(tmp_path / "latents"))
