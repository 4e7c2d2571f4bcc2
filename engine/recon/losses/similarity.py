"""Image similarities on one image per view (the path-length appearance), each with its exact gradient.

See :mod:`engine.recon.losses` for which to use; the protocol is :class:`engine.recon.losses.base.Loss`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import EPS as _EPS
from .base import Loss
from .base import views as _views
from .filters import bandpass


class MSE(Loss):
    """Mean squared difference (see module doc)."""

    name = "mse"

    def evaluate(self, rendered, target):
        r, t = _views(rendered), _views(target)
        d = r - t
        return float(np.mean(d ** 2)), 2.0 * d / d.size


class NCC(Loss):
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

    def evaluate(self, rendered, target):
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

    def evaluate(self, rendered, target):
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

    def evaluate(self, rendered, target):
        r, t = _views(rendered), _views(target)
        high, high_t = bandpass(r.shape[1:], self.sigma_px)
        val, grad = 0.0, np.empty_like(r)
        for i in range(len(r)):
            v, g = self._ncc(high(r[i]), high(t[i]))
            val += v
            grad[i] = high_t(g)
        n = len(r)
        return 1.0 - val / n, -grad / n


class Silhouette(Loss):
    """``1 - soft Dice(mask, 1 - exp(-rendered / tau))`` per view, averaged (see module doc).

    ``tau`` (mm of path length) sets how much bone makes a pixel count as covered.
    """

    name = "silhouette"
    blur_target = False  # the target is a mask

    def __init__(self, tau: float = 2.0):
        self.tau = float(tau)

    def evaluate(self, rendered, mask):
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

