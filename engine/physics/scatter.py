"""Scatter by kernel superposition (SKS), differentiable.

A baseline model in the spirit of Ohnesorge et al. (Med. Phys. 26, 1999) and
Sun & Star-Lack (Phys. Med. Biol. 55, 2010), with these documented assumptions:

* The scatter reaching pixel p is a superposition of broad 2D Gaussian kernels
  centred at every pixel q, weighted by the primary there, ``P(q)``, times an
  amplitude ``a(w) = w exp(-w / tau)`` of the local water-equivalent thickness
  ``w(q)`` (cm): thin paths scatter little, very thick ones absorb their scatter.
* Kernel width grows with thickness: pixels are split softly (hat functions) into
  thickness groups centred at ``group_centres_cm``; group g uses a Gaussian of
  ``sigma_g = sigma0_mm * (1 + w_g / 20 cm)`` at the detector.  Zero padding: no
  scatter comes from outside the field of view (so a uniform slab gets a
  centre-peaked field).
* The total is scaled so that ``sum(S) = spr * sum(P)`` over the pixels behind
  the object (at least ``object_cm`` of water-equivalent thickness): the
  scatter-to-primary ratio (SPR) behind the patient is a parameter.  Pixels that
  see the open beam are left out of both sums: air scatters nothing, and their
  bright primary would otherwise inflate the scatter behind a thick patient (a
  lateral pelvis with air in the field got a local SPR of 40 that way).
  :func:`typical_spr` gives a rough default for a detector with an anti-scatter
  grid, from the mean thickness behind the object; set ``spr`` from measurements
  for studies.
* Scatter has the spectrum of the primary (no Compton energy shift), and no
  object-specific angular structure; no Monte Carlo.

* Scatter is smooth, so it is computed on a coarse grid of about ``grid_mm`` pitch
  (block means of the fine pixels), convolved there, and brought back to the
  detector pixels by linear interpolation.
* Pixels may be rectangular (``pixel_spacing = (row pitch, column pitch)``, mm): block
  factors and kernel widths in pixels are then taken per axis, so the kernels stay
  round in millimetres on the detector.

All operators are linear maps with explicit adjoints (block mean / its transpose,
interpolation / its transpose, FFT convolution with a symmetric Gaussian, which is
its own adjoint), so the VJP is exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from ..geometry.camera import as_pixel_spacing


def typical_spr(kvp: float, field_cm2: float, water_cm: float, grid: bool = True) -> float:
    """A rough scatter-to-primary ratio (dimensionless).

    Grows about linearly with water-equivalent thickness and with the square root of
    the field area, weakly with kVp; about 4 without and 0.6 with a grid for a
    20 cm patient and a 30 x 30 cm field at 90 kVp (orders of magnitude reported in
    the fluoroscopy literature).  An engineering default, not a fit to measurements.
    """
    return float(max(spr_per_water_cm(kvp, field_cm2, grid) * water_cm, 0.0))


def field_cm2(shape, pixel_spacing) -> float:
    """Area (cm^2) of a (rows, cols) detector of ``pixel_spacing`` (row pitch, column pitch) mm, the field size of
    the automatic SPR."""
    row_mm, col_mm = pixel_spacing
    return shape[0] * shape[1] * (row_mm / 10.0) * (col_mm / 10.0)


def spr_per_water_cm(kvp: float, field_cm2: float, grid: bool = True) -> float:
    """Slope of :func:`typical_spr` in the water-equivalent thickness (1/cm): the SPR is this times
    ``water_cm`` (clipped at 0), so its derivative is this where the SPR is positive."""
    base = 4.0 / 20.0 * np.sqrt(max(field_cm2, 1.0) / 900.0) * (1.0 + (kvp - 90.0) / 400.0)
    return float(base * (0.15 if grid else 1.0))


def _downsample_matrix(n: int, f: int) -> np.ndarray:
    """(ceil(n/f), n) block-mean operator along one axis."""
    nc = -(-n // f)
    d = np.zeros((nc, n))
    for b in range(nc):
        d[b, b * f:min(n, b * f + f)] = 1.0 / (min(n, b * f + f) - b * f)
    return d


def upsample_index(n: int, f: int):
    """Linear interpolation from block centres to pixel centres along one axis (clamped at the ends).

    Returns ``(j, t)``: pixel i is ``(1 - t_i) * coarse[j_i] + t_i * coarse[j_i + 1]`` (int32 and float64
    arrays of length n; with one block, ``j = 0`` and ``t = 0``)."""
    nc = -(-n // f)
    centres = np.array([(b * f + min(n, b * f + f) - 1) / 2.0 for b in range(nc)])
    j = np.zeros(n, np.int32)
    t = np.zeros(n)
    if nc == 1:
        return j, t
    for i in range(n):
        j[i] = int(np.clip(np.searchsorted(centres, i) - 1, 0, nc - 2))
        t[i] = np.clip((i - centres[j[i]]) / (centres[j[i] + 1] - centres[j[i]]), 0.0, 1.0)
    return j, t


def _upsample_matrix(n: int, f: int) -> np.ndarray:
    """(n, ceil(n/f)) matrix of :func:`upsample_index`."""
    nc = -(-n // f)
    j, t = upsample_index(n, f)
    u = np.zeros((n, nc))
    u[np.arange(n), j] += 1.0 - t
    if nc > 1:
        u[np.arange(n), j + 1] += t
    return u


def gaussian_1d(sigma_px: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, radius ceil(3 sigma) (the 2-D kernel is their outer product)."""
    r = int(np.ceil(3 * sigma_px))
    x = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (x / sigma_px) ** 2)
    return g / g.sum()


