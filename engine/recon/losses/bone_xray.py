"""A loss for real (or physics-simulated) X-rays of bone: band-pass NCC against a cortical-shell + core image.

An X-ray of bone is not its path length.  Bone is a thin, dense cortical shell
around a light cancellous core, and the shell dominates the picture: the outline,
where rays run tangentially through the cortex, is bright; the inside of a thick
bone (the sacrum) is dim; a thin plate (the iliac wing) is all cortex.  The mesh
renderer's uniform path length through the model shows the opposite (bright in the
thick middle), and its band-passed image correlates poorly with the X-ray even at
the true shape and pose.

So the model's appearance is a cortical shell around a core
(:class:`engine.recon.appearance.ShellCore`: the outer surface and an inner one offset
inward by the cortical thickness ``t`` are rendered in one launch, and give the shell
image ``S`` and the core image ``C``); this loss is the similarity on those two images,
``(n, 2, rows, cols)``.  The excess attenuation of bone over the soft tissue it displaces is ``a S + b C`` with
unknown ``a, b >= 0`` (densities, spectrum, calibration all unknown), so the loss
takes the best non-negative mix (variable projection: a 2 x 2 non-negative least
squares per view, weighted like the NCC):

``loss = 1 - mean over views of NCC_w(H(a* S + b* C), H target)``

with ``H`` the band-pass of :class:`engine.recon.losses.BandpassNCC` (removes the
smooth soft-tissue background and scatter) and ``w`` a region of interest around
the current estimate's projection (:meth:`BoneXrayNCC.set_roi`: the silhouette
dilated by ``roi_margin_px``, softened), which keeps body outlines, table edges and
far-away gas out of the correlation.  By the envelope theorem the gradient at the
optimal ``(a*, b*)`` is the NCC gradient times the coefficients (the optimum is
stationary in them, or pinned at 0), so it is exact.  The ROI is held fixed between
:meth:`set_roi` calls (the reconstruction resets it at every stage) and is not
differentiated.

**Local NCC** (``window_px``, the default): scatter is smooth in intensity but not in
the line integral.  Behind a thick pelvis the scatter-to-primary ratio is 1-5, and
``-log(P e^{-m} + S)`` compresses the bone's excess attenuation ``m`` by
``1 / (1 + SPR(x))``, a gain that varies across the image with the body's thickness
and saturates on dense, edge-on cortex.  One global NCC cannot follow that: for a
tier-3b phantom the NCC of the true shape at the true pose falls from 0.75
(scatter-free target) to 0.34 (with scatter; noise changes it by < 0.01), and a
pose 10 mm off scores 0.20.  So the correlation is taken in Gaussian windows of
``window_px`` pixels (local means, variances and covariance; each window has its own
gain and offset), averaged over the region of interest:

``loss = 1 - mean over views of sum_x w(x) lncc(x)``,
``lncc = cov_G(r, t) / sqrt((var_G r + e_r)(var_G t + e_t))``

with ``r = H(a S + b C)`` and ``t = H target``; the same phantom then scores 0.59 at
the truth and 0.33 at 6 mm.  The floors ``e`` (1 % of the region's mean local
variance) keep flat windows (no bone edge in them) near 0 instead of dividing noise
by noise.  The mix ``(a, b)`` and the floors are chosen (global fit as above) at the
first call after :meth:`set_roi` and held until the next one, like the region, so
the gradient (by hand, through the windows' adjoints) is exact for the loss being
descended.  ``window_px=None``: the single global NCC.

The inner surface's gradient flows back through the vertex normals exactly
(:func:`engine.mesh.offset_surface_vjp`, in the appearance's adjoint).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..appearance import CORTEX_MM, ShellCore
from .base import EPS as _EPS
from .base import views
from .filters import Window, bandpass
from .similarity import NCC

LOCAL_WINDOW_PX = 6.0  # default local-NCC window (Gaussian sigma, full-resolution pixels; 4-10 did alike on 3b)


def _nonnegative_mix(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """argmin over c >= 0 of ``c' G c - 2 c' r`` for a 2 x 2 positive semi-definite ``G``."""
    try:
        c = np.linalg.solve(gram, rhs)
        if np.all(c >= 0) and np.all(np.isfinite(c)):
            return c
    except np.linalg.LinAlgError:
        pass
    best, out = 0.0, np.array([1.0, 0.0])  # nothing correlates positively: the shell alone
    for i in range(2):
        if rhs[i] > 0 and gram[i, i] > _EPS:
            gain = rhs[i] ** 2 / gram[i, i]  # decrease of the objective by the 1-D optimum
            if gain > best:
                best, out = gain, np.eye(2)[i] * rhs[i] / gram[i, i]
    return out


class BoneXrayNCC(NCC):
    """Band-pass NCC of the target against the best non-negative mix of shell and core images (module doc).

    Its images are :class:`engine.recon.appearance.ShellCore`'s ``(n, 2, rows, cols)`` shell and core (mm).

    Parameters
    ----------
    sigma_px : float
        Width of the band-pass' Gaussian, pixels of the full-resolution detector.
    shell_mm : float
        Cortical thickness ``t`` (mm) of the inner offset surface (the appearance's).
    roi_margin_px : float
        Margin of the region of interest around the projected model, full-resolution pixels.
    window_px : float or None
        Gaussian window (sigma, full-resolution pixels) of the local NCC; ``None``: one global NCC
        per view.  Local is the choice for X-rays with scatter (module doc).
    """

    name = "xray"

    def __init__(self, sigma_px: float = 16.0, shell_mm: float = CORTEX_MM, roi_margin_px: float = 8.0,
                 window_px: float | None = LOCAL_WINDOW_PX):
        super().__init__(None)
        self.appearance = ShellCore(shell_mm)
        if window_px is not None and not window_px > 0:
            raise ValueError(f"window_px must be positive (or None: one global NCC), got {window_px}")
        self.sigma_px, self.roi_margin_px = float(sigma_px), float(roi_margin_px)
        self.shell_mm = self.appearance.shell_mm
        self.window_px = None if window_px is None else float(window_px)
        self.roi = None
        self.coefficients = None  # (n, 2) shell and core weights of the last call
        self._held = None  # local NCC: (mix (n, 2), variance floors (n, 2)) held from set_roi to set_roi
        self._prepared = None  # (key of the targets, H, H^T, band-passed targets)
        self._window = None

    def at_level(self, factor: int) -> "BoneXrayNCC":
        return BoneXrayNCC(self.sigma_px / factor, self.shell_mm, self.roi_margin_px / factor,
                           None if self.window_px is None else self.window_px / factor)

    def prepare(self, images) -> None:
        """The region of interest around these shell and core images (:meth:`set_roi`)."""
        self.set_roi(images)

    def set_roi(self, images) -> np.ndarray:
        """Region of interest (n, rows, cols) in [0, 1] from shell and core images (n, 2, rows, cols): the
        model's silhouette (where ``S + C``, the outer path length, is positive), dilated by the margin,
        softened by a Gaussian of a quarter of it."""
        outer = np.asarray(images, np.float64).sum(axis=1)
        roi = np.empty_like(outer)
        for i, o in enumerate(outer):
            inside = o > 0
            if not inside.any():
                raise ValueError(f"view {i}: the model projects outside the detector, no region of interest")
            near = ndimage.distance_transform_edt(~inside) <= self.roi_margin_px
            roi[i] = ndimage.gaussian_filter(near.astype(np.float64), max(self.roi_margin_px / 4, 0.5))
        self.roi = roi
        self._held = None  # the local NCC's mix is chosen again at the next call
        return roi

    def evaluate(self, images, target):
        r = np.asarray(images, np.float64)
        t = views(target)
        if r.ndim != 4 or r.shape[1] != 2 or r.shape[0] != len(t) or r.shape[2:] != t.shape[1:]:
            raise ValueError(f"need (views, 2, rows, cols) shell and core images for targets {t.shape}, "
                             f"got {r.shape}")
        key = (id(target), t.shape, float(t.sum()))
        if self._prepared is None or self._prepared[0] != key:  # the targets' band-pass, once per level
            high, high_t = bandpass(t.shape[1:], self.sigma_px)
            self._prepared = (key, high, high_t, [high(x) for x in t])
            self._held = None  # other targets: the local NCC's mix and floors are chosen again
        _, high, high_t, high_targets = self._prepared
        roi = np.ones_like(t) if self.roi is None else self.roi
        if roi.shape != t.shape:
            raise ValueError(f"region of interest {roi.shape} does not match the targets {t.shape}: call set_roi")
        local = self.window_px is not None
        if local:
            if self._window is None or self._window.norm.shape != t.shape[1:]:
                self._window = Window(t.shape[1:], self.window_px)
            if self._held is None:  # choose the mix and the variance floors at this render, hold them
                self._held = self._hold(r, roi, high, high_targets)
        val, grad = 0.0, np.zeros_like(r)
        self.coefficients = np.zeros((len(t), 2))
        for i in range(len(t)):
            shell, core, ht = r[i, 0], r[i, 1], high_targets[i]
            if local:  # the held mix; the windowed NCC
                c = self._held[0][i]
                v, g = self._window.ncc(high(c[0] * shell + c[1] * core), ht, roi[i], *self._held[1][i])
            else:  # the best mix for this render (variable projection); one NCC
                hs, hc = high(shell), high(core)
                c = self._mix(hs, hc, ht, roi[i])
                v, g = self._ncc(c[0] * hs + c[1] * hc, ht, roi[i])
            self.coefficients[i] = c
            val += v
            hg = high_t(g)  # linear: H^T (c g) = c H^T g
            grad[i, 0] = c[0] * hg
            grad[i, 1] = c[1] * hg
        n = len(t)
        return 1.0 - val / n, -grad / n

    @staticmethod
    def _mix(hs, hc, ht, roi) -> np.ndarray:
        """The best non-negative (shell, core) weights for band-passed images in a weighted region."""
        wn = roi / roi.sum()
        a = np.stack([hs - (wn * hs).sum(), hc - (wn * hc).sum()])
        b = ht - (wn * ht).sum()
        gram = np.einsum("ixy,jxy,xy->ij", a, a, wn)
        return _nonnegative_mix(gram, np.einsum("ixy,xy,xy->i", a, b, wn))

    def _hold(self, r, roi, high, high_targets) -> tuple:
        """The local NCC's (mix (n, 2), variance floors (n, 2)) at this render: the global fit's mix, floors
        of :data:`LOCAL_EPS` times the region's mean local variance of the mixed render and of the target."""
        mix, eps = np.zeros((len(r), 2)), np.zeros((len(r), 2))
        for i in range(len(r)):
            hs, hc = high(r[i, 0]), high(r[i, 1])
            mix[i] = self._mix(hs, hc, high_targets[i], roi[i])
            wn = roi[i] / roi[i].sum()
            for k, x in enumerate((mix[i, 0] * hs + mix[i, 1] * hc, high_targets[i])):
                eps[i, k] = LOCAL_EPS * float((wn * self._window.variance(x)).sum()) + _EPS
        return mix, eps


LOCAL_EPS = 1e-2  # variance floor of the local NCC, relative to the region's mean local variance
