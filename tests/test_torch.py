"""engine.torch: the CT DRR as an autograd function of the volume poses (gradcheck in float64)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install -e '.[torch]')")

from engine.geometry import carm  # noqa: E402
from engine.volume import Volume, VolumeProjector  # noqa: E402


def _scene(materials=2):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    dens = np.stack([gaussian_filter(rng.uniform(0, 2, (18, 16, 14)), 1.2) for _ in range(materials)])
    aff = np.diag([1.2, 1.0, 1.5, 1.0])
    vol = Volume(density=dens.astype(np.float32), materials=tuple(f"m{i}" for i in range(materials)),
                 world_from_index=aff)
    cams = [carm(primary=p, secondary=s, sid=150, sdd=300, rows=8, cols=9, pixel_size=5.0, isocenter=vol.center)
            for p, s in ((10, 5), (70, -20))]
    return vol, cams


def test_ct_drr_gradcheck_float64_at_a_nonzero_pose():
    from engine.torch import CTDRR

    vol, cams = _scene()
    drr = CTDRR(VolumeProjector(vol, storage="f64"), cams)
    poses = torch.tensor([[0.05, -0.03, 0.08, 1.5, -2.0, 0.7], [-0.1, 0.02, 0.04, -1.0, 0.5, 2.0]],
                         dtype=torch.float64, requires_grad=True)
    out = drr(poses)
    assert out.shape == (2, 2, 8, 9) and out.dtype == torch.float64
    # gradcheck's finite differences (eps 1e-6) against the analytic VJP, all 12 pose parameters
    assert torch.autograd.gradcheck(lambda p: drr(p), (poses,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_ct_drr_pose_zero_renders_the_cameras_as_given_and_checks_shapes():
    from engine.torch import CTDRR

    vol, cams = _scene(1)
    proj = VolumeProjector(vol)
    drr = CTDRR(proj, cams)
    out = drr(torch.zeros(2, 6))
    np.testing.assert_array_equal(out.numpy(), proj(cams))
    with pytest.raises(ValueError, match="poses"):
        drr(torch.zeros(3, 6))


def test_mesh_lengths_gradcheck_float64():
    from engine.mesh import MeshProjector, icosphere, make_mesh
    from engine.torch import MeshLengths

    rng = np.random.default_rng(2)
    s = icosphere(15.0, 1)
    # off the axes: the icosphere has vertices on them, and a ray through a vertex sits on a kink
    v = s.vertices * (1 + 0.05 * rng.standard_normal((len(s.vertices), 1))) + [1.3, 0.7, -0.9]
    mp = MeshProjector(make_mesh(v, s.faces), "bone", precision=64)
    cams = [carm(primary=p, sid=200, sdd=400, rows=7, cols=7, pixel_size=3.0) for p in (0, 50)]
    f = MeshLengths(mp, cams)
    x = torch.tensor(v, dtype=torch.float64, requires_grad=True)
    out = f(x)
    assert out.shape == (2, 1, 7, 7)
    # the intersection derivative is exact while no ray crosses a facet edge within eps
    assert torch.autograd.gradcheck(lambda t: f(t), (x,), eps=1e-7, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="vertices"):
        f(x[:-1])


def test_physics_gradcheck_and_an_end_to_end_pose_gradient():
    """paths -> image through the polychromatic chain with scatter (gradcheck), and CT pose -> DRR -> physics
    -> loss: the pose gradient agrees with a central difference of the whole pipeline."""
    from engine.physics import PhysicsChain, ScatterModel, tube_spectrum
    from engine.torch import CTDRR, Physics

    torch.manual_seed(0)
    chain = PhysicsChain(["soft_tissue", "bone"], tube_spectrum(90.0, bins=6),
                         scatter=ScatterModel(spr=0.5, sigma0_mm=6.0), output="line_integral", pixel_size=5.0)
    phys = Physics(chain)
    paths = torch.rand(2, 2, 6, 7, dtype=torch.float64) * 3 + 0.1
    paths.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: phys(p), (paths,), eps=1e-6, atol=1e-6, rtol=1e-5)

    vol, cams = _scene()
    vol = Volume(density=vol.density, materials=("soft_tissue", "bone"), world_from_index=vol.world_from_index)
    drr = CTDRR(VolumeProjector(vol, storage="f64"), cams)
    w = torch.randn(2, 8, 9, dtype=torch.float64)

    def loss(p):
        return (phys(drr(p)) * w).sum()

    pose = torch.tensor([[0.02, -0.01, 0.03, 1.0, -0.5, 0.3], [0.0, 0.04, -0.02, -0.7, 0.2, 0.9]],
                        dtype=torch.float64, requires_grad=True)
    loss(pose).backward()
    d = torch.randn(2, 6, dtype=torch.float64)
    h = 1e-6  # the DRR is piecewise smooth (kinks where samples cross voxel planes): a small step stays between
    with torch.no_grad():
        fd = (loss(pose + h * d) - loss(pose - h * d)) / (2 * h)
    assert float((pose.grad * d).sum()) == pytest.approx(float(fd), rel=1e-5)


def _rigid(params, center):
    """(n, 6) torch parameters -> (n, 4, 4) rigid matrices about ``center``, differentiably (a user's own SE(3)
    map: matrix exponential of the rotation's skew matrix)."""
    n = params.shape[0]
    w = params[:, :3]
    z = torch.zeros(n, dtype=params.dtype)
    skew = torch.stack([torch.stack([z, -w[:, 2], w[:, 1]], -1), torch.stack([w[:, 2], z, -w[:, 0]], -1),
                        torch.stack([-w[:, 1], w[:, 0], z], -1)], 1)
    r = torch.linalg.matrix_exp(skew)
    c = torch.as_tensor(center, dtype=params.dtype)
    t = c - r @ c + params[:, 3:]
    top = torch.cat([r, t[:, :, None]], 2)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=params.dtype).expand(n, 1, 4)
    return torch.cat([top, bottom], 1)