def _gaussian_kernel(sigma_rows_px: float, sigma_cols_px: float) -> np.ndarray:
    """The 2-D kernel (outer product of the 1-D taps along rows and along columns)."""
    g = gaussian_1d(sigma_rows_px)
    return np.outer(g, g if sigma_cols_px == sigma_rows_px else gaussian_1d(sigma_cols_px))


@dataclass(frozen=True, kw_only=True)
class ScatterModel:
    """Parameters of the SKS model (see module doc)."""

    spr: float | None = None  # None: typical_spr(...) from kVp, field size and mean thickness
    sigma0_mm: float = 40.0  # kernel width at the detector for thin objects, mm
    tau_cm: float = 25.0  # thickness where the amplitude peaks, cm water
    group_centres_cm: tuple = (0.0, 10.0, 20.0, 30.0, 45.0)
    grid: bool = True  # an anti-scatter grid (for typical_spr)
    grid_mm: float = 4.0  # pitch of the coarse grid the scatter is computed on, mm
    object_cm: float = 0.5  # water-equivalent thickness (cm) from which a pixel is behind the object

    def __post_init__(self):
        if self.spr is not None and self.spr < 0:
            raise ValueError(f"spr must be >= 0, got {self.spr}")
        if self.sigma0_mm <= 0 or self.tau_cm <= 0 or self.grid_mm <= 0:
            raise ValueError("sigma0_mm, tau_cm and grid_mm must be positive")

    def _groups(self, w):
        c = np.asarray(self.group_centres_cm, np.float64)
        h = np.zeros((c.size,) + w.shape)
        dh = np.zeros_like(h)
        wc = np.clip(w, c[0], c[-1])
        inside = (w > c[0]) & (w < c[-1])
        for g in range(c.size):
            if g > 0:
                m = (wc >= c[g - 1]) & (wc <= c[g])
                h[g][m] = ((wc - c[g - 1]) / (c[g] - c[g - 1]))[m]
                dh[g][m & inside] = 1.0 / (c[g] - c[g - 1])
            if g < c.size - 1:
                m = (wc >= c[g]) & (wc < c[g + 1])
                h[g][m] = ((c[g + 1] - wc) / (c[g + 1] - c[g]))[m]
                dh[g][m & inside] = -1.0 / (c[g + 1] - c[g])
        return h, dh

    def sigmas_px(self, coarse_mm: float) -> list:
        """Kernel width of each thickness group, in coarse-grid pixels of ``coarse_mm`` (along one axis)."""
        return [self.sigma0_mm * (1 + c / 20.0) / coarse_mm for c in self.group_centres_cm]

    def _kernels(self, coarse_spacing):
        """The 2-D kernel of each thickness group on a coarse grid of ``(row, column)`` pitch (mm)."""
        return [_gaussian_kernel(sr, sc) for sr, sc in zip(*(self.sigmas_px(mm) for mm in coarse_spacing))]

    def block_factor(self, pitch_mm: float) -> int:
        """Detector pixels per coarse-grid cell along an axis of pixel pitch ``pitch_mm``."""
        return max(1, int(self.grid_mm // pitch_mm))

    def block_factors(self, pixel_spacing) -> tuple[int, int]:
        """(rows, columns) of detector pixels per coarse-grid cell for ``pixel_spacing`` (one pitch or
        ``(row pitch, column pitch)``, mm)."""
        return tuple(self.block_factor(mm) for mm in as_pixel_spacing(pixel_spacing, "pixel_spacing"))

    def coarse_spacing(self, pixel_spacing) -> tuple[float, float]:
        """(row, column) pitch (mm) of the coarse grid for ``pixel_spacing``."""
        spacing = as_pixel_spacing(pixel_spacing, "pixel_spacing")
        return tuple(mm * f for mm, f in zip(spacing, self.block_factors(spacing)))

    def _resampling(self, shape, pixel_spacing):
        """The coarse grid's (row, column) pitch and the (down, up) matrices for rows and columns."""
        factors = self.block_factors(pixel_spacing)
        return self.coarse_spacing(pixel_spacing), [(_downsample_matrix(n, f), _upsample_matrix(n, f))
                                                    for n, f in zip(shape, factors)]

    def resolve_spr(self, kvp: float, field_cm2: float, water_cm: np.ndarray) -> float:
        if self.spr is not None:
            return float(self.spr)
        w = np.asarray(water_cm, np.float64)
        behind = w[w >= self.object_cm]
        return typical_spr(kvp, field_cm2, float(behind.mean()) if behind.size else 0.0, self.grid)

    def forward(self, primary: np.ndarray, water_cm: np.ndarray, pixel_spacing, spr: float):
        """Scatter image S (same units as ``primary``) and a cache for :meth:`vjp`; ``pixel_spacing`` the
        detector's pitch (one number, or ``(row pitch, column pitch)``, mm)."""
        p = np.asarray(primary, np.float64)
        w = np.asarray(water_cm, np.float64)
        a = w * np.exp(-w / self.tau_cm)
        h, _ = self._groups(w)
        coarse, ((dr, ur), (dc, uc)) = self._resampling(p.shape, pixel_spacing)
        fc = np.zeros((dr.shape[0], dc.shape[0]))
        for g, k in enumerate(self._kernels(coarse)):
            if h[g].any():
                fc += fftconvolve(dr @ (p * a * h[g]) @ dc.T, k, mode="same")
        f = ur @ fc @ uc.T
        m = w >= self.object_cm  # behind the object (piecewise constant in w: no gradient)
        sp, sf = float(p[m].sum()), float(f[m].sum())
        c = spr * sp / sf if sf > 0 else 0.0
        return c * f, (p, w, a, f, sp, sf, spr, pixel_spacing)

    def resolve_spr_vjp(self, kvp: float, field_cm2: float, water_cm: np.ndarray, grad_spr: float) -> np.ndarray:
        """d loss / d water_cm (per pixel, 1/cm) through :meth:`resolve_spr`, given d loss / d spr.

        A fixed ``spr`` does not depend on the image; the automatic one is ``max(k * mean_m(water_cm), 0)``
        (:func:`typical_spr`), the mean over the n pixels behind the object (``water_cm >= object_cm``; the
        mask is piecewise constant), so each of those pixels gets ``k / n`` where the SPR is positive.
        """
        w = np.asarray(water_cm, np.float64)
        m = w >= self.object_cm
        if self.spr is not None or not m.any() or self.resolve_spr(kvp, field_cm2, w) <= 0:
            return np.zeros_like(w)
        return grad_spr * spr_per_water_cm(kvp, field_cm2, self.grid) / m.sum() * m

    def vjp(self, cache, grad_s):
        """(d loss / d primary, d loss / d water_cm, d loss / d spr) from d loss / d S.

        The third is the gradient with respect to the ``spr`` argument of :meth:`forward` (S is linear in it);
        chain it through :meth:`resolve_spr_vjp` when the SPR was resolved from the image.
        """
        p, w, a, f, sp, sf, spr, pixel_spacing = cache
        gs = np.asarray(grad_s, np.float64)
        if sf <= 0:
            return np.zeros_like(p), np.zeros_like(w), 0.0
        m = w >= self.object_cm
        gsf = float((gs * f).sum())
        g_spr = sp / sf * gsf  # S = spr * sum_m(P) / sum_m(F) * F
        gf = spr * sp / sf * gs - spr * sp / sf ** 2 * gsf * m  # through c = spr * sum_m(P) / sum_m(F)
        gp = spr / sf * gsf * m.astype(np.float64)  # through sum_m(P)
        gw = np.zeros_like(w)
        h, dh = self._groups(w)
        da = np.exp(-w / self.tau_cm) * (1 - w / self.tau_cm)
        coarse, ((dr, ur), (dc, uc)) = self._resampling(p.shape, pixel_spacing)
        gfc = ur.T @ gf @ uc
        for g, k in enumerate(self._kernels(coarse)):
            if h[g].any() or dh[g].any():
                gq = dr.T @ fftconvolve(gfc, k, mode="same") @ dc  # symmetric kernel: its own adjoint
                gp += gq * a * h[g]
                gw += gq * p * (da * h[g] + a * dh[g])
        return gp, gw, g_spr
