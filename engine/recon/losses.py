"""Image similarity losses for reconstruction and registration, each with its exact gradient.

Every loss is a callable ``loss(rendered, target) -> (value, d value / d rendered)``
on stacks of views ``(n, rows, cols)``; the value is averaged over the views.
The rendered image is what the mesh renderer gives (path length through the
model, mm); the target is an X-ray as a *line integral* ``-log(I / I0)``
(:func:`line_integral`), so both grow with the amount of bone.

Which one to use:

- ``"mse"`` (:class:`MSE`): same modality and scale, e.g. targets rendered by
  the same mesh renderer (self-consistency); useless on real X-rays.
- ``"ncc"`` (:class:`NCC`): normalised cross-correlation; invariant to gain and
  offset (unknown attenuation coefficient, exposure).  Good when the model's
  structure dominates the image.
- ``"gncc"`` (:class:`GradientNCC`): NCC of the image gradients (Sobel x and y;
  Penney et al., IEEE TMI 1998, "gradient correlation").  Insensitive to the
  smooth background of soft tissue and to slowly varying scatter: the choice for
  real or physics-simulated X-rays that contain soft tissue and other bones.
  ``NCC`` and ``GradientNCC`` take an optional pixel weight/mask to restrict the
  comparison to a region of interest.
- ``"bncc"`` (:class:`BandpassNCC`): NCC after removing what varies slowly
  (a normalised-convolution high-pass); less sensitive to noise than ``gncc``,
  the choice for noisy fluoroscopy with a thick soft-tissue background.
- ``"xray"`` (:class:`engine.recon.bone_xray.BoneXrayNCC`): for X-rays of bone (simulated
  with soft tissue, scatter and noise, or real): band-pass NCC in a region around
  the model against the best mix of a cortical-shell and a core image rendered from
  the model (two surfaces); the uniform path length of the other losses looks
  little like an X-ray of cortical bone.  The NCC is local (Gaussian windows of
  6 px, each with its own gain): scatter compresses the bone's contrast in the
  line integral by a factor that varies across the image.  The choice for
  tier-3-like targets.
- ``"silhouette"`` (:class:`Silhouette`): where a bone mask of the target is
  given (a segmentation of the X-ray): 1 - soft Dice between the mask and the
  render's soft silhouette ``1 - exp(-L / tau)``.

:func:`engine.recon.get_loss` (:mod:`engine.recon.named_losses`) makes a loss from its name.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

_EPS = 1e-12


def line_integral(intensity, i0: float | None = None) -> np.ndarray:
    """``-log(I / I0)`` of an X-ray (I0: default the largest value, i.e. an unattenuated pixel)."""
    i = np.asarray(intensity, np.float64)
    if np.any(~np.isfinite(i)) or np.any(i <= 0):
        raise ValueError("intensities must be finite and positive to take a line integral")
    return -np.log(i / (i.max() if i0 is None else float(i0)))


def _views(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a[None] if a.ndim == 2 else a


class MSE:
    """Mean squared difference (see module doc)."""

    name = "mse"

    def __call__(self, rendered, target):
        r, t = _views(rendered), _views(target)
        d = r - t
        return float(np.mean(d ** 2)), 2.0 * d / d.size


class NCC:
    """``1 - mean over views of NCC(rendered, target)`` (see module doc), optional pixel weights (rows, cols)."""

    name = "ncc"

    def __init__(self, weights=None):
        self.weights = None if weights is None else np.asarray(weights, np.float64)

    def _ncc(self, a, b, w=None):
        """NCC of two images and its gradient with respect to ``a`` (weighted by ``w`` and the loss' weights)."""
        w = np.ones_like(a) if w is None else w
        w = w if self.weights is None else w * np.broadcast_to(self.weights, a.shape)
        wn = w / w.sum()
        ac, bc = a - (wn * a).sum(), b - (wn * b).sum()
        na, nb = np.sqrt((wn * ac ** 2).sum()), np.sqrt((wn * bc ** 2).sum())
        if na < _EPS or nb < _EPS:  # a flat image correlates with nothing
            return 0.0, np.zeros_like(a)
        ncc = (wn * ac * bc).sum() / (na * nb)
        grad = wn * (bc / (na * nb) - ncc * ac / na ** 2)
        return float(ncc), grad

    def __call__(self, rendered, target):
        r, t = _views(rendered), _views(target)
        val, grad = 0.0, np.empty_like(r)
        for i in range(len(r)):
            v, grad[i] = self._ncc(r[i], t[i])
            val += v
        n = len(r)
        return 1.0 - val / n, -grad / n


_SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


class GradientNCC(NCC):
    """``1 - mean over views and axes of NCC(Sobel_axis rendered, Sobel_axis target)`` (see module doc)."""

    name = "gncc"

    def __call__(self, rendered, target):
        r, t = _views(rendered), _views(target)
        val, grad = 0.0, np.zeros_like(r)
        interior = np.zeros(r.shape[1:])
        interior[1:-1, 1:-1] = 1.0  # the border's gradients would see the zero padding
        for i in range(len(r)):
            for k in (_SOBEL, _SOBEL.T):
                a = ndimage.correlate(r[i], k, mode="constant")
                b = ndimage.correlate(t[i], k, mode="constant")
                v, ga = self._ncc(a, b, interior)
                val += v
                grad[i] += ndimage.convolve(ga, k, mode="constant")  # adjoint of zero-padded correlation
        n = 2 * len(r)
        return 1.0 - val / n, -grad / n


class BandpassNCC(NCC):
    """``1 - mean over views of NCC(H rendered, H target)`` with the high-pass ``H x = x - (G*x) / (G*1)``.

    ``G`` is a Gaussian of ``sigma_px`` pixels (zero padding; dividing by ``G*1`` makes
    it a normalised convolution, so a constant offset is removed exactly, borders
    included).  It removes what varies slowly: the soft-tissue background, heel
    effect, scatter; the renderer's own blur (``soft_sigma_px``) is the low-pass
    side of the band.  ``sigma_px`` is in pixels of the full-resolution detector;
    :meth:`at_level` scales it for binned levels.  Exact adjoint
    ``H^T y = y - G (y / (G*1))``.
    """

    name = "bncc"

    def __init__(self, sigma_px: float = 16.0, weights=None):
        super().__init__(weights)
        self.sigma_px = float(sigma_px)

    def at_level(self, factor: int) -> "BandpassNCC":
        return BandpassNCC(self.sigma_px / factor, self.weights)

    def _filters(self, shape):
        blur = (lambda x: ndimage.gaussian_filter(x, self.sigma_px, mode="constant", truncate=3.0))
        norm = blur(np.ones(shape))
        return (lambda x: x - blur(x) / norm), (lambda y: y - blur(y / norm))

    def __call__(self, rendered, target):
        r, t = _views(rendered), _views(target)
        high, high_t = self._filters(r.shape[1:])
        val, grad = 0.0, np.empty_like(r)
        for i in range(len(r)):
            v, g = self._ncc(high(r[i]), high(t[i]))
            val += v
            grad[i] = high_t(g)
        n = len(r)
        return 1.0 - val / n, -grad / n


class Silhouette:
    """``1 - soft Dice(mask, 1 - exp(-rendered / tau))`` per view, averaged (see module doc).

    ``tau`` (mm of path length) sets how much bone makes a pixel count as covered.
    """

    name = "silhouette"

    def __init__(self, tau: float = 2.0):
        self.tau = float(tau)

    def __call__(self, rendered, mask):
        r, m = _views(rendered), _views(mask).astype(np.float64)
        e = np.exp(-r / self.tau)
        s = 1.0 - e
        val, grad = 0.0, np.empty_like(r)
        for i in range(len(r)):
            inter, den = (s[i] * m[i]).sum(), s[i].sum() + m[i].sum() + _EPS
            dice = 2 * inter / den
            val += dice
            grad[i] = (2 * m[i] / den - 2 * inter / den ** 2) * e[i] / self.tau
        n = len(r)
        return 1.0 - val / n, -grad / n

