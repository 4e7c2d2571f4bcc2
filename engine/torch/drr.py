"""CT DRRs as a PyTorch autograd function of the volume's rigid pose.

A pose ``p = (delta, tau)`` (6,) moves the volume in the world frame about a centre ``c``:
``M x = R(delta) (x - c) + c + tau`` (delta a rotation vector in radians, tau mm; the convention of
:mod:`engine.mesh.pose`), so pose 0 renders the cameras as given.  It is rendered by moving the cameras by
``M^-1``; the projector's VJP at those cameras is the gradient ``(g_omega, g_tau)`` for a further small move
``N`` (about ``c``) of the volume in its own frame, the composite ``M N``.  ``M(p + dp) = M(p) N`` gives
``omega = J_r(delta) d delta`` (``J_r`` the right Jacobian of SO(3)) and ``tau_N = R^T d tau``, so

    dL/ddelta = J_r(delta)^T g_omega = J_l(delta) g_omega,     dL/dtau = R(delta) g_tau.
"""
import numpy as np
import torch

from ..mesh.pose import perturb, pose_parameter_gradient


def pose_matrix(pose, center) -> np.ndarray:
    """(4, 4) world-frame move of a pose (6,) (delta rad, tau mm) about ``center`` (mm)."""
    p = np.asarray(pose, np.float64)
    return perturb(np.eye(4), p[:3], p[3:], center=center)


class _DRR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, poses, module):
        p = poses.detach().cpu().numpy().astype(np.float64)
        cams = [cam.moved(np.linalg.inv(pose_matrix(q, module.center))) for cam, q in zip(module.cameras, p)]
        img, state = module.projector.forward(cams)
        ctx.state, ctx.module, ctx.poses = state, module, p
        return torch.from_numpy(np.ascontiguousarray(img)).to(poses.device)

    @staticmethod
    def backward(ctx, grad):
        m = ctx.module
        g = grad.detach().cpu().numpy().astype(np.float64)
        left = m.projector.vjp(ctx.state, g, center=m.center)["pose"]  # (n, 6): (g_omega, g_tau) of N
        out = np.stack([pose_parameter_gradient(q, gl) for q, gl in zip(ctx.poses, left)])
        return torch.from_numpy(out).to(dtype=grad.dtype, device=grad.device), None


class CTDRR(torch.nn.Module):
    """Per-material DRRs of a CT for a batch of volume poses, differentiable with respect to the poses.

    Parameters
    ----------
    projector : engine.volume.VolumeProjector
        The CT on the device (plane sampling, the default, has the gradient).
    cameras : Camera or sequence of Camera
        One camera per pose (same detector shape).
    center : (3,) array_like, optional
        Centre of the poses' rotations, world mm; default the volume's centre.

    ``forward(poses)``: ``poses`` (n, 6) tensor (rotation vector rad, translation mm) -> (n, M, rows, cols)
    tensor, g/cm^2 per material (``projector.materials``).
    """

    def __init__(self, projector, cameras, center=None):
        super().__init__()
        from ..geometry import Camera

        self.projector = projector
        self.cameras = [cameras] if isinstance(cameras, Camera) else list(cameras)
        self.center = projector.volume.center if center is None else np.asarray(center, np.float64)

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        if poses.ndim != 2 or poses.shape != (len(self.cameras), 6):
            raise ValueError(f"poses must be ({len(self.cameras)}, 6) (one per camera), got {tuple(poses.shape)}")
        return _DRR.apply(poses, self)
