"Widget dashboards for JupyterLab: torus fidelity, angular KS uniformity of generated samples, the mean-velocity error against the exact flow, and real vs generated 3-D volumes (hand-written re-exports)."
from .fidelity import TorusFidelityDashboard
from .angular_ks import AngularKSDashboard
from .velocity_error import VelocityErrorDashboard
from .volumes import VolumeDashboard

__all__ = ["TorusFidelityDashboard", "AngularKSDashboard", "VelocityErrorDashboard", "VolumeDashboard"]
