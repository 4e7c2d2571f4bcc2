"""Shape reconstruction from X-ray images by gradient descent through the differentiable mesh renderer.

``reconstruct(images, cameras, model, init, config)`` -> :class:`ReconResult`, with every setting in the
frozen :class:`ReconConfig` (``ReconConfig.xray(detector_px)``: the recipe for X-ray targets).  The forward
model is :class:`Objective`: appearance (:mod:`engine.recon.appearance`), mesh renderer, loss
(:mod:`engine.recon.losses`, the protocol in :mod:`engine.recon.losses.base`); the parametrisation of shape and
pose is :mod:`engine.recon.shape_pose`; the schedule :mod:`engine.recon.schedule`.
"""
from .appearance import PathLength, ShellCore
from .config import DEFAULT_LR, ReconConfig
from .losses import LOSSES, MSE, NCC, BandpassNCC, BoneXrayNCC, FunctionLoss, GradientNCC, Loss, Silhouette, get_loss
from .objective import Objective, translation_search
from .reconstruct import ReconResult, reconstruct
from .schedule import Stage, default_schedule
from .shape_pose import Params, ShapePose
from .targets import line_integral

__all__ = ["DEFAULT_LR", "LOSSES", "MSE", "NCC", "BandpassNCC", "BoneXrayNCC", "FunctionLoss", "GradientNCC", "Loss",
           "Objective", "Params", "PathLength", "ReconConfig", "ReconResult", "ShapePose", "ShellCore", "Silhouette",
           "Stage", "default_schedule", "get_loss", "line_integral", "reconstruct", "translation_search"]
