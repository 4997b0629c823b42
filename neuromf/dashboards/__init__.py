"Widget dashboards for JupyterLab: torus fidelity, angular KS uniformity of generated samples, and the mean-velocity error against the exact flow (hand-written re-exports)."
from .fidelity import TorusFidelityDashboard
from .angular_ks import AngularKSDashboard
from .velocity_error import VelocityErrorDashboard

__all__ = ["TorusFidelityDashboard", "AngularKSDashboard", "VelocityErrorDashboard"]
