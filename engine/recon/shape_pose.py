"""The unknowns of a reconstruction and their map to world vertices, with its exact adjoint.

World vertices of a model instance (model frame -> world, mm):

``x_v = s R(r) (y_v(c) + d_v - c0) + p``

- ``c`` (K,): shape coefficients in standard deviations, ``y(c) = mean + basis c``
- ``r`` (3,): rotation vector (axis * angle, radians), ``R`` by Rodrigues
- ``p`` (3,): world position (mm) of the model's centre ``c0`` (centroid of the mean)
- ``log_s``: log of an isotropic scale (0 = none)
- ``d`` (V, 3): free per-vertex displacements (mm, model frame), zero until the last stage

:meth:`ShapePose.backward` turns ``dL/dx`` (V, 3) into the gradients of all groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry.transforms import rotation_from_vector, rotation_jacobian, vector_from_rotation
from ..ssm.model import ShapeModel

GROUPS = ("shape", "rotation", "translation", "scale", "free")


@dataclass
class Params:
    """Values of the unknowns (see module doc), as a dict of arrays keyed by group name."""

    shape: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    free: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {g: getattr(self, g) for g in GROUPS}

    def copy(self) -> "Params":
        return Params(**{g: np.array(v, np.float64) for g, v in self.as_dict().items()})


class ShapePose:
    """Model instance posed in the world: ``vertices(params)`` and ``backward(params, dL/dx)``."""

    def __init__(self, model: ShapeModel):
        self.model = model
        self.basis = model.basis  # (3V, K)
        self.center = model.mean.mean(axis=0)

    def initial(self, world_from_model=None, coeffs=None) -> Params:
        """Parameters for a rigid (or similarity) 4x4 ``world_from_model`` and optional coefficients."""
        t = np.eye(4) if world_from_model is None else np.asarray(world_from_model, np.float64)
        a = t[:3, :3]
        s = float(np.cbrt(np.linalg.det(a)))
        if not s > 0:
            raise ValueError("world_from_model must be a proper rigid or similarity transform")
        rot = a / s
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-6):
            raise ValueError("world_from_model must be rigid or a similarity (rotation times a scale)")
        c = np.zeros(self.model.n_modes)
        if coeffs is not None:
            cc = np.asarray(coeffs, np.float64).reshape(-1)
            c[:len(cc)] = cc
        return Params(shape=c, rotation=vector_from_rotation(rot), translation=s * rot @ self.center + t[:3, 3],
                      scale=np.array([np.log(s)]), free=np.zeros_like(self.model.mean))

    def local(self, p: Params) -> np.ndarray:
        """(V, 3) model-frame vertices ``y(c) + d`` (mm)."""
        return self.model.mean + (self.basis @ p.shape).reshape(-1, 3) + p.free

    def world_from_model(self, p: Params) -> np.ndarray:
        """The 4x4 similarity transform ``x = s R (y - c0) + p`` as a matrix."""
        m = np.eye(4)
        sr = np.exp(p.scale[0]) * rotation_from_vector(p.rotation)
        m[:3, :3] = sr
        m[:3, 3] = p.translation - sr @ self.center
        return m

    def vertices(self, p: Params) -> np.ndarray:
        """(V, 3) world vertices (mm)."""
        sr = np.exp(p.scale[0]) * rotation_from_vector(p.rotation)
        return (self.local(p) - self.center) @ sr.T + p.translation

    def backward(self, p: Params, grad_x) -> Params:
        """Gradients of all groups from ``dL/dx`` (V, 3) (world vertex gradients)."""
        g = np.asarray(grad_x, np.float64)
        s = np.exp(p.scale[0])
        rot = rotation_from_vector(p.rotation)
        q = self.local(p) - self.center
        w = s * g @ rot  # dL/dy_v = s R^T g_v, (V, 3)
        d_rot = s * g.T @ q  # dL/dR = sum_v g_v (s q_v)^T
        jac = rotation_jacobian(p.rotation)
        return Params(shape=self.basis.T @ w.reshape(-1),
                      rotation=np.einsum("jk,ijk->i", d_rot, jac),
                      translation=g.sum(axis=0),
                      scale=np.array([float(np.sum(g * (q @ rot.T))) * s]),
                      free=w)
