"""The detector physics as a PyTorch autograd function: per-material mass thickness -> image.

``Physics(chain)(paths)`` runs :meth:`engine.physics.PhysicsChain.forward` (polychromatic Beer-Lambert with the
detector response, scatter, ``-ln`` if asked; noise is not part of it) and differentiates with its VJP on the
state that forward returned, so it composes with :class:`~engine.torch.CTDRR` and
:class:`~engine.torch.MeshLengths` (mm -> g/cm^2: times density / 10) into an end-to-end differentiable X-ray.
"""
import numpy as np
import torch


class _Physics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, paths, chain):
        p = paths.detach().cpu().numpy().astype(np.float64)
        imgs, states = [], []
        for view in (p if p.ndim == 4 else p[None]):
            img, state = chain.forward(view, return_state=True)
            imgs.append(img)
            states.append(state)
        ctx.chain, ctx.states, ctx.batched = chain, states, p.ndim == 4
        out = np.stack(imgs) if ctx.batched else imgs[0]
        return torch.from_numpy(out).to(dtype=paths.dtype, device=paths.device)

    @staticmethod
    def backward(ctx, grad):
        g = grad.detach().cpu().numpy().astype(np.float64)
        g = g if ctx.batched else g[None]
        out = np.stack([ctx.chain.vjp(state, gi) for gi, state in zip(g, ctx.states)])
        out = out if ctx.batched else out[0]
        return torch.from_numpy(out).to(dtype=grad.dtype, device=grad.device), None


class Physics(torch.nn.Module):
    """Noiseless detector image from per-material mass thickness (g/cm^2), ``(M, rows, cols)`` or
    ``(n, M, rows, cols)`` -> ``(rows, cols)`` or ``(n, rows, cols)``, through a
    :class:`engine.physics.PhysicsChain` (materials in its order)."""

    def __init__(self, chain):
        super().__init__()
        self.chain = chain

    def forward(self, paths: torch.Tensor) -> torch.Tensor:
        m = len(self.chain.bl.materials)
        if paths.ndim not in (3, 4) or paths.shape[-3] != m:
            raise ValueError(f"paths must be ({m}, rows, cols) or (n, {m}, rows, cols), got {tuple(paths.shape)}")
        return _Physics.apply(paths, self.chain)
