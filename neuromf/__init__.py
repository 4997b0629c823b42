"NeuroMF: MeanFlow one-step generative models (MF, iMF, pMF) in PyTorch."
__version__ = "0.1.0"

# Public names, re-exported lazily so `import neuromf` stays light (monai and plotly load on first use).
_EXPORTS = {
    "neuromf.core": ["as_time_tensor", "time_view", "check_times", "check_finite"],
    "neuromf.data.toroid": ["ToroidConfig", "ToroidDataset", "TorusEmbedding", "torus_point", "torus_angles"],
    "neuromf.time_sampler": ["sample_logit_normal", "sample_r_given_t", "sample_t_r"],
    "neuromf.losses.lp": ["lp_loss"],
    "neuromf.models.prediction": ["MeanFlowModel", "velocity_from_x_prediction"],
    "neuromf.models.mlp": ["MeanFlowMLP"],
    "neuromf.jvp": ["compute_meanflow_jvp", "JVP_STRATEGIES"],
    "neuromf.losses.meanflow": ["meanflow_loss", "flow_matching_loss", "MeanFlowLossResult", "adaptive_weight"],
    "neuromf.sampling": ["sample_one_step", "sample_multi_step", "sample_euler"],
    "neuromf.ema": ["EMA"],
    "neuromf.metrics.torus": ["torus_metrics", "torus_distance", "exact_one_step_map"],
    "neuromf.models.maisi_unet": ["MAISIUNetConfig", "MAISIUNetWrapper", "from_maisi_checkpoint"],
    "neuromf.data.latents": ["LatentDataset", "load_latent", "save_latent", "write_latent_folder", "write_toroid_latents"],
    "neuromf.model_check": ["check_model", "ModelCheckError", "ModelCheckReport"],
    "neuromf.sweep": ["SweepSpec", "run_sweep"],
    "neuromf.mri.autoencoder": ["MAISI_AUTOENCODER", "autoencoder_config", "build_autoencoder", "load_autoencoder", "save_autoencoder",
                                "encode_images", "decode_latents", "fit_autoencoder"],
    "neuromf.mri.encode": ["EncodeSettings", "encode_folder", "prepare_image", "image_transforms", "brain_phantom", "write_phantoms",
                           "write_nifti", "reconstruct_folder", "encoded_inputs"],
    "neuromf.mri.sample": ["sample_latents", "sample_run", "read_latent_stats"],
    "neuromf.metrics.volumes": ["latent_mmd", "pairwise_ms_ssim", "load_feature_net", "medicalnet_features", "fid", "volume_metrics"],
    "neuromf.oracle": ["exact_velocity", "exact_flow", "exact_mean_velocity", "sample_path", "ExactMeanFlow", "VelocityProbe",
                       "sampling_error", "oracle_metrics"],
    "neuromf.dashboards": ["TorusFidelityDashboard", "AngularKSDashboard", "VelocityErrorDashboard", "VolumeDashboard"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = list(_WHERE)

def __getattr__(name):
    if name in _WHERE:
        import importlib
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neuromf' has no attribute {name!r}")

def __dir__(): return sorted(list(globals()) + __all__)
