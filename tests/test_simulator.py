"""engine.Simulator: a CT and meshes with their physics built once, batched forwards, chained VJPs.

Checked: the batch equals ``simulate`` view by view (device and NumPy physics, noise by seed); the VJP equals
the chain of the stages' reference VJPs (the NumPy physics chain, float64; the projectors' VJPs in float64,
each checked by central differences in their own tests); and end to end against central differences of the
Simulator itself (CT pose, CT densities, mesh vertices; its physics runs in float32, hence the looser tolerance).
"""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import engine
from engine import Simulator, XrayConfig
from engine.geometry import carm
from engine.mesh import MeshProjector, icosphere
from engine.geometry.transforms import perturb
from engine.physics import PhysicsChain, ScatterModel
from engine.volume import Volume, VolumeProjector

pytestmark = pytest.mark.kernel

ROWS, COLS = 18, 16
SCATTER = ScatterModel(sigma0_mm=10.0, grid=False)  # automatic SPR: the SPR depends on the image too


def _volume(seed=0, affine=None):
    rng = np.random.default_rng(seed)
    shape = (20, 18, 15)
    soft = gaussian_filter(rng.uniform(0.5, 1.5, shape), 1.2)
    bone = gaussian_filter(rng.uniform(0, 1, shape), 1.5) ** 2 * 2
    if affine is None:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        affine = np.eye(4)
        affine[:3, :3] = q @ np.diag([2.2, 1.8, 3.0])
        affine[:3, 3] = rng.normal(0, 3, 3)
    return Volume(density=np.stack([soft, bone]).astype(np.float32), materials=("soft_tissue", "bone"),
                  world_from_index=affine)


def _scene(precision=64):
    vol = _volume()
    ball = icosphere(7.0, 2, center=vol.center + np.array([4.0, -3.0, 2.0]))
    mp = MeshProjector([ball], ["titanium"], precision=precision, supersample=2, soft_sigma_px=0.8)
    cams = [carm(primary=p, secondary=s, sid=200, sdd=400, rows=ROWS, cols=COLS, pixel_size=4.5,
                 isocenter=vol.center) for p, s in ((15, 5), (-70, 25))]
    return vol, mp, cams


def test_batch_equals_simulate_view_by_view_device_and_numpy_noise_by_seed():
    vol, mp, cams = _scene(precision=32)
    proj = VolumeProjector(vol)
    sim = Simulator(proj, mp, XrayConfig(spectrum="fluoro90", bins=8, scatter=SCATTER, output="line_integral"))
    assert sim.materials == ("soft_tissue", "bone", "titanium")
    imgs = sim(cams)
    assert imgs.shape == (2, ROWS, COLS) and imgs.dtype == np.float32
    ref_cfg = XrayConfig(spectrum=sim.spectrum, scatter=SCATTER, output="line_integral", physics="numpy")
    for i, cam in enumerate(cams):
        ref = engine.simulate(proj, cam, mp, ref_cfg)[0]
        np.testing.assert_allclose(imgs[i], ref, rtol=0, atol=2e-5 * np.abs(ref).max())
        assert np.array_equal(sim(cam), imgs[i:i + 1])
    noisy = Simulator(proj, mp, XrayConfig(spectrum=sim.spectrum, noise=3e3))
    a, b = noisy(cams, seed=4), noisy(cams, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, noisy(cams, seed=5))
    assert not np.array_equal(a[0], a[1])
    single = engine.simulate(proj, cams[0], mp, noisy.config, seed=4)
    assert np.array_equal(a[:1], single)  # view 0 of a batch is simulate's image with that seed
    assert np.array_equal(a, engine.simulate(proj, cams, mp, noisy.config, seed=4))  # simulate batches too


def test_vjp_is_the_chain_of_the_stage_vjps():
    """d loss / d (pose, densities, vertices) = projector VJPs of the NumPy chain's (float64) VJP."""
    vol, mp, cams = _scene()
    proj = VolumeProjector(vol, storage="f64")
    sim = Simulator(proj, mp, XrayConfig(spectrum="fluoro90", bins=8, scatter=SCATTER, output="line_integral"))
    imgs, state = sim.forward(cams)
    g = np.random.default_rng(3).standard_normal(imgs.shape)
    got = sim.vjp(state, g, density=True)
    # the reference chain, stage by stage, on the same mass thicknesses
    ct_img, ct_state = proj.forward(cams)
    mesh_img, mesh_state = mp.forward(cams)
    scale = sim.mesh_scale[0]
    paths = np.concatenate([ct_img, mesh_img * scale], axis=1)  # (n, 3, rows, cols) g/cm^2
    gm = []
    for i, cam in enumerate(cams):
        chain = PhysicsChain(sim.materials, sim.spectrum, scatter=SCATTER, output="line_integral",
                             pixel_size=cam.pixel_size)
        out, st = chain.forward(paths[i], return_state=True)
        np.testing.assert_allclose(imgs[i], out, rtol=0, atol=2e-5 * np.abs(out).max())
        gm.append(chain.vjp(st, g[i]))
    gm = np.stack(gm)
    np.testing.assert_allclose(got["mass_thickness"], gm, rtol=0, atol=1e-4 * np.abs(gm).max())
    ref_ct = proj.vjp(ct_state, gm[:, :2], density=True)
    np.testing.assert_allclose(got["ct_pose"], ref_ct["pose"], rtol=1e-3, atol=1e-4 * np.abs(ref_ct["pose"]).max())
    np.testing.assert_allclose(got["density"], ref_ct["density"], rtol=0, atol=1e-4 * np.abs(ref_ct["density"]).max())
    ref_v = mp.vjp(mesh_state, gm[:, 2:] * scale)
    np.testing.assert_allclose(got["vertices"], ref_v, rtol=0, atol=1e-4 * np.abs(ref_v).max())
    # explicit states: a second forward in between does not change the first one's gradient
    mp.set_vertices(mp.vertices * 1.1)
    sim.forward(cams[::-1])
    again = sim.vjp(state, g)
    np.testing.assert_allclose(again["vertices"], got["vertices"], rtol=0, atol=1e-6 * np.abs(ref_v).max())
    np.testing.assert_allclose(again["ct_pose"], got["ct_pose"], rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="grad has shape"):
        sim.vjp(state, g[0])


