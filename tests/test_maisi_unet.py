"""MAISI UNet wrapper: dual time conditioning (P3-T1), shapes (P3-T2), step-0 equivalence with MONAI, checkpoint
loading, configuration errors, and the full rflow preset at a reduced size (P3-T11, slow)."""
import dataclasses
import pytest, torch
from torch import nn
from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi
from neuromf.models.maisi_unet import (MAISIUNetConfig, MAISIUNetWrapper, from_maisi_checkpoint, load_maisi_weights_,
                                       reinit_zero_layers_, zero_initialised_layers, GroupNormFP32)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def plain_monai(cfg: MAISIUNetConfig) -> DiffusionModelUNetMaisi:
    return DiffusionModelUNetMaisi(spatial_dims=cfg.spatial_dims, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                                   num_res_blocks=cfg.num_res_blocks, num_channels=cfg.num_channels,
                                   attention_levels=cfg.attention_levels, norm_num_groups=cfg.norm_num_groups,
                                   norm_eps=cfg.norm_eps, resblock_updown=cfg.resblock_updown,
                                   num_head_channels=cfg.num_head_channels, include_fc=cfg.include_fc)


def live_unet(cfg=None, h_std=0.0):
    "A wrapper with MONAI's zero layers re-initialised (non-trivial output); h-embedding last layer ~ N(0, h_std)."
    m = MAISIUNetWrapper(cfg or MAISIUNetConfig())
    reinit_zero_layers_(m)
    if m.h_embed is not None:
        nn.init.normal_(m.h_embed[2].weight, std=h_std) if h_std else nn.init.zeros_(m.h_embed[2].weight)
        nn.init.zeros_(m.h_embed[2].bias)
    return m


@pytest.mark.parametrize("mode", ["t_h", "r_t", "h"])
def test_P3_T1_unet_dual_time_conditioning(mode):
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig(h_embed_mode=mode), h_std=0.05)
    z, t = torch.randn(2, 4, 8, 8, 8), torch.tensor([0.6, 0.9])
    with torch.no_grad():
        a, b = m(z, torch.tensor([0.1, 0.2]), t), m(z, torch.tensor([0.5, 0.9]), t)
    assert (a - b).abs().max() > 1e-4 * a.abs().max(), "output must change with r at fixed t"
    with torch.no_grad():  # and with t at fixed h = t - r
        c = m(z, torch.tensor([0.0, 0.0]), torch.tensor([0.5, 0.7]))
        d = m(z, torch.tensor([0.1, 0.2]), torch.tensor([0.6, 0.9]))
    assert (mode == "h") == torch.allclose(c, d)


@pytest.mark.parametrize("mode", ["t_h", "r_t"])
def test_step0_equals_monai(mode):
    "With the h-embedding zero-initialised the wrapper is MONAI's network, bit for bit, whatever r."
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig(h_embed_mode=mode))
    ref = plain_monai(m.config); ref.load_state_dict(m.unet.state_dict())
    z, t = torch.randn(2, 4, 16, 16, 16), torch.tensor([0.25, 1.0])
    with torch.no_grad():
        out = m(z, torch.tensor([0.0, 0.5]), t)
        assert out.abs().max() > 0
        assert torch.equal(out, ref(z, t))
        assert torch.equal(out, m(z, t, t))
    assert list(m.unet.state_dict()) == list(ref.state_dict())   # fp32 GroupNorm keeps MONAI's keys
    assert sum(isinstance(x, GroupNormFP32) for x in m.modules()) == sum(isinstance(x, nn.GroupNorm) for x in ref.modules())


def test_zero_init_fresh_wrapper():
    m = MAISIUNetWrapper()
    names = zero_initialised_layers(m)
    assert "unet.out.2.conv" in names and "h_embed.2" in names
    assert all(n.endswith("conv2.conv") for n in names if n not in ("unet.out.2.conv", "h_embed.2"))
    with torch.no_grad(): assert m(torch.randn(1, 4, 8, 8, 8), 0.2, 0.7).abs().max() == 0


@pytest.mark.parametrize("shape", [(1, 4, 8, 8, 8), (3, 4, 16, 8, 24)])
@pytest.mark.parametrize("prediction_type", ["u", "x"])
def test_P3_T2_output_shape_matches_input(shape, prediction_type):
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig(prediction_type=prediction_type))
    z = torch.randn(shape)
    with torch.no_grad(): u = m(z, 0.2, 0.8)
    assert u.shape == z.shape and u.dtype == z.dtype and torch.isfinite(u).all()
    with torch.no_grad(): assert m.double()(z.double(), 0.2, 0.8).dtype == torch.float64


def test_bad_inputs_and_configs():
    m = MAISIUNetWrapper()
    with pytest.raises(ValueError, match="spatial size 20 .* must be divisible by 8"): m(torch.randn(1, 4, 16, 20, 16), 0.0, 1.0)
    with pytest.raises(ValueError, match="in_channels=4"): m(torch.randn(1, 2, 16, 16, 16), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"shape \(B, 4, S, S, S\)"): m(torch.randn(1, 4, 16, 16), 0.0, 1.0)
    with pytest.raises(ValueError, match="norm_num_groups=3"): MAISIUNetConfig(norm_num_groups=3)
    with pytest.raises(ValueError, match="h_embed_mode='tr'"): MAISIUNetConfig(h_embed_mode="tr")
    with pytest.raises(ValueError, match="time_scale=0"): MAISIUNetConfig(time_scale=0)
    with pytest.raises(ValueError, match="prediction_type='v'"): MAISIUNetConfig(prediction_type="v")
    with pytest.raises(ValueError, match="attention_levels"): MAISIUNetConfig(attention_levels=(False, True))
    # build_model's use: dataclasses.replace keeps validation
    cfg = dataclasses.replace(MAISIUNetConfig.rflow(), prediction_type="x", t_min=0.1)
    assert cfg.num_channels == (64, 128, 256, 512) and cfg.prediction_type == "x" and cfg.norm_num_groups == 32


