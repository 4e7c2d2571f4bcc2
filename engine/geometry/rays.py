"""The ray of a detector pixel, as every kernel computes it, and the camera table the kernels read.

**View table** (:func:`view_table`): per camera, rows of 3 reals in one frame (world mm, or a volume's
voxel-index frame when ``frame_from_world`` is given):

====  ===============================================================================
row   content
====  ===============================================================================
0     the source ``s``
1     the centre of pixel ``[0, 0]``, ``p00``
2     the step per column ``du`` (:attr:`Camera.u_axis` times the column pitch)
3     the step per row ``dv`` (:attr:`Camera.v_axis` times the row pitch)
4, 5  with ``dual=True``: the detector plane's dual basis ``eu``, ``ev`` (``eu . du = 1``,
      ``eu . dv = 0``, ``ev . dv = 1``, ``ev . du = 0``), for the rasteriser's projections
====  ===============================================================================

(:meth:`Camera.pixel_grid` gives rows 0-3 in the world frame.)  Non-square pixels need nothing more:
``du`` and ``dv`` carry their own pitches.

**The ray of pixel** ``[r, c]`` (row ``r``, column ``c``) runs from ``s`` to the pixel's centre,
``x(t) = s + t d`` with ``d = p00 + c du + r dv - s`` and ``t`` in ``[0, 1]``.  :func:`pixel_ray_func` is
that expression as a Taichi function, the one every kernel calls (the CT ray marching of
:mod:`engine.volume.march`, the mesh rasteriser, BVH traversal and vertex adjoint through
:mod:`engine.mesh.ray_triangle`), so a pixel's ray is the same, to the bit, in all of them.
"""
from __future__ import annotations

import functools

import numpy as np

VIEW_ROWS = 4  # rows of 3 per camera in a view table (6 with the dual basis)


def view_table(cameras, frame_from_world=None, *, dual: bool = False) -> np.ndarray:
    """(n, 4, 3) float64 rows (source, pixel [0, 0] centre, column step, row step) of each camera, or
    (n, 6, 3) with the detector plane's dual basis (``dual=True``); see the module doc.

    Parameters
    ----------
    cameras : sequence of Camera
    frame_from_world : (4, 4) array, optional
        An affine map applied to the rows (points by the full map, steps by its linear part), e.g. a volume's
        ``index_from_world``; the dual basis, when asked for, is that of the mapped steps.
    """
    out = np.empty((len(cameras), VIEW_ROWS + (2 if dual else 0), 3))
    a = None if frame_from_world is None else np.asarray(frame_from_world, np.float64)
    for i, cam in enumerate(cameras):
        src, p00, du, dv = cam.pixel_grid()
        if a is not None:
            src, p00, du, dv = a[:3, :3] @ src + a[:3, 3], a[:3, :3] @ p00 + a[:3, 3], a[:3, :3] @ du, a[:3, :3] @ dv
        out[i, :4] = src, p00, du, dv
        if dual:
            gram = np.array([[du @ du, du @ dv], [du @ dv, dv @ dv]])
            out[i, 4:] = np.linalg.solve(gram, np.stack([du, dv]))
    return out


@functools.lru_cache(maxsize=None)
def pixel_ray_func(bits: int):
    """The Taichi function ``pixel_ray(s, p00, du, dv, r, c) -> (o, d)`` in float type ``bits`` (32 or 64), built
    once per process: the origin ``o = s`` and vector ``d = p00 + c du + r dv - s`` of the ray of pixel
    ``[r, c]`` (integers) from the view-table rows (3-vectors of that type; module doc)."""
    from .. import backend

    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32

    @ti.func
    def pixel_ray(s, p00, du, dv, r, c):
        # THE ray of pixel [r, c]: from the source to the pixel's centre (t = 1)
        return s, p00 + ti.cast(c, real) * du + ti.cast(r, real) * dv - s

    return pixel_ray
