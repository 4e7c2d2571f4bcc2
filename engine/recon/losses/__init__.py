"""Image losses of reconstruction, each with its exact gradient, and the table of their names.

Every loss follows the protocol of :mod:`engine.recon.losses.base` (``forward``/``vjp``, ``__call__``,
``appearance``, ``at_level``, ``prepare``) on stacks of views ``(n, rows, cols)``; the value is averaged over
the views.  The images compared are the model's, made by the loss' appearance model
(:mod:`engine.recon.appearance`) from the mesh renders (path lengths, mm); the target is an X-ray as a *line
integral* ``-log(I / I0)`` (:func:`engine.recon.line_integral`), so both grow with the amount of bone.

Which one to use:

- ``"mse"`` (:class:`MSE`): same modality and scale, e.g. targets rendered by the same mesh renderer
  (self-consistency); useless on real X-rays.
- ``"ncc"`` (:class:`NCC`): normalised cross-correlation; invariant to gain and offset (unknown attenuation
  coefficient, exposure).  Good when the model's structure dominates the image.
- ``"gncc"`` (:class:`GradientNCC`): NCC of the image gradients (Sobel x and y; Penney et al., IEEE TMI 1998,
  "gradient correlation").  Insensitive to the smooth background of soft tissue and to slowly varying
  scatter.  ``NCC`` and ``GradientNCC`` take an optional pixel weight/mask to restrict the comparison to a
  region of interest.
- ``"bncc"`` (:class:`BandpassNCC`): NCC after removing what varies slowly (the normalised-convolution
  high-pass of :func:`engine.recon.losses.filters.bandpass`); less sensitive to noise than ``gncc``.
- ``"xray"`` (:class:`BoneXrayNCC`): for X-rays of bone (simulated with soft tissue, scatter and noise, or
  real): band-pass local NCC in a region around the model against the best mix of a cortical-shell and a core
  image (appearance :class:`engine.recon.appearance.ShellCore`); the uniform path length of the other losses
  looks little like an X-ray of cortical bone.  The choice for tier-3-like targets
  (:meth:`engine.recon.ReconConfig.xray` is its recipe).
- ``"silhouette"`` (:class:`Silhouette`): where a bone mask of the target is given (a segmentation of the
  X-ray): 1 - soft Dice between the mask and the render's soft silhouette ``1 - exp(-L / tau)``.

:func:`get_loss` makes a loss from its name (the table :data:`LOSSES`), or adopts a loss object or a function.
"""
from __future__ import annotations

from .base import FunctionLoss, Loss, LossState
from .bone_xray import BoneXrayNCC
from .similarity import MSE, NCC, BandpassNCC, GradientNCC, Silhouette

LOSSES = {"mse": MSE, "ncc": NCC, "gncc": GradientNCC, "bncc": BandpassNCC, "silhouette": Silhouette,
          "xray": BoneXrayNCC}


def get_loss(loss) -> Loss:
    """A :class:`Loss` from a name (``mse``, ``ncc``, ``gncc``, ``bncc``, ``silhouette``, ``xray``), a Loss (as
    it is), or a function ``f(images, target) -> (value, grad)`` (:class:`FunctionLoss`)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)}, a Loss or a function")
        return LOSSES[loss]()
    if callable(loss):
        return FunctionLoss(loss)
    raise TypeError(f"a loss is a name, a Loss or a function, got {type(loss).__name__}")


__all__ = ["BandpassNCC", "BoneXrayNCC", "FunctionLoss", "GradientNCC", "LOSSES", "Loss", "LossState", "MSE", "NCC",
           "Silhouette", "get_loss"]
