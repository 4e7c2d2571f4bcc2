"""One return convention (docs/conventions.md, "Return shapes"): every entry point that renders cameras takes a
Camera or a sequence of Cameras and returns a leading view axis, n = 1 for one Camera; gradients are given and
returned in those shapes."""
import numpy as np
import pytest

import engine
from engine import Simulator, XrayConfig, carm
from engine.mesh import MeshProjector, icosphere
from engine.simulate import mass_thickness
from engine.volume import Volume, VolumeProjector

pytestmark = pytest.mark.kernel

ROWS, COLS = 6, 7


@pytest.fixture(scope="module")
def scene():
    dens = np.zeros((2, 12, 12, 12), np.float32)
    dens[0, 2:10, 2:10, 2:10] = 1.0
    dens[1, 4:8, 4:8, 4:8] = 1.5
    vol = Volume(density=dens, materials=("soft_tissue", "bone"),
                 world_from_index=np.array([[3.0, 0, 0, -16.5], [0, 3.0, 0, -16.5], [0, 0, 3.0, -16.5], [0, 0, 0, 1]]))
    proj = VolumeProjector(vol)
    mp = MeshProjector(icosphere(6.0, 2), "titanium")
    cams = [carm(primary=p, sid=150, sdd=300, rows=ROWS, cols=COLS, pixel_size=8.0) for p in (0, 40, 90)]
    yield proj, mp, cams
    proj.close()
    mp.close()


def _views(cams):
    """(argument, n): one Camera, a list of one, a tuple of three."""
    return [(cams[0], 1), ([cams[0]], 1), (tuple(cams), 3)]


def test_volume_projector(scene):
    proj, _, cams = scene
    for arg, n in _views(cams):
        img, state = proj.forward(arg)
        assert proj(arg).shape == img.shape == (n, 2, ROWS, COLS)
        assert proj.vjp(state, np.ones(img.shape))["pose"].shape == (n, 6)
        assert tuple(proj.render_field(arg).shape) == (n, 2, ROWS, COLS)
    _, state = proj.forward(cams[0])
    with pytest.raises(ValueError, match="grad has shape"):
        proj.vjp(state, np.ones((2, ROWS, COLS)))  # the view axis is not optional


def test_mesh_projector(scene):
    _, mp, cams = scene
    for arg, n in _views(cams):
        img, state = mp.forward(arg)
        assert mp(arg).shape == img.shape == (n, 1, ROWS, COLS)
        assert mp.vjp(state, np.ones(img.shape)).shape == (len(mp.vertices), 3)
        assert mp.render_field(arg)[1] == (n, 1, ROWS, COLS)
    _, state = mp.forward(cams[0])
    with pytest.raises(ValueError, match="gradient shape"):
        mp.vjp(state, np.ones((1, ROWS, COLS)))


def test_simulator(scene):
    proj, mp, cams = scene
    sim = Simulator(proj, mp, XrayConfig(mono_kev=60.0))
    for arg, n in _views(cams):
        img, state = sim.forward(arg)
        assert sim(arg).shape == img.shape == (n, ROWS, COLS) and img.dtype == np.float32
        g = sim.vjp(state, np.ones(img.shape))
        assert g["ct_pose"].shape == (n, 6) and g["mass_thickness"].shape == (n, 3, ROWS, COLS)
        paths = mass_thickness(arg, proj, mp)[1]
        assert paths.shape == (n, 3, ROWS, COLS)
        np.testing.assert_allclose(sim.detector_image(paths, arg), img, rtol=1e-5, atol=1e-6)
    _, state = sim.forward(cams[0])
    with pytest.raises(ValueError, match="grad has shape"):
        sim.vjp(state, np.ones((ROWS, COLS)))


@pytest.mark.parametrize("physics", ["device", "numpy"])
def test_simulate(scene, physics):
    proj, mp, cams = scene
    config = XrayConfig(mono_kev=60.0, noise=1e4, physics=physics)
    for arg, n in _views(cams):
        assert engine.simulate(proj, arg, mp, config, seed=0).shape == (n, ROWS, COLS)
        r = engine.simulate(proj, arg, mp, config, seed=0, return_all=True)
        assert r.image.shape == r.primary.shape == r.scatter.shape == r.noiseless.shape == (n, ROWS, COLS)
        assert r.paths.shape == (n, 3, ROWS, COLS) and r.spr.shape == r.quanta_per_pixel.shape == (n,)
    # a batch is its views: noiseless, every view equals simulating that camera alone
    quiet = config.replace(noise=None)
    batch = engine.simulate(proj, cams, mp, quiet)
    for i, cam in enumerate(cams):
        np.testing.assert_array_equal(engine.simulate(proj, cam, mp, quiet)[0], batch[i])
