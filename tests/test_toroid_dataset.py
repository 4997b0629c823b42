import math
import pytest, torch
from neuromf.data.toroid import ToroidConfig, ToroidDataset, TorusEmbedding, torus_point, torus_angles


@pytest.mark.parametrize("cfg,shape", [
    (ToroidConfig(n_samples=500), (4,)),
    (ToroidConfig(n_samples=500, ambient_dim=32, seed=2), (32,)),
    (ToroidConfig(n_samples=6, mode="volumetric", spatial_size=32), (4, 32, 32, 32)),
])
def test_P2_T1_dataset_valid(cfg, shape):
    ds = ToroidDataset(cfg)
    assert len(ds) == cfg.n_samples
    xs = torch.stack([ds[i] for i in range(min(len(ds), 50))])
    assert xs.shape[1:] == shape and xs.dtype == torch.float32
    assert torch.isfinite(xs).all()
    # exact inverse: data -> torus point -> the angles it was made from
    assert torch.allclose(ds.to_angles(xs.double()), ds.angles[: len(xs)], atol=1e-5)
    assert ds.embedding.residual(xs.double()).max() < 1e-3


def test_angles_are_uniform_and_seeded():
    a = ToroidDataset(ToroidConfig(n_samples=2000, seed=5)).angles
    b = ToroidDataset(ToroidConfig(n_samples=2000, seed=5)).angles
    assert torch.equal(a, b)
    assert a.min() >= -math.pi and a.max() < math.pi
    assert abs(a.mean().item()) < 0.1


def test_volumetric_projection_recovers_point_and_residual():
    emb = TorusEmbedding(ToroidConfig(mode="volumetric", spatial_size=8))
    p = torus_point(torch.tensor([[0.4, -1.3]], dtype=torch.float64))
    x = emb.embed(p)
    off = torch.randn_like(x)
    off = off - emb.embed(emb.project(off))          # orthogonal to the span
    assert torch.allclose(emb.project(x + off), p, atol=1e-10)
    assert torch.allclose(emb.residual(x + off), off.flatten(1).norm(dim=1), atol=1e-8)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(major_radius=-1.0), "major_radius=-1.0"), (dict(minor_radius=0.0), "minor_radius=0.0"),
    (dict(mode="sphere"), "mode='sphere'"), (dict(n_samples=-3), "n_samples=-3"),
    (dict(ambient_dim=2), "ambient_dim=2"), (dict(mode="volumetric", spatial_size=1), "spatial_size=1"),
    (dict(n_samples=2.5), "n_samples=2.5"), (dict(minor_radius=4.0), "minor_radius=4.0"),
])
def test_bad_config_names_field(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        ToroidConfig(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="last dimension 4"):
        torus_angles(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        TorusEmbedding(ToroidConfig()).project(torch.zeros(2, 6))
