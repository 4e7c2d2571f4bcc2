"""CT DRRs as a PyTorch autograd function of the volume's rigid pose.

A pose ``p = (delta, tau)`` (6,) moves the volume in the world frame about a centre ``c``:
``M x = R(delta) (x - c) + c + tau`` (delta a rotation vector in radians, tau mm; the convention of
:mod:`engine.geometry.transforms`), so pose 0 renders the cameras as given.  It is rendered by moving the cameras by
``M^-1``; the projector's VJP at those cameras is the gradient ``(g_omega, g_tau)`` for a further small move
``N`` (about ``c``) of the volume in its own frame, the composite ``M N``.  ``M(p + dp) = M(p) N`` gives
``omega = J_r(delta) d delta`` (``J_r`` the right Jacobian of SO(3)) and ``tau_N = R^T d tau``, so

    dL/ddelta = J_r(delta)^T g_omega = J_l(delta) g_omega,     dL/dtau = R(delta) g_tau.

Poses may also be (n, 4, 4) rigid matrices ``M`` (world-frame moves of the volume, mm), e.g. built by a
user's own SE(3) parameterisation: then ``dM = M A`` with ``A = [[omega]_x, tau - [omega]_x c; 0, 0]`` for
the small move N, and the returned gradient is ``G = M^-T K``, ``K = [[[v]_x / 2, g_tau]; 0]`` with
``v = g_omega + c x g_tau``: the gradient of the rigid motion (``<G, dM> = g_omega . omega + g_tau . tau`` for
every tangent ``dM``; its component along non-rigid directions is not defined and is zero in that basis).
Chain it through a differentiable map from parameters to rigid matrices.

Densities: ``forward(poses, density)`` with an (M, I, J, K) tensor (g/cm^3, finite, >= 0) renders those
densities (uploaded to the projector with :meth:`VolumeProjector.set_density`) and returns their gradient, the
back-projection of the image gradient (the volume must fit one device buffer).
"""
import dataclasses

import numpy as np
import torch

from ..geometry.transforms import pose_matrix, pose_matrix_gradient, pose_parameter_gradient


class _DRR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, poses, density, module):
        p = poses.detach().cpu().numpy().astype(np.float64)
        mats = p if p.ndim == 3 else np.stack([pose_matrix(q, module.center) for q in p])
        proj = module.projector
        dens = None
        if density is not None:
            dens = density.detach().cpu().numpy()
            proj.set_density(dens)
        cams = [cam.moved(np.linalg.inv(m)) for cam, m in zip(module.cameras, mats)]
        img, state = proj.forward(cams)
        ctx.state, ctx.module, ctx.poses, ctx.mats, ctx.dens = state, module, p, mats, dens
        ctx.want_density = density is not None
        return torch.from_numpy(np.ascontiguousarray(img)).to(poses.device)

    @staticmethod
    def backward(ctx, grad):
        m = ctx.module
        proj = m.projector
        if ctx.dens is not None and ctx.state.version != proj.density_version:
            proj.set_density(ctx.dens)  # another forward uploaded other densities: restore this one's
            ctx.state = dataclasses.replace(ctx.state, version=proj.density_version)
        g = grad.detach().cpu().numpy().astype(np.float64)
        want_pose = ctx.needs_input_grad[0]
        want_density = ctx.want_density and ctx.needs_input_grad[1]
        if not (want_pose or want_density):
            return None, None, None
        got = proj.vjp(ctx.state, g, pose=True, density=want_density, center=m.center)
        g_pose = g_density = None
        if want_pose:
            left = got["pose"]  # (n, 6): (g_omega, g_tau) of N
            if ctx.poses.ndim == 3:
                out = np.stack([pose_matrix_gradient(mat, gl, m.center) for mat, gl in zip(ctx.mats, left)])
            else:
                out = np.stack([pose_parameter_gradient(q, gl) for q, gl in zip(ctx.poses, left)])
            g_pose = torch.from_numpy(out).to(dtype=grad.dtype, device=grad.device)
        if want_density:
            g_density = torch.from_numpy(np.ascontiguousarray(got["density"], np.float64)).to(
                dtype=grad.dtype, device=grad.device)
        return g_pose, g_density, None


class CTDRR(torch.nn.Module):
    """Per-material DRRs of a CT for a batch of volume poses, differentiable with respect to the poses and,
    optionally, the densities.

    Parameters
    ----------
    projector : engine.volume.VolumeProjector
        The CT on the device (plane sampling, the default, has the gradient).
    cameras : Camera or sequence of Camera
        One camera per pose (same detector shape).
    center : (3,) array_like, optional
        Centre of the poses' rotations, world mm; default the volume's centre.

    ``forward(poses, density=None)``: ``poses`` (n, 6) (rotation vector rad, translation mm) or (n, 4, 4)
    (rigid world moves of the volume, mm); ``density`` an optional (M, I, J, K) tensor (g/cm^3) replacing the
    projector's densities -> (n, M, rows, cols) tensor, g/cm^2 per material (``projector.materials``).
    """

    def __init__(self, projector, cameras, center=None):
        super().__init__()
        from ..geometry import camera_batch

        self.projector = projector
        self.cameras = camera_batch(cameras)
        self.center = projector.volume.center if center is None else np.asarray(center, np.float64)

    def forward(self, poses: torch.Tensor, density: torch.Tensor | None = None) -> torch.Tensor:
        n = len(self.cameras)
        if tuple(poses.shape) not in ((n, 6), (n, 4, 4)):
            raise ValueError(f"poses must be ({n}, 6) or ({n}, 4, 4) (one per camera), got {tuple(poses.shape)}")
        if poses.ndim == 3:
            mats = poses.detach().cpu().double().numpy()
            rot = mats[:, :3, :3]
            err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max()
            if err > 1e-4 or np.abs(mats[:, 3] - [0, 0, 0, 1]).max() > 1e-9 or (np.linalg.det(rot) <= 0).any():
                raise ValueError(f"poses (n, 4, 4) must be rigid transforms (R orthonormal, det +1, last row "
                                 f"0 0 0 1); R R^T differs from I by {err:.2g}")
        if density is not None and tuple(density.shape) != self.projector.volume.density.shape:
            raise ValueError(f"density must be {self.projector.volume.density.shape} (materials, I, J, K), got "
                             f"{tuple(density.shape)}")
        return _DRR.apply(poses, density, self)
