"""The saved state of a CT projection and the pose gradient assembled from per-ray gradients.

:meth:`engine.volume.VolumeProjector.vjp` runs the adjoint kernel
(:func:`engine.volume.march.planes_vjp_kernel`), which returns per ray the gradient of the loss with
respect to the ray's source ``s`` and vector ``d`` in voxel-index coordinates.  A rigid move of the
volume, ``x' = exp([delta]x) (x - c) + c + tau`` in the world frame (the convention of
:mod:`engine.geometry.transforms`), is the inverse move of every ray: a world point ``x`` of a ray is, in the volume's own
frame, ``x - delta x (x - c) - tau`` to first order, so with ``B`` the linear part of index_from_world

    dL/d delta = sum_rays (B^T gs) x (src - c) + (B^T gd) x (pixel - src),     dL/d tau = -sum_rays B^T gs.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProjectionState:
    """What :meth:`VolumeProjector.vjp` needs of a :meth:`VolumeProjector.forward`: its cameras and the
    (n, M, rows, cols) image shape."""

    cameras: tuple
    shape: tuple
    version: int = 0  # the projector's density version (VolumeProjector.set_density)


def pose_gradient_from_rays(cam, ray_grads, index_from_world, center) -> np.ndarray:
    """(6,) dL/d(delta (3, rad), tau (3, mm)) of one view from its per-ray gradients.

    Parameters
    ----------
    cam : engine Camera
    ray_grads : (rows, cols, 6) array
        dL/ds (3) and dL/dd (3) of every ray, voxel-index coordinates.
    index_from_world : (4, 4) array
        The volume's inverse affine.
    center : (3,) array
        Centre of the rotation, world mm.
    """
    b = np.asarray(index_from_world, np.float64)[:3, :3]
    src, tgt = cam.rays()
    gs = ray_grads[..., :3].reshape(-1, 3) @ b  # B^T gs per ray
    gd = ray_grads[..., 3:].reshape(-1, 3) @ b
    lever = np.asarray(src, np.float64) - np.asarray(center, np.float64)
    dvec = tgt.reshape(-1, 3) - src
    g_delta = np.cross(gs.sum(axis=0), lever) + np.cross(gd, dvec).sum(axis=0)
    return np.concatenate([g_delta, -gs.sum(axis=0)])
