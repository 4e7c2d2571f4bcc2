"""Rotations and rigid poses, with their derivatives: the one implementation the engine uses.

Conventions (docs/conventions.md):

* A rotation vector ``v`` (radians) is the rotation of angle ``|v|`` about the axis ``v / |v|``,
  ``R(v) = exp([v]x)`` (:func:`rotation_from_vector`, Rodrigues); ``[w]x`` is the skew matrix with
  ``[w]x a = w x a`` (:func:`skew`).
* A rigid pose ``world_from_mesh`` (4x4, mm) is moved in the world frame by a rotation vector ``delta``
  (radians) about a centre ``c`` and a translation ``tau`` (mm):

  ``x' = exp([delta]x) (x - c) + c + tau``

  :func:`pose_matrix` is that move as a 4x4 matrix of the pose ``p = (delta, tau)`` (6,), and
  :func:`perturb` applies it to a pose.  At ``delta = tau = 0``, for world points ``x`` with loss gradient
  ``g = dL/dx``: ``dL/dtau = sum g`` and ``dL/ddelta = sum (x - c) x g`` (:func:`pose_gradient`).
* Derivatives: :func:`rotation_jacobian` (``dR/dv_i``), :func:`left_jacobian` of SO(3),
  :func:`pose_parameter_gradient` (the gradient in ``p`` from that of a further small move composed on the
  right, what a renderer that sees the pose through moved cameras returns) and :func:`pose_matrix_gradient`
  (the same as a 4x4 matrix gradient, for a user's own parameterisation of rigid matrices).
"""
from __future__ import annotations

import numpy as np


def skew(w) -> np.ndarray:
    """(3, 3) skew matrix ``[w]x`` of a 3-vector: ``skew(w) @ a == np.cross(w, a)``."""
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]], np.float64)


def axis_rotation(axis: str, angle: float) -> np.ndarray:
    """(3, 3) rotation of ``angle`` (radians, right-handed) about the coordinate axis ``"x"``, ``"y"`` or ``"z"``."""
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")


def rotation_from_vector(rotvec) -> np.ndarray:
    """(3, 3) rotation of angle |rotvec| (radians) about rotvec (Rodrigues)."""
    r = np.asarray(rotvec, np.float64)
    a = np.linalg.norm(r)
    if a < 1e-15:
        return np.eye(3)
    kx = skew(r / a)
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def vector_from_rotation(rot) -> np.ndarray:
    """Rotation vector (radians) of a (3, 3) rotation matrix: the inverse of :func:`rotation_from_vector`,
    stable near 0 and pi."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


def rotation_angle(rot) -> float:
    """Angle (radians, in [0, pi]) of a (3, 3) rotation, from its trace (clipped against rounding)."""
    return float(np.arccos(np.clip((np.trace(np.asarray(rot, np.float64)) - 1) / 2, -1.0, 1.0)))


def mean_rotation(rotations) -> np.ndarray:
    """The chordal L2 mean of (n, 3, 3) rotations (SVD projection of their sum onto SO(3))."""
    u, _, vt = np.linalg.svd(np.sum(rotations, axis=0))
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0]) @ vt


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
        return np.stack([skew(e[i]) for i in range(3)])
    r = rotation_from_vector(v)
    vx = skew(v)
    return np.stack([(v[i] * vx + skew(np.cross(v, (e - r) @ e[i]))) @ r / n2 for i in range(3)])


def left_jacobian(rotvec) -> np.ndarray:
    """(3, 3) left Jacobian of SO(3) at ``rotvec`` (rad): ``R(v + e) = exp([J_l(v) e]x) R(v)`` to first order
    (its transpose is the right Jacobian: ``R(v + e) = R(v) exp([J_l(v)^T e]x)``)."""
    v = np.asarray(rotvec, np.float64)
    th = float(np.linalg.norm(v))
    k = skew(v)
    if th < 1e-6:
        return np.eye(3) + 0.5 * k + k @ k / 6.0
    return np.eye(3) + (1 - np.cos(th)) / th ** 2 * k + (th - np.sin(th)) / th ** 3 * k @ k


def pose_matrix(pose, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """(4, 4) world-frame move of a pose ``(delta (3, rad), tau (3, mm))`` about ``center`` (mm):
    ``x -> R(delta) (x - c) + c + tau`` (module doc)."""
    p = np.asarray(pose, np.float64)
    if p.shape != (6,):
        raise ValueError(f"a pose is 6 numbers (rotation vector rad, translation mm), got shape {p.shape}")
    c = np.asarray(center, np.float64)
    t = np.eye(4)
    rot = rotation_from_vector(p[:3])
    t[:3, :3] = rot
    t[:3, 3] = c - rot @ c + p[3:]
    return t


def perturb(world_from_mesh, delta, tau, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The pose after the world-frame update (delta rad, tau mm) about ``center`` (see module doc)."""
    move = pose_matrix(np.concatenate([np.asarray(delta, np.float64), np.asarray(tau, np.float64)]), center)
    return move @ np.asarray(world_from_mesh, np.float64)


def pose_gradient(world_points, point_grad, center=(0.0, 0.0, 0.0)):
    """(dL/ddelta (3,), dL/dtau (3,)) at ``delta = tau = 0`` from world points (V, 3) (e.g. a mesh's vertices)
    and dL/dpoints (V, 3)."""
    x = np.asarray(world_points, np.float64) - np.asarray(center, np.float64)
    g = np.asarray(point_grad, np.float64)
    return np.cross(x, g).sum(axis=0), g.sum(axis=0)


def pose_parameter_gradient(pose, g_right) -> np.ndarray:
    """(6,) dL/d(delta, tau) of a pose ``M = pose_matrix((delta, tau), c)`` from the gradient ``g_right`` (6,) for
    a further small move ``N`` (about the same centre) composed on the right, ``M N`` (what a renderer that
    sees the pose through moved cameras returns, e.g. :meth:`engine.volume.VolumeProjector.vjp`).

    ``M(p + dp) = M(p) N`` gives ``omega_N = J_r(delta) d delta`` and ``tau_N = R(delta)^T d tau``, so
    ``dL/d delta = J_l(delta) g_omega`` and ``dL/d tau = R(delta) g_tau``.
    """
    p = np.asarray(pose, np.float64)
    g = np.asarray(g_right, np.float64)
    return np.concatenate([left_jacobian(p[:3]) @ g[:3], rotation_from_vector(p[:3]) @ g[3:]])


def pose_matrix_gradient(m, g_right, center) -> np.ndarray:
    """(4, 4) d loss / d M of a rigid world move ``M`` (mm) from the gradient ``g_right`` (6,) (rad, mm) of a
    further small move ``N`` about ``center`` (mm), composite ``M N``.

    ``dM = M A`` with ``A = [[omega]x, tau - [omega]x c; 0, 0]`` for the small move N, and the gradient is
    ``G = M^-T K``, ``K = [[[v]x / 2, g_tau]; 0]``, ``v = g_omega + c x g_tau``: the gradient of the rigid
    motion (``<G, dM> = g_omega . omega + g_tau . tau`` for every tangent ``dM``; its component along non-rigid
    directions is not defined and is zero in that basis).
    """
    g_omega, g_tau = np.asarray(g_right[:3], np.float64), np.asarray(g_right[3:], np.float64)
    v = g_omega + np.cross(np.asarray(center, np.float64), g_tau)
    k = np.zeros((4, 4))
    k[:3, :3] = 0.5 * skew(v)
    k[:3, 3] = g_tau
    return np.linalg.inv(np.asarray(m, np.float64)).T @ k
