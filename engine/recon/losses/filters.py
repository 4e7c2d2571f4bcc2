"""Linear image filters of the losses, each with its exact adjoint (zero padding, scipy's Gaussian).

- :func:`bandpass`: the high-pass ``H x = x - (G*x) / (G*1)`` with ``G`` a Gaussian of ``sigma`` pixels
  (truncated at 3 sigma); dividing by ``G*1`` makes it a normalised convolution, so a constant offset is
  removed exactly, borders included; adjoint ``H^T y = y - G (y / (G*1))``.  Used by
  :class:`engine.recon.losses.BandpassNCC` and :class:`engine.recon.losses.BoneXrayNCC`.
- :class:`Window`: Gaussian windows (local means, variances, and the local NCC with its gradient) of the
  bone X-ray loss.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _gaussian(x, sigma: float):
    return ndimage.gaussian_filter(x, sigma, mode="constant", truncate=3.0)


def bandpass(shape, sigma_px: float):
    """``(H, H^T)``: the high-pass of the module doc for images of ``shape`` (rows, cols), and its adjoint."""
    norm = _gaussian(np.ones(shape), sigma_px)
    return (lambda x: x - _gaussian(x, sigma_px) / norm), (lambda y: y - _gaussian(y / norm, sigma_px))


class Window:
    """Gaussian windows of ``sigma`` pixels (zero padding, normalised: ``E x = G x / G 1``), local statistics
    and the local NCC with its exact gradient (the adjoint of ``E`` is ``E^T y = G (y / G 1)``)."""

    def __init__(self, shape, sigma: float):
        self.sigma = float(sigma)
        self.norm = _gaussian(np.ones(shape), self.sigma)

    def mean(self, x):
        return _gaussian(x, self.sigma) / self.norm

    def mean_t(self, y):
        return _gaussian(y / self.norm, self.sigma)

    def variance(self, x):
        m = self.mean(x)
        return np.maximum(self.mean(x * x) - m * m, 0.0)

    def ncc(self, a, b, w, eps_a: float, eps_b: float):
        """Weighted mean over pixels of ``cov(a, b) / sqrt((var a + eps_a)(var b + eps_b))`` in the windows
        around them, and its gradient with respect to ``a``."""
        wn = w / w.sum()
        ma, mb = self.mean(a), self.mean(b)
        va = self.mean(a * a) - ma * ma + eps_a
        vb = np.maximum(self.mean(b * b) - mb * mb, 0.0) + eps_b
        cov = self.mean(a * b) - ma * mb
        d = np.sqrt(va * vb)
        c = cov / d
        alpha, beta = wn / d, -wn * c / (2.0 * va)  # d value / d cov, d value / d var(a)
        grad = (b * self.mean_t(alpha) - self.mean_t(alpha * mb)
                + 2.0 * (a * self.mean_t(beta) - self.mean_t(beta * ma)))
        return float((wn * c).sum()), grad
