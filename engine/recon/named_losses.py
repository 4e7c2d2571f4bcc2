"""Losses by name (``reconstruct(..., loss="xray")``): the losses of :mod:`engine.recon.losses` and the bone
X-ray loss of :mod:`engine.recon.bone_xray`, which builds on them (so the table lives above both)."""
from __future__ import annotations

from .bone_xray import BoneXrayNCC
from .losses import MSE, NCC, BandpassNCC, GradientNCC, Silhouette

LOSSES = {"mse": MSE, "ncc": NCC, "gncc": GradientNCC, "bncc": BandpassNCC, "silhouette": Silhouette,
          "xray": BoneXrayNCC}


def get_loss(loss):
    """A loss object from a name (``mse``, ``ncc``, ``gncc``, ``bncc``, ``silhouette``, ``xray``) or a callable."""
    if callable(loss):
        return loss
    try:
        return LOSSES[loss]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable") from None