def test_ct_drr_matrix_poses_gradcheck_through_a_users_se3_map():
    """(n, 4, 4) poses: the gradient of the rigid motion, chained through torch's own parameterisation (about a
    centre other than the projector's), passes gradcheck; a non-rigid matrix is refused."""
    from engine.torch import CTDRR

    vol, cams = _scene()
    drr = CTDRR(VolumeProjector(vol, storage="f64"), cams)
    c = vol.center + np.array([3.0, -2.0, 1.0])
    params = torch.tensor([[0.05, -0.03, 0.08, 1.5, -2.0, 0.7], [-0.1, 0.02, 0.04, -1.0, 0.5, 2.0]],
                          dtype=torch.float64, requires_grad=True)
    out = drr(_rigid(params, c))
    ref = drr(_rigid(params, c).detach())
    assert out.shape == (2, 2, 8, 9) and torch.equal(out, ref)
    assert torch.autograd.gradcheck(lambda p: drr(_rigid(p, c)), (params,), eps=1e-6, atol=1e-5, rtol=1e-4)
    bad = _rigid(params, c).detach().clone()
    bad[0, 0, 0] *= 1.1
    with pytest.raises(ValueError, match="rigid"):
        drr(bad)


def test_ct_drr_density_gradcheck_and_a_second_forward_between():
    """A density tensor renders those densities and gets their back-projection (gradcheck, float64, all voxels
    of a small volume); poses and densities together; another forward with other densities before the backward
    does not change the gradient (the projector re-uploads the forward's densities)."""
    from engine.torch import CTDRR

    vol, cams = _scene(1)
    vol = Volume(density=vol.density[:, :8, :7, :6], materials=vol.materials, world_from_index=vol.world_from_index)
    cams = [carm(primary=p, sid=150, sdd=300, rows=5, cols=6, pixel_size=4.0, isocenter=vol.center)
            for p in (10, 80)]
    drr = CTDRR(VolumeProjector(vol, storage="f64"), cams)
    dens = torch.tensor(vol.density, dtype=torch.float64, requires_grad=True)
    poses = torch.tensor([[0.02, 0.01, -0.03, 0.5, 0.2, -0.4]] * 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, d: drr(p, d), (poses, dens), eps=1e-6, atol=1e-5, rtol=1e-4)
    w = torch.randn(2, 1, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = (drr(poses, dens) * w).sum()
    drr(poses, dens.detach() * 2)  # another forward uploads other densities
    g_dens, g_pose = torch.autograd.grad(loss, (dens, poses))
    d2 = dens.detach().clone().requires_grad_(True)
    p2 = poses.detach().clone().requires_grad_(True)
    ref = torch.autograd.grad((drr(p2, d2) * w).sum(), (d2, p2))
    assert torch.allclose(g_dens, ref[0], rtol=0, atol=1e-12) and torch.allclose(g_pose, ref[1], rtol=1e-12)
    with pytest.raises(ValueError, match="density must be"):
        drr(poses, dens[:, :4])
