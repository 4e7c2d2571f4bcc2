"""Gradients of the CT projector (plane sampling): pose (6-DoF rigid move of the volume) and densities,
against central finite differences in float64, and the explicit saved state of forward/vjp."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from engine.geometry import carm
from engine.geometry.transforms import perturb
from engine.volume import Volume, VolumeProjector

pytestmark = pytest.mark.kernel


def _scene(seed=0, shape=(22, 19, 16), materials=2):
    """A smooth random volume on a rotated, anisotropic grid and two cameras that see it whole."""
    rng = np.random.default_rng(seed)
    dens = np.stack([gaussian_filter(rng.uniform(0, 2, shape), 1.2) for _ in range(materials)]).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    aff = np.eye(4)
    aff[:3, :3] = q @ np.diag([1.1, 0.9, 1.7])
    aff[:3, 3] = rng.normal(0, 3, 3)
    vol = Volume(density=dens, materials=tuple(f"m{i}" for i in range(materials)), world_from_index=aff)
    cams = [carm(primary=p, secondary=s, sid=150, sdd=300, rows=14, cols=13, pixel_size=4.0, isocenter=vol.center)
            for p, s in ((20, 10), (-65, 35))]
    w = rng.standard_normal((len(cams), materials, 14, 13))
    return vol, cams, w


def _moved(cams, delta, tau, center):
    """The cameras that see the volume moved by (delta, tau) about center: moved by the inverse move."""
    m = perturb(np.eye(4), delta, tau, center=center)
    return [c.moved(np.linalg.inv(m)) for c in cams]


def test_pose_gradient_matches_central_differences_float64():
    vol, cams, w = _scene()
    proj = VolumeProjector(vol, storage="f64")
    img, state = proj.forward(cams)
    assert img.dtype == np.float64 and np.abs(img).max() > 1
    grad = proj.vjp(state, w)["pose"]  # (2, 6)
    rng = np.random.default_rng(1)
    c = vol.center
    for view in range(len(cams)):
        def loss(x):
            return float((proj(_moved([cams[view]], x[:3], x[3:], c))[0] * w[view]).sum())

        for _ in range(4):
            v = rng.standard_normal(6)
            v[:3] *= 0.02  # radians vs mm: comparable image changes
            h = 1e-4
            fd = (loss(h * v) - loss(-h * v)) / (2 * h)
            np.testing.assert_allclose(grad[view] @ v, fd, rtol=2e-4, atol=1e-9 * np.abs(img).sum())


def test_density_gradient_is_the_exact_adjoint_float64():
    """The projection is linear in the densities, so a central difference in any direction D is the image of D:
    <g, P(D)> must equal <P^T g, D> (the back-projection) to float64 rounding."""
    vol, cams, w = _scene(2)
    proj = VolumeProjector(vol, storage="f64")
    _, state = proj.forward(cams)
    back = proj.vjp(state, w, pose=False, density=True)["density"]
    assert back.shape == vol.density.shape
    rng = np.random.default_rng(3)
    for _ in range(3):
        dirn = rng.uniform(-1, 1, vol.density.shape).astype(np.float32)  # float32-representable: exact in f64
        pd = VolumeProjector(Volume(density=np.abs(dirn), materials=vol.materials,
                                    world_from_index=vol.world_from_index), storage="f64")
        # |D| (densities must be >= 0); its sign goes into the gradient side
        lhs = float((pd(cams) * w).sum())
        rhs = float((back * np.abs(dirn)).sum())
        assert lhs == pytest.approx(rhs, rel=1e-10)


def test_two_forwards_then_two_vjps_in_either_order():
    """The saved state is explicit: renders and their VJPs interleave in any order."""
    vol, cams, w = _scene(4)
    proj = VolumeProjector(vol, storage="f64")
    _, s0 = proj.forward(cams[0])
    _, s1 = proj.forward(cams[1])
    a1 = proj.vjp(s1, w[1:2])["pose"]
    a0 = proj.vjp(s0, w[:1])["pose"]
    _, sb = proj.forward(cams)
    both = proj.vjp(sb, w)["pose"]
    np.testing.assert_allclose(np.stack([a0[0], a1[0]]), both, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        proj.vjp(s0, w)


def test_float32_gradients_agree_with_float64():
    vol, cams, w = _scene(5)
    ref = VolumeProjector(vol, storage="f64")
    f32 = VolumeProjector(vol)
    g64 = ref.vjp(ref.forward(cams)[1], w, density=True)
    g32 = f32.vjp(f32.forward(cams)[1], w, density=True)
    np.testing.assert_allclose(g32["pose"], g64["pose"], rtol=2e-3, atol=2e-4 * np.abs(g64["pose"]).max())
    # float32 positions move a few samples across a cell boundary: a few voxels differ by ~1e-3 of themselves
    np.testing.assert_allclose(g32["density"], g64["density"], rtol=2e-3, atol=2e-5 * np.abs(g64["density"]).max())
    assert np.median(np.abs(g32["density"] - g64["density"])) < 1e-5 * np.abs(g64["density"]).max()


def test_vjp_errors_name_the_problem():
    vol, cams, w = _scene(6)
    mid = VolumeProjector(vol, sampling="midpoint")
    with pytest.raises(NotImplementedError, match="plane sampling"):
        mid.vjp(mid.forward(cams)[1], w)
    proj = VolumeProjector(vol)
    _, state = proj.forward(cams)
    with pytest.raises(ValueError, match="NaN"):
        proj.vjp(state, np.full_like(w, np.nan))
    with pytest.raises(TypeError, match="ProjectionState"):
        proj.vjp(None, w)


def test_set_density_renders_the_new_densities_and_stale_states_are_refused():
    vol, cams, w = _scene(4)
    proj = VolumeProjector(vol, max_buffer_bytes=24 * 1024)  # several bricks: the upload covers each
    assert proj.n_bricks > 1
    _, state = proj.forward(cams)
    new = vol.density[::-1].copy() * 1.5
    proj.set_density(new)
    want = VolumeProjector(Volume(density=new, materials=vol.materials, world_from_index=vol.world_from_index),
                           max_buffer_bytes=24 * 1024)(cams)
    np.testing.assert_array_equal(proj(cams), want)
    with pytest.raises(ValueError, match="densities changed"):
        proj.vjp(state, w)
    with pytest.raises(ValueError, match="shape"):
        proj.set_density(new[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        proj.set_density(np.full_like(new, np.nan))
