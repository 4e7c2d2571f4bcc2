"""Appearance models: what a shape model looks like in the images a loss compares, from its mesh renders.

Reconstruction renders the posed model with the differentiable mesh renderer
(:class:`engine.mesh.MeshProjector`: path length in mm through each surface, per detector pixel) and an
appearance model turns those renders into the images the similarity compares with the targets.  The
appearance is part of the forward model, separate from the similarity (:mod:`engine.recon.losses`):

- :class:`PathLength`: the model's path length itself, one surface, ``(n, rows, cols)``; the appearance of
  the losses ``mse``, ``ncc``, ``gncc``, ``bncc``, ``silhouette``.
- :class:`ShellCore`: bone as a cortical shell of thickness ``t`` around a core.  Two surfaces are rendered,
  the outer one ``x`` and an inner one offset inward by ``t`` along the vertex normals
  (:func:`engine.mesh.offset_surface`); with ``L_out``, ``L_in`` their path lengths the images are the shell
  ``S = L_out - max(L_in, 0)`` and the core ``C = max(L_in, 0)``, ``(n, 2, rows, cols)`` (where the bone is
  thinner than ``2 t`` the inner surface turns inside out and ``L_in`` goes negative: no core there).  The
  appearance of the ``xray`` loss (:class:`engine.recon.losses.BoneXrayNCC`), which mixes ``S`` and ``C``.

Every appearance model has the same interface (the differentiable-stage convention of docs/architecture.md):

- ``surfaces(vertices, faces) -> list of (V, 3)``: the vertex arrays to render, world mm, one per name of
  ``surface_names``;
- ``surfaces_vjp(vertices, faces, grads) -> (V, 3)``: d loss / d vertices from d loss / d each surface;
- ``forward(renders) -> (images, state)``: ``renders`` ``(n, S, rows, cols)`` path lengths (mm), one channel
  per surface; ``vjp(state, grad) -> (n, S, rows, cols)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mesh.offset import offset_surface, offset_surface_vjp

CORTEX_MM = 1.0  # default cortical thickness: pelvic cortex is about 0.5-2 mm thick


class PathLength:
    """The path length (mm) through the model's surface: one surface, images ``(n, rows, cols)``."""

    surface_names = ("bone",)

    def surfaces(self, vertices, faces) -> list:
        return [np.asarray(vertices, np.float64)]

    def surfaces_vjp(self, vertices, faces, grads) -> np.ndarray:
        return np.asarray(grads[0], np.float64)

    def forward(self, renders):
        r = np.asarray(renders, np.float64)
        return r[:, 0], r.shape

    def vjp(self, state, grad) -> np.ndarray:
        return np.asarray(grad, np.float64).reshape(state)

    def __repr__(self) -> str:
        return "PathLength()"


@dataclass(frozen=True)
class ShellCoreState:
    """What :meth:`ShellCore.vjp` needs: where the inner surface's path length is positive (n, rows, cols)."""

    core_mask: np.ndarray


class ShellCore:
    """Cortical shell and core images ``(n, 2, rows, cols)`` from outer and inner (offset) surfaces (module doc).

    ``shell_mm``: the cortical thickness ``t`` (mm) of the inner offset surface."""

    surface_names = ("outer", "inner")

    def __init__(self, shell_mm: float = CORTEX_MM):
        if not shell_mm > 0:
            raise ValueError(f"shell_mm must be positive, got {shell_mm}")
        self.shell_mm = float(shell_mm)

    def surfaces(self, vertices, faces) -> list:
        x = np.asarray(vertices, np.float64)
        return [x, offset_surface(x, faces, self.shell_mm)]

    def surfaces_vjp(self, vertices, faces, grads) -> np.ndarray:
        return np.asarray(grads[0], np.float64) + offset_surface_vjp(vertices, faces, self.shell_mm, grads[1])

    def forward(self, renders):
        """``(S, C)`` images (n, 2, rows, cols) from outer/inner path lengths (n, 2, rows, cols), mm."""
        r = np.asarray(renders, np.float64)
        if r.ndim != 4 or r.shape[1] != 2:
            raise ValueError(f"need (views, 2, rows, cols) outer/inner path lengths, got {r.shape}")
        core = np.maximum(r[:, 1], 0.0)
        return np.stack([r[:, 0] - core, core], axis=1), ShellCoreState(r[:, 1] > 0)

    def vjp(self, state: ShellCoreState, grad) -> np.ndarray:
        """d loss / d (outer, inner) from d loss / d (shell, core): ``S = L_out - C``, ``C = max(L_in, 0)``."""
        g = np.asarray(grad, np.float64)
        return np.stack([g[:, 0], (g[:, 1] - g[:, 0]) * state.core_mask], axis=1)

    def __repr__(self) -> str:
        return f"ShellCore(shell_mm={self.shell_mm})"