def test_end_to_end_central_differences_pose_vertices_densities():
    """loss = <w, image> through physics (polychromatic, automatic-SPR scatter, -ln) -> CT + meshes; each
    gradient against a central difference of the Simulator itself along random directions (float32 physics:
    steps and tolerance sized for it)."""
    vol, mp, cams = _scene()
    rng = np.random.default_rng(8)
    cfg = XrayConfig(spectrum="fluoro90", bins=8, scatter=SCATTER, output="line_integral")
    sim = Simulator(VolumeProjector(vol, storage="f64"), mp, cfg)
    imgs, state = sim.forward(cams)
    w = rng.standard_normal(imgs.shape)
    grads = sim.vjp(state, w, density=True)
    c = vol.center

    def loss_pose(view, x):  # the CT alone moved (the meshes stay): a new Volume with the moved affine
        moved = Volume(density=vol.density, materials=vol.materials,
                       world_from_index=perturb(np.eye(4), x[:3], x[3:], center=c) @ vol.world_from_index)
        s = Simulator(VolumeProjector(moved, storage="f64"), mp, cfg)
        return float((s(cams[view])[0].astype(np.float64) * w[view]).sum())

    for view in range(2):
        v = rng.standard_normal(6)
        v[:3] *= 0.02
        h = 2e-3
        fd = (loss_pose(view, h * v) - loss_pose(view, -h * v)) / (2 * h)
        assert grads["ct_pose"][view] @ v == pytest.approx(fd, rel=2e-2)

    verts = mp.vertices

    def loss_v(x):
        mp.set_vertices(x)
        return float((sim(cams).astype(np.float64) * w).sum())

    # a random direction tilted towards the gradient: a random one alone mostly cancels (its derivative is then
    # ~0.04 against float32 noise of ~0.002 at the largest step below the mesh's kinks, h = 1e-3 mm)
    gv = grads["vertices"]
    r = rng.standard_normal(verts.shape)
    d = gv / np.linalg.norm(gv) + 0.5 * r / np.linalg.norm(r)
    h = 1e-3
    fd = (loss_v(verts + h * d) - loss_v(verts - h * d)) / (2 * h)
    mp.set_vertices(verts)
    assert float((gv * d).sum()) == pytest.approx(fd, rel=2e-2)

    D = rng.standard_normal(vol.density.shape) * 0.05

    def loss_d(t):
        moved = Volume(density=np.maximum(vol.density + t * D, 0), materials=vol.materials,
                       world_from_index=vol.world_from_index)
        return float((Simulator(VolumeProjector(moved, storage="f64"), mp, cfg)(cams).astype(np.float64) * w).sum())

    assert (vol.density - 1e-2 * np.abs(D) > 0).all()  # no clipping at the step used
    fd = (loss_d(1e-2) - loss_d(-1e-2)) / 2e-2
    assert float((grads["density"] * D).sum()) == pytest.approx(fd, rel=2e-2)


def test_errors_name_the_problem():
    vol, mp, cams = _scene(precision=32)
    with pytest.raises(ValueError, match="nothing to render"):
        Simulator()
    with pytest.raises(TypeError, match="Volume or a VolumeProjector"):
        Simulator(vol.density)
    with pytest.raises(ValueError, match="density of 'titanium'"):
        Simulator(None, mp, XrayConfig(mesh_densities={"titanium": -1}))
    with pytest.raises(TypeError, match="XrayConfig"):
        Simulator(vol, mp, {"noise": 1e4})
    with pytest.raises(ValueError, match="config.physics"):
        Simulator(vol, mp, XrayConfig(physics="numpy"))
    sim = Simulator(vol, mp)
    with pytest.raises(ValueError, match="share the detector shape"):
        sim([cams[0], carm(rows=5, cols=5, pixel_size=1.0)])
    sim.close()
    with pytest.raises(RuntimeError, match="closed"):
        sim(cams)
