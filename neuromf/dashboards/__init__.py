"Widget dashboards for JupyterLab: torus fidelity and angular KS uniformity of generated samples (hand-written re-exports)."
from .fidelity import TorusFidelityDashboard
from .angular_ks import AngularKSDashboard

__all__ = ["TorusFidelityDashboard", "AngularKSDashboard"]
