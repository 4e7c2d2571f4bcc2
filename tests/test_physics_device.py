"""The device physics chain (Taichi) against the NumPy chain, and its random numbers against scipy."""
import numpy as np
import pytest
from scipy import stats

import engine
from engine.geometry import carm
from engine.physics import Detector, NoiseModel, PhysicsChain, ScatterModel, Spectrum, preset
from engine.physics import device_rng
from engine.physics.device_chain import DeviceChain
from engine.volume import CT, Volume, VolumeProjector

pytestmark = pytest.mark.kernel  # a GPU kernel's test: CI runs it again with ENGINE_ARCH=vulkan

MATS = ["air", "soft_tissue", "bone"]


def _paths(rows=30, cols=44, seed=0):
    """Smooth, patient-like mass thicknesses (g/cm^2): soft tissue 5-25, a bone band, a little air."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    soft = 5 + 20 * np.exp(-((x - 0.4) ** 2 + (y - 0.3) ** 2) * 4) + rng.uniform(0, 0.5, (rows, cols))
    bone = 3.0 * ((x > 0.3) & (x < 0.45)) + rng.uniform(0, 0.2, (rows, cols))
    air = rng.uniform(0, 0.02, (rows, cols))
    out = np.stack([air, soft, bone])
    out[1:, :, -cols // 5:] = 0.0  # open beam on the right: not behind the object (ScatterModel.object_cm)
    return out.astype(np.float32)


def _spectrum(name):
    return Spectrum.monochromatic(60.0) if name == "mono" else preset("fluoro90", bins=int(name[4:]))


@pytest.mark.parametrize("spec", ["mono", "poly8", "poly32"])
@pytest.mark.parametrize("kind", ["energy_integrating", "photon_counting"])
@pytest.mark.parametrize("scatter", [None, "fixed", "auto"])
@pytest.mark.parametrize("output", ["intensity", "line_integral"])
def test_device_chain_matches_numpy_chain(spec, kind, scatter, output):
    sc = {None: None, "fixed": ScatterModel(spr=0.8, sigma0_mm=12.0),
          "auto": ScatterModel(sigma0_mm=12.0, grid=False)}[scatter]
    args = dict(detector=Detector(kind=kind), scatter=sc, output=output, pixel_size=1.5)
    host = PhysicsChain(MATS, _spectrum(spec), **args)
    dev = DeviceChain(MATS, _spectrum(spec), **args)
    paths = _paths()
    want, parts = host.forward(paths, return_parts=True)
    got = dev.forward(paths)
    assert got.dtype == np.float32 and got.shape == want.shape
    if output == "intensity":
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    dparts = dev.parts()
    np.testing.assert_allclose(dparts["primary"], parts["primary"], rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(dparts["spr"], parts["spr"], rtol=1e-5)
    if sc is not None:
        behind = parts["water_cm"] >= sc.object_cm
        assert 0 < behind.mean() < 0.9  # open beam in the field (left out of the SPR's sums)
        assert parts["scatter"][behind].sum() > 0.1 * parts["primary"][behind].sum()  # scatter matters
        np.testing.assert_allclose(dparts["scatter"], parts["scatter"], rtol=1e-5, atol=1e-8)


def test_device_scatter_with_coarse_blocks_that_do_not_divide_the_image():
    """Block factor 3 on a 31 x 47 detector (ragged last blocks) and a single-block axis."""
    sc = ScatterModel(spr=0.5, sigma0_mm=20.0, grid_mm=3.0)
    for shape in ((31, 47), (2, 47)):
        paths = _paths(*shape, seed=2)
        want = PhysicsChain(MATS, _spectrum("poly8"), scatter=sc, pixel_size=1.0).forward(paths)
        got = DeviceChain(MATS, _spectrum("poly8"), scatter=sc, pixel_size=1.0).forward(paths)
        np.testing.assert_allclose(got, want, rtol=2e-6)


def _ct_scene():
    hu = np.full((36, 36, 36), -1000.0, np.float32)
    hu[6:30, 6:30, 4:32] = 40.0  # soft tissue block
    hu[14:20, 10:26, 4:32] = 1200.0  # a bone bar
    return CT(hu=hu, world_from_index=np.diag([3.0, 3.0, 3.0, 1.0]))


@pytest.mark.parametrize("output", ["intensity", "line_integral"])
def test_simulate_device_equals_numpy_noiseless(output):
    from engine.mesh import MeshProjector, icosphere

    ct = _ct_scene()
    proj = VolumeProjector(Volume.from_ct(ct))
    implant = MeshProjector(icosphere(8.0, 2, center=ct.center), "titanium")
    cam = carm(sid=400, sdd=700, rows=40, cols=52, pixel_size=3.0, isocenter=ct.center)
    cfg = engine.XrayConfig(spectrum="fluoro90", bins=8, scatter=True, output=output)
    a = engine.simulate(proj, cam, implant, cfg.replace(physics="numpy"), return_all=True)
    b = engine.simulate(proj, cam, implant, cfg, return_all=True)
    assert a.materials == b.materials == ("air", "soft_tissue", "bone", "titanium")
    assert b.image.shape == a.image.shape == (1, 40, 52) and b.paths.shape == (1, 4, 40, 52)
    assert b.image.dtype == np.float32 and a.spr.shape == (1,) and a.spr[0] > 0.05
    np.testing.assert_allclose(b.image, a.image, rtol=3e-6, atol=3e-6)
    np.testing.assert_allclose(b.paths, a.paths, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.scatter, a.scatter, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(b.noiseless, a.noiseless, rtol=3e-6, atol=3e-6)
    np.testing.assert_allclose(b.spr, a.spr, rtol=1e-5)
    with pytest.raises(ValueError, match="physics"):
        engine.simulate(proj, cam, config=cfg.replace(physics="torch"))


def test_render_field_is_the_image_the_projector_returns():
    ct = _ct_scene()
    proj = VolumeProjector(Volume.from_ct(ct))
    cam = carm(sid=400, sdd=700, rows=20, cols=24, pixel_size=5.0, isocenter=ct.center)
    field = proj.render_field(cam)
    assert tuple(field.shape) == (1, 3, 20, 24)
    np.testing.assert_array_equal(field.to_numpy(), proj(cam))


def _noise_draws(clean_paths, quanta, electronic_std, seeds):
    dev = DeviceChain(["soft_tissue"], Spectrum.monochromatic(60.0))
    clean = dev.forward(clean_paths).astype(np.float64)
    draws = np.stack([dev.forward(clean_paths, quanta=quanta, electronic_std=electronic_std, seed=s)
                      for s in seeds]).astype(np.float64)
    return clean, draws


@pytest.mark.parametrize("quanta,electronic_std", [(3.0, 0.0), (400.0, 0.0), (400.0, 8.0), (5e4, 30.0)])
def test_device_noise_mean_and_variance(quanta, electronic_std):
    """Per pixel over 600 seeds: mean = noiseless image, variance = (N I + sigma_e^2) / N^2."""
    paths = np.linspace(0.0, 30.0, 12 * 16, dtype=np.float32).reshape(1, 12, 16)  # I/I0 from 1 to ~1e-3
    n = 600
    clean, draws = _noise_draws(paths, quanta, electronic_std, range(n))
    var = (clean * quanta + electronic_std ** 2) / quanta ** 2
    z = (draws.mean(0) - clean) / np.sqrt(var / n)
    assert np.abs(z).max() < 4.5 and abs(z.mean()) < 4.5 / np.sqrt(z.size)
    counts_var = clean * quanta + electronic_std ** 2  # in quanta; 4th cumulant = Poisson mean
    sd_ratio = np.sqrt((clean * quanta / counts_var ** 2 + 2) / n)  # relative sd of a sample variance
    zv = (draws.var(0, ddof=1) / var - 1) / sd_ratio
    assert abs(zv.mean()) < 4 / np.sqrt(zv.size)
    assert np.abs(zv[clean * quanta >= 1]).max() < 5  # the sample variance is far from normal below 1 count


def test_device_noise_same_seed_same_image_and_seeds_differ():
    paths = np.full((1, 16, 16), 10.0, np.float32)
    dev = DeviceChain(["soft_tissue"], Spectrum.monochromatic(60.0), output="line_integral")
    a = dev.forward(paths, quanta=1e3, electronic_std=2.0, seed=7)
    b = dev.forward(paths, quanta=1e3, electronic_std=2.0, seed=7)
    c = dev.forward(paths, quanta=1e3, electronic_std=2.0, seed=8)
    g = dev.forward(paths, quanta=1e3, electronic_std=2.0, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.9 and (a != g).mean() > 0.9
    assert len(np.unique(a)) > 50  # pixels draw independently
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 0.2


def test_simulate_noise_statistics_device_vs_numpy():
    """Same dose, both chains: the noise of (image - noiseless) has the same mean and variance."""
    ct = _ct_scene()
    proj = VolumeProjector(Volume.from_ct(ct))
    cam = carm(sid=400, sdd=700, rows=48, cols=48, pixel_size=2.5, isocenter=ct.center)
    nm = NoiseModel(photons=300.0, electronic_std=4.0)
    res = {}
    for physics in ("numpy", "device"):
        cfg = engine.XrayConfig(mono_kev=70.0, noise=nm, physics=physics)
        sims = [engine.simulate(proj, cam, config=cfg, seed=s, return_all=True) for s in range(8)]
        res[physics] = np.stack([s.image - s.noiseless for s in sims]).astype(np.float64)
        q = sims[0].quanta_per_pixel[0]
        var = (sims[0].noiseless * q + 16.0) / q ** 2
        res[physics] /= np.sqrt(var)  # standardised: mean 0, variance 1 in every pixel
    for r in res.values():
        assert abs(r.mean()) < 4 / np.sqrt(r.size) and abs(r.var() - 1) < 0.06
    assert abs(res["device"].var() - res["numpy"].var()) < 0.08


def _chisquare_poisson(samples, mu):
    """p-value of a chi-square test of integer samples against Poisson(mu), bins with >= 20 expected."""
    n = samples.size
    lo, hi = int(stats.poisson.ppf(1e-6, mu)), int(stats.poisson.ppf(1 - 1e-6, mu)) + 1
    width = max(1, int(np.sqrt(mu) / 4))
    edges = np.arange(lo, hi + width, width)
    expected = np.diff(stats.poisson.cdf(edges - 1, mu)) * n
    observed = np.histogram(samples, bins=edges - 0.5)[0]
    expected = np.r_[expected, n - expected.sum()]
    observed = np.r_[observed, n - observed.sum()]
    keep = expected >= 20
    rest_e, rest_o = expected[~keep].sum(), observed[~keep].sum()
    e, o = np.r_[expected[keep], rest_e], np.r_[observed[keep], rest_o]
    return stats.chisquare(o, e * o.sum() / e.sum()).pvalue


@pytest.mark.parametrize("mu", [0.2, 2.5, 9.9, 10.0, 37.5, 1e3, 2e5])
def test_poisson_sampler_matches_scipy(mu):
    """Inversion below mean 10, PTRS above: the histogram of 2e5 draws fits scipy's pmf, and it does not
    fit a mean 2 % off (so the test can tell)."""
    out = np.zeros(200_000, np.float32)
    device_rng.sample_poisson(np.full(out.size, mu, np.float32), out, 2024)
    assert np.all(out == np.round(out)) and out.min() >= 0
    assert _chisquare_poisson(out, mu) > 1e-4
    assert _chisquare_poisson(out, mu * 1.02 + 0.02) < 1e-4 or mu < 1


def test_normal_sampler_matches_scipy():
    out = np.zeros(100_000, np.float32)
    device_rng.sample_normal(out, 5)
    assert stats.kstest(out, "norm").pvalue > 1e-3
    assert stats.kstest(out * 1.03, "norm").pvalue < 1e-3  # the test can tell a 3 % wider normal
    assert abs(out.mean()) < 0.02 and abs(out.std() - 1) < 0.01


def test_device_chain_errors():
    dev = DeviceChain(MATS, _spectrum("mono"))
    with pytest.raises(ValueError, match="materials"):
        dev.forward(np.zeros((2, 4, 4)))
    dev.reset(4, 4)
    with pytest.raises(ValueError, match="titanium"):
        dev.add_array(np.zeros((1, 4, 4)), ["titanium"])
    with pytest.raises(ValueError, match="NaN"):
        dev.add_array(np.full((1, 4, 4), np.nan), ["bone"])
    with pytest.raises(ValueError, match="quanta"):
        dev.run(quanta=-1.0)


@pytest.mark.parametrize("spr", [0.7, None])
def test_device_scatter_sums_over_pixels_behind_the_object(spr):
    """sum(P), sum(F) and the mean thickness (automatic SPR) only over pixels with w >= object_cm."""
    from engine.backend import ti_module
    from engine.physics.device_scatter import DeviceScatter
    from engine.physics.scatter import typical_spr

    ti = ti_module()
    rng = np.random.default_rng(5)
    water = np.where(np.arange(40)[None, :] < 12, 0.0, rng.uniform(5, 25, (30, 40)))  # air on the left
    primary = np.exp(-0.2 * water) * rng.uniform(0.9, 1.0, water.shape)
    arrays = []
    for a in (primary, water):
        arrays.append(ti.ndarray(ti.f32, a.shape))
        arrays[-1].from_numpy(a.astype(np.float32))
    out = {}
    for thr in (3.0, 0.0):
        model = ScatterModel(spr=spr, sigma0_mm=10.0, object_cm=thr)
        sc = DeviceScatter(model, water.shape, 2.0, 90.0)
        sc.run(*arrays)
        out[thr] = dict(zip(("sp", "sf", "mean_w", "spr", "c"), sc.scalars.to_numpy()))
        mask = water >= thr
        want_spr = spr if spr is not None else typical_spr(90.0, 30 * 40 * 0.04, water[mask].mean(), True)
        o = out[thr]
        assert o["mean_w"] == pytest.approx(water[mask].mean(), rel=1e-5)
        assert o["spr"] == pytest.approx(want_spr, rel=1e-5)
        assert o["sp"] == pytest.approx(primary[mask].sum(), rel=1e-5)
        assert o["c"] == pytest.approx(o["spr"] * o["sp"] / o["sf"], rel=1e-6)
    # the same coarse F in both runs: the masked share of sum(F) is the NumPy F's
    f_numpy, _ = ScatterModel(spr=1.0, sigma0_mm=10.0).forward(primary, water, 2.0, 1.0)  # F up to a factor
    m = water >= 3.0
    assert out[3.0]["sf"] / out[0.0]["sf"] == pytest.approx(f_numpy[m].sum() / f_numpy.sum(), rel=1e-5)
    assert out[3.0]["sf"] / out[0.0]["sf"] < 0.9  # the air pixels carry scatter: the mask matters


@pytest.mark.parametrize("scatter", [None, "fixed", "auto"])
@pytest.mark.parametrize("output", ["intensity", "line_integral"])
def test_device_chain_vjp_matches_the_numpy_chain_vjp_and_finite_differences(scatter, output):
    """The device adjoint (float32) equals the NumPy chain's VJP (float64, itself checked by central differences
    in tests/test_physics.py) to float32 rounding, on a detector whose coarse scatter blocks do not divide it
    (31 x 45 pixels, 0.7 mm: 5-pixel blocks) and with pixels beyond the thickest scatter group; and a central
    difference of the device chain itself along a random direction agrees to 1e-3 (float32 images)."""
    sc = {None: None, "fixed": ScatterModel(spr=0.8, sigma0_mm=12.0),
          "auto": ScatterModel(sigma0_mm=12.0, grid=False)}[scatter]
    spec = _spectrum("poly8")
    paths = _paths(31, 45, seed=3)
    paths[1, :3, :5] = 60.0  # 60 cm of water: past the last group centre (45 cm)
    host = PhysicsChain(MATS, spec, scatter=sc, output=output, pixel_size=0.7)
    dev = DeviceChain(MATS, spec, scatter=sc, output=output, pixel_size=0.7)
    rng = np.random.default_rng(11)
    g = rng.standard_normal((31, 45))
    dev.reset(31, 45)
    dev.add_array(paths, MATS)
    dev.run()
    state = dev.snapshot()
    got = dev.vjp(state, g)
    _, hstate = host.forward(paths.astype(np.float64), return_state=True)
    want = host.vjp(hstate, g)
    assert got.shape == want.shape == paths.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    # the state is explicit: another frame in between does not change this frame's gradient
    dev.forward(paths * 0.5)
    np.testing.assert_allclose(dev.vjp(state, g), got, rtol=0, atol=1e-7 * np.abs(got).max())
    d = rng.standard_normal(paths.shape) * (paths > 0)
    h = 0.02

    def f(p):
        return float((dev.forward(p).astype(np.float64) * g).sum())

    fd = (f(paths + h * d) - f(paths - h * d)) / (2 * h)
    assert fd == pytest.approx(float((got * d).sum()), rel=1e-3)
