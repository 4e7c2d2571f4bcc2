"""A loss for real (or physics-simulated) X-rays of bone: band-pass NCC against a cortical-shell + core image.

An X-ray of bone is not its path length.  Bone is a thin, dense cortical shell
around a light cancellous core, and the shell dominates the picture: the outline,
where rays run tangentially through the cortex, is bright; the inside of a thick
bone (the sacrum) is dim; a thin plate (the iliac wing) is all cortex.  The mesh
renderer's uniform path length through the model shows the opposite (bright in the
thick middle), and its band-passed image correlates poorly with the X-ray even at
the true shape and pose.

So the model is rendered twice in one launch (:class:`engine.mesh.MeshProjector`
with two meshes): the outer surface ``x`` and an inner surface offset inward by a
cortical thickness ``t`` along the vertex normals, ``x - t n(x)``.  With ``L_out``
and ``L_in`` the path lengths (mm) through them, the shell and core images are

``S = L_out - max(L_in, 0)``,  ``C = max(L_in, 0)``

(where the bone is thinner than ``2 t`` the inner surface turns inside out and
``L_in`` can go negative: there is no core there, the clamp says so).  The
excess attenuation of bone over the soft tissue it displaces is ``a S + b C`` with
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

The inner surface's gradient flows back through the vertex normals exactly
(:func:`offset_surface_vjp`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..mesh.mesh import vertex_normal_sums, vertex_normals
from .losses import _EPS, NCC, _views

CORTEX_MM = 1.0  # default cortical thickness: pelvic cortex is about 0.5-2 mm thick


def offset_surface(vertices, faces, distance: float) -> np.ndarray:
    """(V, 3) vertices moved by ``-distance`` mm along their unit normals (inward for an outward mesh)."""
    return np.asarray(vertices, np.float64) - float(distance) * vertex_normals(vertices, faces)


def offset_surface_vjp(vertices, faces, distance: float, grad_offset) -> np.ndarray:
    """d(loss)/d(vertices) (V, 3) of :func:`offset_surface` for d(loss)/d(offset vertices), exactly.

    ``n_v = m_v / |m_v|`` with ``m_v`` the sum of the adjacent faces' ``(b - a) x (c - a)``.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces)
    g = np.asarray(grad_offset, np.float64)
    m = vertex_normal_sums(v, f)
    norm = np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-300)
    n = m / norm
    g_n = -float(distance) * g
    g_m = (g_n - n * (n * g_n).sum(1, keepdims=True)) / norm
    g_fn = g_m[f[:, 0]] + g_m[f[:, 1]] + g_m[f[:, 2]]
    t = v[f]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    g_b, g_c = np.cross(e2, g_fn), np.cross(g_fn, e1)  # d/de1 (e1 x e2) . g = e2 x g; d/de2 = g x e1
    out = g.copy()
    np.add.at(out, f[:, 1], g_b)
    np.add.at(out, f[:, 2], g_c)
    np.add.at(out, f[:, 0], -(g_b + g_c))
    return out


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

    Parameters
    ----------
    sigma_px : float
        Width of the band-pass' Gaussian, pixels of the full-resolution detector.
    shell_mm : float
        Cortical thickness ``t`` (mm) of the inner offset surface.
    roi_margin_px : float
        Margin of the region of interest around the projected model, full-resolution pixels.
    """

    name = "xray"
    channels = 2

    def __init__(self, sigma_px: float = 16.0, shell_mm: float = CORTEX_MM, roi_margin_px: float = 8.0):
        super().__init__(None)
        if not shell_mm > 0:
            raise ValueError(f"shell_mm must be positive, got {shell_mm}")
        self.sigma_px, self.shell_mm, self.roi_margin_px = float(sigma_px), float(shell_mm), float(roi_margin_px)
        self.roi = None
        self.coefficients = None  # (n, 2) shell and core weights of the last call

    def at_level(self, factor: int) -> "BoneXrayNCC":
        return BoneXrayNCC(self.sigma_px / factor, self.shell_mm, self.roi_margin_px / factor)

    def set_roi(self, rendered) -> np.ndarray:
        """Region of interest (n, rows, cols) in [0, 1] from a render (n, 2, rows, cols): the outer
        silhouette, dilated by the margin, softened by a Gaussian of a quarter of it."""
        outer = np.asarray(rendered, np.float64)[:, 0]
        roi = np.empty_like(outer)
        for i, o in enumerate(outer):
            inside = o > 0
            if not inside.any():
                raise ValueError(f"view {i}: the model projects outside the detector, no region of interest")
            near = ndimage.distance_transform_edt(~inside) <= self.roi_margin_px
            roi[i] = ndimage.gaussian_filter(near.astype(np.float64), max(self.roi_margin_px / 4, 0.5))
        self.roi = roi
        return roi

    def _filters(self, shape):
        blur = (lambda x: ndimage.gaussian_filter(x, self.sigma_px, mode="constant", truncate=3.0))
        norm = blur(np.ones(shape))
        return (lambda x: x - blur(x) / norm), (lambda y: y - blur(y / norm))

    def __call__(self, rendered, target):
        r = np.asarray(rendered, np.float64)
        t = _views(target)
        if r.ndim != 4 or r.shape[1] != 2 or r.shape[0] != len(t) or r.shape[2:] != t.shape[1:]:
            raise ValueError(f"need (views, 2, rows, cols) outer/inner path lengths for targets {t.shape}, "
                             f"got {r.shape}")
        key = (id(target), t.shape, float(t.sum()))
        if getattr(self, "_prepared", (None,))[0] != key:  # the targets' band-pass, once per level
            high, high_t = self._filters(t.shape[1:])
            self._prepared = (key, high, high_t, [high(x) for x in t])
        _, high, high_t, high_targets = self._prepared
        roi = np.ones_like(t) if self.roi is None else self.roi
        if roi.shape != t.shape:
            raise ValueError(f"region of interest {roi.shape} does not match the targets {t.shape}: call set_roi")
        val, grad = 0.0, np.zeros_like(r)
        self.coefficients = np.zeros((len(t), 2))
        for i in range(len(t)):
            core = np.maximum(r[i, 1], 0.0)
            hs, hc, ht = high(r[i, 0] - core), high(core), high_targets[i]
            wn = roi[i] / roi[i].sum()
            a = np.stack([hs - (wn * hs).sum(), hc - (wn * hc).sum()])
            b = ht - (wn * ht).sum()
            gram = np.einsum("ixy,jxy,xy->ij", a, a, wn)
            c = _nonnegative_mix(gram, np.einsum("ixy,xy,xy->i", a, b, wn))
            self.coefficients[i] = c
            v, g = self._ncc(c[0] * hs + c[1] * hc, ht, roi[i])
            val += v
            hg = high_t(g)  # linear: H^T (c g) = c H^T g
            gs, gc = c[0] * hg, c[1] * hg
            grad[i, 0] = gs
            grad[i, 1] = (gc - gs) * (r[i, 1] > 0)
        n = len(t)
        return 1.0 - val / n, -grad / n
