"""Mesh path lengths as a PyTorch autograd function of the vertices.

``MeshLengths(projector, cameras)(vertices)`` sets the projector's vertices, renders with
:meth:`engine.mesh.MeshProjector.forward` (which keeps the render's hits in an explicit state) and
differentiates with :meth:`~engine.mesh.MeshProjector.vjp` on that state: the intersection derivative
(silhouettes excluded: see :mod:`engine.mesh.projector`; ``soft_sigma_px`` or ``supersample`` on the
projector widen it).
"""
import numpy as np
import torch


class _Lengths(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vertices, module):
        mp = module.projector
        mp.set_vertices(vertices.detach().cpu().numpy().astype(np.float64))
        img, state = mp.forward(module.cameras)
        ctx.state, ctx.module = state, module
        return torch.from_numpy(np.ascontiguousarray(img)).to(vertices.device)

    @staticmethod
    def backward(ctx, grad):
        g = ctx.module.projector.vjp(ctx.state, grad.detach().cpu().numpy().astype(np.float64))
        return torch.from_numpy(g).to(dtype=grad.dtype, device=grad.device), None


class MeshLengths(torch.nn.Module):
    """Path lengths (mm) through a :class:`engine.mesh.MeshProjector`'s meshes, per material, as a function of
    all their vertices (V, 3) (world mm, stacked in the projector's order): ``(n, M, rows, cols)`` for n cameras
    (a Camera or a sequence; n = 1 for one Camera)."""

    def __init__(self, projector, cameras):
        super().__init__()
        from ..geometry import camera_batch

        self.projector = projector
        self.cameras = camera_batch(cameras)

    def forward(self, vertices: torch.Tensor) -> torch.Tensor:
        n = int(self.projector.vertex_offsets[-1])
        if tuple(vertices.shape) != (n, 3):
            raise ValueError(f"vertices must be ({n}, 3), got {tuple(vertices.shape)}")
        return _Lengths.apply(vertices, self)
