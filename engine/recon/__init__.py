"""Shape reconstruction from X-ray images by gradient descent through the differentiable mesh renderer.

``reconstruct(images, cameras, model, init=...)`` -> :class:`ReconResult`; losses
(``ncc``, ``gncc``, ``mse``, ``silhouette``) in :mod:`engine.recon.losses`; the
parametrisation of shape and pose in :mod:`engine.recon.shape_pose`; settings that work for X-ray targets
(``xray_settings``) in :mod:`engine.recon.recipes`.
"""
from .losses import MSE, NCC, BandpassNCC, GradientNCC, Silhouette, line_integral
from .named_losses import get_loss
from .reconstruct import Objective, ReconResult, Stage, default_schedule, reconstruct
from .recipes import xray_settings
from .shape_pose import Params, ShapePose

__all__ = ["MSE", "NCC", "BandpassNCC", "GradientNCC", "Objective", "Params", "ReconResult", "ShapePose", "Silhouette", "Stage",
           "default_schedule", "get_loss", "line_integral", "reconstruct", "xray_settings"]
