"""PyTorch bridge (optional: ``pip install -e ".[torch]"``, torch 2.13.0): the engine's renderers as autograd
functions and modules.

- :class:`CTDRR`: per-material CT DRRs (g/cm^2) of a :class:`engine.volume.VolumeProjector` for a batch of
  volume poses ``(n, 6)`` (rotation vector, rad; translation, mm) or ``(n, 4, 4)`` rigid matrices, and optionally
  a density volume tensor ``(M, I, J, K)`` (g/cm^3), differentiable with respect to both.
- :class:`MeshLengths`: path lengths (mm) through a :class:`engine.mesh.MeshProjector`'s meshes as a function
  of their vertices ``(V, 3)``.
- :class:`DRRDataset` / :class:`WrittenDataset`: a dataset plan's images and labels, rendered on the fly or read
  from ``engine dataset``'s files.
- :class:`Physics`: the noiseless detector image from per-material mass thickness (g/cm^2) through a
  :class:`engine.physics.PhysicsChain` (spectrum, detector, scatter, ``-ln``).

Images are computed by Taichi kernels and returned as float32 (float64 with ``storage="f64"``) CPU tensors;
gradients come from the projector's hand-written adjoint (:meth:`VolumeProjector.vjp`).
"""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("engine.torch needs PyTorch: pip install -e \".[torch]\" (torch==2.13.0)") from e

from .dataset import DRRDataset, WrittenDataset
from ..geometry.transforms import pose_matrix
from .drr import CTDRR
from .mesh import MeshLengths
from .physics import Physics

__all__ = ["CTDRR", "DRRDataset", "MeshLengths", "Physics", "WrittenDataset", "pose_matrix"]
