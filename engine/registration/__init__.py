"""2D/3D registration of a CT to X-ray images: :class:`Registration` (gradient descent on the CT's rigid pose,
gradient correlation, NCC, patch or multi-scale NCC, coarse to fine), the similarities with their gradients
(:func:`gradient_ncc_grad`, :func:`ncc_grad`, :func:`patch_ncc_grad`, :func:`multiscale_ncc_grad`), :func:`mtre`."""
import numpy as np

from .register import Registration, RegistrationResult, attenuation_weights
from .similarity import gradient_ncc_grad, multiscale_ncc_grad, ncc, ncc_grad, patch_ncc_grad


def mtre(points, move_true, move_found) -> float:
    """Mean target registration error (mm): mean distance between ``points`` (N, 3) moved by the true and by
    the found world-frame moves (4x4)."""
    p = np.c_[np.asarray(points, np.float64), np.ones(len(points))]
    return float(np.linalg.norm((p @ np.asarray(move_true).T - p @ np.asarray(move_found).T)[:, :3], axis=1).mean())


__all__ = ["Registration", "RegistrationResult", "attenuation_weights", "gradient_ncc_grad", "mtre",
           "multiscale_ncc_grad", "ncc", "ncc_grad", "patch_ncc_grad"]