def test_presets_sizes():
    with torch.device("meta"):
        small, big = MAISIUNetWrapper(), MAISIUNetWrapper(MAISIUNetConfig.rflow())
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(small) < 1e6 and 175e6 < n(big) < 185e6
    assert len(list(big.parameters())) == 434          # the seed report's count: MAISI's 430 + the h-embedding's 4


def test_time_scale_is_applied():
    torch.manual_seed(0)
    m = live_unet()
    m1000 = MAISIUNetWrapper(dataclasses.replace(m.config, time_scale=1000.0)); m1000.load_state_dict(m.state_dict())
    z, t = torch.randn(1, 4, 8, 8, 8), torch.tensor([0.3])
    ref = plain_monai(m.config); ref.load_state_dict(m.unet.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m1000(z, t, t), ref(z, 1000 * t))
        torch.testing.assert_close(m(z, t, t), ref(z, t))


def test_maisi_checkpoint_loading(tmp_path):
    "A MAISI state dict file loads; only the new keys are missing; sign and time scale are converted."
    torch.manual_seed(3)
    cfg = MAISIUNetConfig()
    maisi = plain_monai(cfg); reinit_zero_layers_(maisi)
    path = tmp_path / "diff_unet_ckpt.pt"
    torch.save(maisi.state_dict(), path)
    w = from_maisi_checkpoint(path, cfg)
    assert w.config.time_scale == 1000.0 and w.prediction_type == "u"
    fresh = MAISIUNetWrapper(dataclasses.replace(cfg, time_scale=1000.0))
    missing = load_maisi_weights_(fresh, {"unet_state_dict": maisi.state_dict()})   # MAISI's released layout
    assert sorted(missing) == ["h_embed.0.bias", "h_embed.0.weight", "h_embed.2.bias", "h_embed.2.weight"]
    z, t, r = torch.randn(2, 4, 16, 16, 16), torch.tensor([0.2, 0.95]), torch.tensor([0.0, 0.5])
    with torch.no_grad():
        v_maisi = maisi(z, 1000 * t)                  # MAISI's velocity x - e at timesteps T = 1000 t
        torch.testing.assert_close(w(z, r, t), -v_maisi)
        torch.testing.assert_close(fresh(z, r, t), -v_maisi)
        e = torch.randn(1, 4, 16, 16, 16)
        # one-step sample = MAISI's single Euler step from T = 1000 to 0: x = e + v * 1000 / 1000
        torch.testing.assert_close(e - w(e, 0.0, 1.0), e + maisi(e, torch.tensor([1000.0])))


def test_maisi_checkpoint_errors(tmp_path):
    cfg = MAISIUNetConfig()
    sd = plain_monai(cfg).state_dict()
    with pytest.raises(ValueError, match="unexpected keys \\['unet.spacing_layer.0.weight'\\]"):
        from_maisi_checkpoint({**sd, "spacing_layer.0.weight": torch.zeros(2)}, cfg)
    with pytest.raises(ValueError, match="missing keys \\['unet.conv_in.conv.weight'\\]"):
        from_maisi_checkpoint({k: v for k, v in sd.items() if k != "conv_in.conv.weight"}, cfg)
    with pytest.raises(ValueError, match="shape mismatches"):
        from_maisi_checkpoint(sd, MAISIUNetConfig(num_channels=(8, 16, 32, 32)))
    with pytest.raises(ValueError, match="prediction_type='x'"):
        from_maisi_checkpoint(sd, dataclasses.replace(cfg, prediction_type="x"))
    with pytest.raises(ValueError, match="h_embed_mode='h'"):
        from_maisi_checkpoint(sd, dataclasses.replace(cfg, h_embed_mode="h"))
    with pytest.raises(ValueError, match="time_scale=1.0"):
        load_maisi_weights_(MAISIUNetWrapper(cfg), sd)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        from_maisi_checkpoint(tmp_path / "nowhere.pt", cfg)


@pytest.mark.slow
def test_P3_T11_full_size_forward_pass():
    "MAISI's rflow network (179 M parameters) through the wrapper at a reduced 4 x 16^3 on CPU."
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = live_unet(MAISIUNetConfig.rflow())      # MONAI's zero layers re-initialised, h-embedding still zero
    z = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        u = m(z, 0.3, 0.8)
        ref = plain_monai(m.config); ref.load_state_dict(m.unet.state_dict())
        torch.testing.assert_close(u, ref(z, torch.tensor([0.8])))
    assert u.shape == z.shape and torch.isfinite(u).all()
    with pytest.raises(ValueError, match="divisible by 8"): m(torch.randn(1, 4, 12, 16, 16), 0.3, 0.8)
