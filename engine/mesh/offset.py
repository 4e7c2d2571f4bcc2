"""Offset surfaces: a closed mesh's vertices moved along their unit normals, and the exact adjoint.

Used by the bone X-ray appearance (:class:`engine.recon.appearance.ShellCore`): the inner surface of a
cortical shell of thickness ``t`` is ``x - t n(x)``.  Vertices in mm (any frame), ``n`` the area-weighted unit
vertex normals of :func:`engine.mesh.vertex_normals` (outward for an outward-oriented mesh).
"""
from __future__ import annotations

import numpy as np

from .mesh import vertex_normal_sums, vertex_normals


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
