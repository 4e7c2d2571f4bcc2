"""Rectangular detector pixels: Camera(pixel_size=(row pitch, column pitch)) through projection, rays, binning,
JSON, both projectors, scatter, noise, the CLI and dataset plans."""
import json

import numpy as np
import pytest

from engine.errors import InputError
from engine.geometry import Camera, carm
from engine.physics import DeviceChain, NoiseModel, PhysicsChain, ScatterModel, preset
from engine.physics.detector import Detector

pytestmark = pytest.mark.kernel  # renders through the projectors' and the physics chain's kernels

ROW_MM, COL_MM = 1.2, 0.5


def _cam(**kw):
    args = dict(primary=25, secondary=-10, sid=300, sdd=500, rows=24, cols=40, pixel_size=(ROW_MM, COL_MM))
    args.update(kw)
    return carm(**args)


def test_pixel_size_and_pixel_spacing():
    cam = _cam()
    assert cam.pixel_spacing == (ROW_MM, COL_MM) and not cam.square_pixels
    assert cam.pixel_area == pytest.approx(ROW_MM * COL_MM)
    with pytest.raises(ValueError, match="square pixels only.*pixel_spacing"):
        cam.pixel_size
    with pytest.raises(ValueError, match="square pixels only"):
        cam.focal_px
    sq = _cam(pixel_size=0.7)
    assert sq.pixel_size == 0.7 and sq.pixel_spacing == (0.7, 0.7) and sq.square_pixels
    assert Camera(rows=4, cols=5, pixel_spacing=(2, 3), sdd=100, camera_from_world=np.eye(4)).pixel_spacing == (2, 3)
    assert cam.replace(pixel_size=0.3).pixel_spacing == (0.3, 0.3)
    assert cam.replace(pixel_spacing=(0.3, 0.4)).pixel_spacing == (0.3, 0.4)
    base = dict(rows=4, cols=4, sdd=100.0, camera_from_world=np.eye(4))
    for bad, msg in ((dict(pixel_size=(1.0, 0.0)), "pixel_size"), (dict(pixel_size=(1, 2, 3)), "pixel_size"),
                     (dict(pixel_spacing=1.0), "pair"), (dict(pixel_size=1, pixel_spacing=(1, 1)), "not both"),
                     (dict(), "needs its pixel pitch")):
        with pytest.raises(ValueError, match=msg):
            Camera(**base, **bad)


def test_rays_projection_and_intrinsics_use_each_axis_pitch():
    cam = _cam()
    src, tgt = cam.rays()
    np.testing.assert_allclose(np.linalg.norm(tgt[:, 1:] - tgt[:, :-1], axis=-1), COL_MM, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(tgt[1:] - tgt[:-1], axis=-1), ROW_MM, rtol=1e-12)
    uv = cam.project_points(tgt)
    np.testing.assert_allclose(uv[..., 0], np.broadcast_to(np.arange(40), (24, 40)), atol=1e-8)
    np.testing.assert_allclose(uv[..., 1], np.broadcast_to(np.arange(24)[:, None], (24, 40)), atol=1e-8)
    fu, fv = cam.focal_uv
    assert (fu, fv) == (500 / COL_MM, 500 / ROW_MM)
    np.testing.assert_allclose(np.abs(np.diag(cam.K)[:2]), [fu, fv])
    corners = cam.detector_corners()
    np.testing.assert_allclose(np.linalg.norm(corners[1] - corners[0]), 40 * COL_MM)  # width: cols x column pitch
    np.testing.assert_allclose(np.linalg.norm(corners[3] - corners[0]), 24 * ROW_MM)
    assert cam.sees(cam.detector_center) and not cam.sees(cam.source - cam.principal_axis)


def test_binning_and_subdivision_keep_each_pitch():
    cam = _cam().replace(principal_point=(17.3, 9.6))
    pts = np.random.default_rng(0).normal(0, 40, (30, 3))
    fine = cam.project_points(pts)
    b = cam.binned(2)
    assert (b.rows, b.cols, b.pixel_spacing) == (12, 20, (2 * ROW_MM, 2 * COL_MM))
    np.testing.assert_allclose(b.project_points(pts), (fine + 0.5) / 2 - 0.5, atol=1e-9)
    assert cam.subdivided(3).binned(3) == cam
    assert cam.subdivided(3).pixel_spacing == pytest.approx((ROW_MM / 3, COL_MM / 3))


