"Widget dashboards for JupyterLab: torus fidelity and angular KS uniformity of generated samples; real and generated 3-D volumes (hand-written re-exports)."
from .fidelity import TorusFidelityDashboard
from .angular_ks import AngularKSDashboard
from .volumes import VolumeDashboard

__all__ = ["TorusFidelityDashboard", "AngularKSDashboard", "VolumeDashboard"]
