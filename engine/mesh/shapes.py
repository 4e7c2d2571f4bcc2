"""Closed meshes built in code for tools and implants (mm, world frame)."""
import numpy as np

from .mesh import Mesh, make_mesh


def rod(radius: float, length: float, start, direction, *, tip: float | None = None, segments: int = 32) -> Mesh:
    """A closed rod: a cylinder of ``radius`` from ``start`` along ``direction`` with a conical tip of length
    ``tip`` (default 2 radii) ending ``length`` mm from ``start``; a flat cap at ``start``.  Outward oriented,
    watertight (a screw's shank without its thread, a K-wire, a needle)."""
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    tip = 2.0 * radius if tip is None else float(tip)
    if not (radius > 0 and length > tip >= 0 and segments >= 3):
        raise ValueError("rod needs radius > 0, length > tip >= 0 and at least 3 segments")
    a = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(d, a)
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = radius * (np.cos(t)[:, None] * a + np.sin(t)[:, None] * b)
    s = np.asarray(start, np.float64)
    base, top = s + ring, s + (length - tip) * d + ring
    verts = np.vstack([base, top, s[None], (s + length * d)[None]])
    n = segments
    c0, c1 = 2 * n, 2 * n + 1
    faces = []
    for i in range(n):
        j = (i + 1) % n
        faces += [[i, j, n + j], [i, n + j, n + i], [c0, j, i], [n + i, n + j, c1]]
    return make_mesh(verts, np.array(faces))