def test_json_round_trip_and_readers():
    cam = _cam()
    d = json.loads(cam.to_json())
    assert d["pixel_spacing"] == [ROW_MM, COL_MM] and "pixel_size" not in d
    back = Camera.from_json(cam.to_json())
    assert back == cam and back.pixel_spacing == cam.pixel_spacing
    np.testing.assert_array_equal(back.P, cam.P)
    sq = json.loads(_cam(pixel_size=0.8).to_json())
    assert sq["pixel_size"] == 0.8 and sq["pixel_spacing"] == [0.8, 0.8]  # square: readers of pixel_size too
    del sq["pixel_spacing"]  # a camera written before rectangular pixels
    assert Camera.from_dict(sq).pixel_spacing == (0.8, 0.8)
    with pytest.raises(InputError, match="disagree"):
        Camera.from_dict({**d, "pixel_size": 0.9})
    with pytest.raises(InputError, match="'pixel_spacing' must be a list of 2 numbers"):
        Camera.from_dict({**d, "pixel_spacing": [1.0]})
    del d["pixel_spacing"]
    with pytest.raises(InputError, match="lacks \\['pixel_size'\\]"):
        Camera.from_dict(d)


def _twice_the_rows(cam):
    """The square camera of row pitch ``ROW_MM / 2`` whose even rows are ``cam``'s rows: the same rays."""
    cu, cv = cam.principal_point
    return cam.replace(rows=2 * cam.rows, pixel_size=cam.pixel_spacing[1], principal_point=(cu, 2 * cv))


def test_a_rectangular_camera_renders_every_other_row_of_the_square_camera_with_twice_the_rows():
    """Row pitch 1.0, column pitch 0.5 mm against a square 0.5 mm camera with twice the rows: its even rows are
    the same rays (to the bit), so the CT and mesh images agree to float32 rounding."""
    from engine.mesh import MeshProjector, icosphere
    from engine.volume import Volume, VolumeProjector

    rng = np.random.default_rng(1)
    dens = np.abs(rng.normal(1.0, 0.3, (2, 20, 18, 16))).astype(np.float32)
    aff = np.diag([2.0, 2.2, 2.5, 1.0])
    aff[:3, 3] = -np.array([19, 18.7, 18.75])
    vol = Volume(density=dens, materials=("water", "bone"), world_from_index=aff)
    cam = _cam(pixel_size=(1.0, 0.5), rows=31, cols=57)
    sq = _twice_the_rows(cam)
    assert sq.square_pixels
    np.testing.assert_allclose(sq.rays()[1][::2], cam.rays()[1], atol=1e-9)
    for proj in (VolumeProjector(vol), VolumeProjector(vol, step_mm=0.7),
                 MeshProjector([icosphere(12.0, 3, center=(2.0, -3.0, 1.0))], ["titanium"]),
                 MeshProjector([icosphere(12.0, 3, center=(2.0, -3.0, 1.0))], ["titanium"], method="bvh")):
        a, b = proj([cam])[0], proj([sq])[0][:, ::2]
        assert a.max() > 1.0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * a.max())


def test_a_sphere_images_as_its_analytic_chords_on_rectangular_pixels():
    """A fine icosphere's path lengths on a 2:1 pixel grid follow the chords 2 sqrt(R^2 - b^2) of the sphere at
    each pixel's ray (b its distance from the centre): an ellipse in pixel units, round in mm."""
    from engine.mesh import MeshProjector, icosphere

    radius, centre = 30.0, np.array([4.0, -2.0, 3.0])
    cam = carm(sid=400, sdd=800, rows=40, cols=80, pixel_size=(3.0, 1.5), isocenter=centre)
    img = MeshProjector([icosphere(radius, 5, center=centre)], ["bone"])([cam])[0, 0]
    src, tgt = cam.rays()
    d = (tgt - src) / np.linalg.norm(tgt - src, axis=-1, keepdims=True)
    off = centre - src
    b = np.linalg.norm(off - (off @ d.reshape(-1, 3).T).reshape(d.shape[:2])[..., None] * d, axis=-1)
    chord = 2 * np.sqrt(np.maximum(radius ** 2 - b ** 2, 0.0))
    inside = b < 0.95 * radius
    assert inside.sum() > 500 and (img[b > 1.05 * radius] == 0).all()
    assert np.abs(img - chord)[inside].max() < 0.25  # mm: the icosphere's facets (subdivision 5)
    assert (img > 0).sum(axis=0).max() == pytest.approx((img > 0).sum(axis=1).max() / 2, abs=1)  # 2:1 in pixels


