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


def vector_from_rotation(rot) -> np.ndarray:
    """Rotation vector (radians) of a (3, 3) rotation matrix: the inverse of :func:`rotation_from_vector`,
    stable near 0 and pi."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


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


def _skew(w) -> np.ndarray:
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]], np.float64)


def rotation_jacobian(rotvec) -> np.ndarray:
    """(3, 3, 3): ``J[i] = dR/d rotvec_i`` of :func:`rotation_from_vector`.

    The closed form of G. Gallego and A. Yezzi, "A compact formula for the
    derivative of a 3-D rotation in exponential coordinates", J Math Imaging Vis
    51, 2015: ``dR/dv_i = (v_i [v]x + [v x (I - R) e_i]x) R / |v|^2``, and
    ``[e_i]x`` at ``v = 0``.
    """
    v = np.asarray(rotvec, np.float64)
    e = np.eye(3)
    n2 = float(v @ v)
    if n2 < 1e-20:
        return np.stack([_skew(e[i]) for i in range(3)])
    r = rotation_from_vector(v)
    vx = _skew(v)
    return np.stack([(v[i] * vx + _skew(np.cross(v, (e - r) @ e[i]))) @ r / n2 for i in range(3)])


def left_jacobian(rotvec) -> np.ndarray:
    """(3, 3) left Jacobian of SO(3) at ``rotvec`` (rad): ``R(v + e) = exp([J_l(v) e]x) R(v)`` to first order
    (its transpose is the right Jacobian: ``R(v + e) = R(v) exp([J_l(v)^T e]x)``)."""
    v = np.asarray(rotvec, np.float64)
    th = float(np.linalg.norm(v))
    k = _skew(v)
    if th < 1e-6:
        return np.eye(3) + 0.5 * k + k @ k / 6.0
    return np.eye(3) + (1 - np.cos(th)) / th ** 2 * k + (th - np.sin(th)) / th ** 3 * k @ k


def pose_parameter_gradient(pose, g_right) -> np.ndarray:
    """(6,) dL/d(delta, tau) of a pose ``M = perturb(I, delta, tau, c)`` from the gradient ``g_right`` (6,) for
    a further small move ``N`` (about the same centre) composed on the right, ``M N`` (what a renderer that
    sees the pose through moved cameras returns, e.g. :meth:`engine.volume.VolumeProjector.vjp`).

    ``M(p + dp) = M(p) N`` gives ``omega_N = J_r(delta) d delta`` and ``tau_N = R(delta)^T d tau``, so
    ``dL/d delta = J_l(delta) g_omega`` and ``dL/d tau = R(delta) g_tau``.
    """
    p = np.asarray(pose, np.float64)
    g = np.asarray(g_right, np.float64)
    return np.concatenate([left_jacobian(p[:3]) @ g[:3], rotation_from_vector(p[:3]) @ g[3:]])
