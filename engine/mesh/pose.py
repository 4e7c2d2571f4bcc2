"""Rigid poses of meshes and the gradient of a loss with respect to them.

A pose is ``world_from_mesh`` (4x4 rigid).  Its update is parametrised in the
world frame by a small rotation vector ``delta`` (radians) about a centre ``c``
(default: the origin) and a translation ``tau`` (mm):

``x' = exp([delta]x) (x - c) + c + tau``

so at ``delta = tau = 0``, for world vertices x with loss gradient g (dL/dx):
``dL/dtau = sum g`` and ``dL/ddelta = sum (x - c) x g``.
"""
import numpy as np


def rotation_from_vector(rotvec) -> np.ndarray:
    """(3, 3) rotation of angle |rotvec| (radians) about rotvec (Rodrigues)."""
    r = np.asarray(rotvec, np.float64)
    a = np.linalg.norm(r)
    if a < 1e-15:
        return np.eye(3)
    k = r / a
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def perturb(world_from_mesh, delta, tau, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The pose after the world-frame update (delta rad, tau mm) about ``center`` (see module doc)."""
    c = np.asarray(center, np.float64)
    t = np.eye(4)
    rot = rotation_from_vector(delta)
    t[:3, :3] = rot
    t[:3, 3] = c - rot @ c + np.asarray(tau, np.float64)
    return t @ np.asarray(world_from_mesh, np.float64)


def pose_gradient(world_vertices, vertex_grad, center=(0.0, 0.0, 0.0)):
    """(dL/ddelta (3,), dL/dtau (3,)) from world vertices (V, 3) and dL/dvertices (V, 3)."""
    x = np.asarray(world_vertices, np.float64) - np.asarray(center, np.float64)
    g = np.asarray(vertex_grad, np.float64)
    return np.cross(x, g).sum(axis=0), g.sum(axis=0)