@pytest.mark.parametrize("spr", [0.6, None])
def test_scatter_kernels_are_round_in_mm_on_rectangular_pixels(spr):
    """A 48 x 48 mm detector as 48 x 24 pixels of 1 x 2 mm and as 48 x 48 of 1 x 1 mm: the scatter, a smooth
    field, agrees at the same places in mm (the kernel widths and block factors are taken per axis), and the
    transposed detector gives the transposed scatter exactly."""
    model = ScatterModel(spr=spr, sigma0_mm=8.0)
    y = np.arange(48) + 0.5

    def fields(col_mm):
        x = np.arange(0, 48, col_mm) + col_mm / 2
        r2 = (y[:, None] - 20.0) ** 2 + (x[None] - 28.0) ** 2
        water = 12.0 + 8.0 * np.exp(-r2 / 200.0)
        return np.exp(-0.2 * water), water

    fine = model.forward(*fields(1.0), (1.0, 1.0), 0.6)[0]
    coarse = model.forward(*fields(2.0), (1.0, 2.0), 0.6)[0]
    want = 0.5 * (fine[:, 0::2] + fine[:, 1::2])  # the 2 mm pixel's centre is between two 1 mm centres
    assert np.abs(coarse - want).max() < 0.03 * want.max()
    p, w = fields(2.0)
    np.testing.assert_allclose(model.forward(p.T, w.T, (2.0, 1.0), 0.6)[0], coarse.T, rtol=1e-12, atol=0)
    # the chains: automatic or fixed SPR, field size from both pitches; the device chain agrees with NumPy
    paths = np.stack([w / 1.0])  # g/cm^2 of water
    spec = preset("fluoro90", bins=8)
    host = PhysicsChain(["water"], spec, scatter=model, pixel_size=(1.0, 2.0))
    assert host.field_cm2(w.shape) == pytest.approx(48 * 24 * 0.1 * 0.2)
    want_img = host.forward(paths)
    dev = DeviceChain(["water"], spec, scatter=model, pixel_size=(1.0, 2.0))
    np.testing.assert_allclose(dev.forward(paths), want_img, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(DeviceChain(["water"], spec, scatter=model, pixel_size=(2.0, 1.0)).forward(
        paths.transpose(0, 2, 1)), want_img.T, rtol=2e-5, atol=2e-6)
    # and its VJP
    g = np.random.default_rng(2).standard_normal(want_img.shape)
    _, state = host.forward(paths, return_state=True)
    np.testing.assert_allclose(dev.vjp(dev.snapshot(), g), host.vjp(state, g), rtol=2e-3,
                               atol=2e-4 * np.abs(host.vjp(state, g)).max())


def test_noise_dose_per_pixel_is_per_pixel_area():
    spec, det = preset("fluoro90", bins=8), Detector()
    nm = NoiseModel(mas=1.0)
    square = nm.quanta(spec, det, 0.5, 1000.0)
    assert nm.quanta(spec, det, (0.5, 0.2), 1000.0) == pytest.approx(square * 0.4, rel=1e-12)
    assert nm.quanta(spec, det, _cam(pixel_size=(0.5, 0.2)).pixel_spacing, 1000.0) == pytest.approx(0.4 * square)
    assert NoiseModel(photons=100.0).quanta(spec, det, (0.5, 0.2), 1000.0) == NoiseModel(photons=100.0).quanta(
        spec, det, 0.5, 1000.0)  # a dose given per pixel does not depend on the pitch


def test_cli_drr_takes_row_and_column_pitch(tmp_path):
    from engine.cli import main
    from engine.volume import write_nifti

    hu = np.full((30, 28, 24), -1000, np.int16)
    hu[6:24, 5:23, 4:20] = 300
    ct = write_nifti(tmp_path / "ct.nii.gz", hu, np.diag([1.5, 1.5, 2.0, 1.0]))
    out, cam_json = tmp_path / "a.npy", tmp_path / "c.json"
    assert main(["drr", str(ct), "--rows", "16", "--cols", "30", "--pixel-size", "2,1", "--sid", "300", "--sdd",
                 "500", "--out", str(out), "--save-camera", str(cam_json)]) == 0
    cam = Camera.from_json(cam_json)
    assert cam.pixel_spacing == (2.0, 1.0) and np.load(out).shape == (16, 30)
    with pytest.raises(SystemExit):
        main(["drr", str(ct), "--out", str(out), "--pixel-size", "1,2,3"])


def test_dataset_plan_takes_row_and_column_pitch():
    from engine.assets import asset_path
    from engine.dataset.plan import parse_plan

    def plan(pitch):
        ct = str(asset_path("pelvis_phantom.nii.gz"))
        return parse_plan({"detector": {"pixel_size": pitch}, "inputs": [{"ct": ct}]})

    assert plan([2.0, 3.0]).pixel_size == (2.0, 3.0)
    assert plan(2.5).pixel_size == 2.5
    with pytest.raises(InputError, match="detector.pixel_size"):
        plan([2.0])
