"""Exact line integrals of a volume's trilinear interpolant, in NumPy: the reference the projector's
sampling is measured against (tests, ``benchmarks/drr.py``).

The ray is cut at every plane of voxel centres (where the clamped trilinear interpolant changes
polynomial piece) and at the volume's box (voxel ``i`` fills ``[i - 1/2, i + 1/2]``); on each piece the
interpolant is a cubic in the ray parameter, which Simpson's rule integrates exactly.  Slow (one ray
at a time, Python loops over none but scipy calls): for a few hundred rays.
"""
import numpy as np


def exact_trilinear_integral(values, index_from_world, lin, src_w, dst_w) -> float:
    """Exact line integral of the clamped trilinear interpolant of ``values`` from ``src_w`` to ``dst_w``.

    Parameters
    ----------
    values : (I, J, K) array
        Samples on the grid (e.g. g/cm^3).
    index_from_world : (4, 4) array
        Inverse of the grid's ``world_from_index``.
    lin : (3, 3) array
        The linear part of ``world_from_index`` (mm per index unit).
    src_w, dst_w : (3,) arrays
        Ray ends, world mm.

    Returns
    -------
    float
        values x mm (e.g. g/cm^3 x mm; divide by 10 for g/cm^2).
    """
    from scipy.ndimage import map_coordinates

    shape = np.array(values.shape)
    s = index_from_world[:3, :3] @ src_w + index_from_world[:3, 3]
    e = index_from_world[:3, :3] @ dst_w + index_from_world[:3, 3]
    d = e - s
    t0, t1 = 0.0, 1.0
    cuts = []
    for a in range(3):
        if abs(d[a]) < 1e-15:
            if not (-0.5 <= s[a] <= shape[a] - 0.5):
                return 0.0
            continue
        ta, tb = sorted(((-0.5 - s[a]) / d[a], (shape[a] - 0.5 - s[a]) / d[a]))
        t0, t1 = max(t0, ta), min(t1, tb)
        cuts.append((np.arange(shape[a]) - s[a]) / d[a])
    if t1 <= t0:
        return 0.0
    ts = np.concatenate([[t0, t1]] + cuts)
    ts = np.unique(ts[(ts >= t0) & (ts <= t1)])
    a_, b_ = ts[:-1], ts[1:]
    pts = np.concatenate([a_, (a_ + b_) / 2, b_])
    coords = s[:, None] + d[:, None] * pts[None]
    f = map_coordinates(np.asarray(values, np.float64), coords, order=1, mode="nearest")
    n = len(a_)
    fa, fm, fb = f[:n], f[n:2 * n], f[2 * n:]
    length_per_t = np.linalg.norm(np.asarray(lin) @ d)
    return float(np.sum((b_ - a_) / 6 * (fa + 4 * fm + fb)) * length_per_t)


def exact_image(volume_values, world_from_index, cam, pixels) -> np.ndarray:
    """Exact integrals (values x mm) for the detector pixels ``pixels`` ((n, 2) rows, cols) of an engine Camera."""
    a = np.asarray(world_from_index, np.float64)
    inv = np.linalg.inv(a)
    src, tgt = cam.rays()
    return np.array([exact_trilinear_integral(volume_values, inv, a[:3, :3], src, tgt[r, c]) for r, c in pixels])
