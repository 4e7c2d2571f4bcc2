"""The Taichi ray-marching projector against closed forms and an exact NumPy reference."""
import warnings

import numpy as np
import pytest
from phantoms import (box_chord, cylinder_chord, cylinder_volume, grid_volume, paraboloid_sphere_integral,
                      paraboloid_sphere_volume, sphere_chord, sphere_volume)

import engine
from engine.geometry import carm, carm_rotation
from engine.volume import Volume, VolumeProjector
from engine.volume.reference import exact_trilinear_integral

pytestmark = pytest.mark.kernel  # a GPU kernel's test: CI runs it again with ENGINE_ARCH=vulkan


def _mm(proj, cam):
    """Line integral of material 0 in density x mm (g/cm^2 x 10)."""
    return proj(cam)[0, 0].astype(np.float64) * 10.0


# ----------------------------------------------------------------- closed forms
def test_uniform_box_is_exact_at_default_step():
    vol = grid_volume(np.ones((40, 30, 20)), spacing=(1.0, 1.5, 2.0))
    cam = carm(primary=33, secondary=17, sid=300, sdd=500, rows=48, cols=48, pixel_size=2.0)
    src, tgt = cam.rays()
    lo, hi = vol.corners().min(0), vol.corners().max(0)
    ref = box_chord(src, tgt, lo, hi)
    img = _mm(VolumeProjector(vol), cam)
    assert (ref > 1).sum() > 500
    np.testing.assert_allclose(img, ref, rtol=5e-5, atol=1e-3)  # constant field: only float32 rounding


def test_uniform_sphere_and_cylinder_within_half_percent_at_default_step():
    cam = carm(primary=20, secondary=10, sid=400, sdd=600, rows=64, cols=64, pixel_size=1.5)
    src, tgt = cam.rays()
    d = tgt - src
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    impact = np.linalg.norm(np.cross(-src, d), axis=-1)  # distance of the ray from the centre, mm
    ref = sphere_chord(src, tgt, 40.0)
    img = _mm(VolumeProjector(sphere_volume(n=96, radius=40.0)), cam)
    # Trilinear sampling of a voxelised surface blurs it by ~1 voxel; the line integral of a blurred ball
    # differs from the chord by ~ sigma^2 * P''(b) / 2, which grows as (R^2 - b^2)^-1.5 near grazing rays.
    # That is the voxel grid's error, not the marching's; keep rays with impact below 0.75 R.
    keep = impact < 0.75 * 40
    assert keep.sum() > 1000
    assert np.max(np.abs(img - ref)[keep] / ref[keep]) < 5e-3

    cyl = cylinder_volume(n=96, nz=48, radius=40.0)
    zlo, zhi = cyl.corners()[:, 2].min(), cyl.corners()[:, 2].max()
    cam = carm(primary=15, secondary=5, sid=400, sdd=600, rows=64, cols=64, pixel_size=1.0)
    src, tgt = cam.rays()
    ref = cylinder_chord(src, tgt, 40.0, zlo, zhi)
    full = cylinder_chord(src, tgt, 38.0, zlo, zhi)  # rays well inside the curved surface and the caps
    inner = cylinder_chord(src, tgt, 40.0, zlo + 3, zhi - 3)
    keep = (full > 0.45 * full.max()) & (np.abs(inner - ref) < 1e-9)
    assert keep.sum() > 300
    img = _mm(VolumeProjector(cyl), cam)
    assert np.max(np.abs(img - ref)[keep] / ref[keep]) < 5e-3


def test_fine_step_matches_closed_forms_within_0p05_percent():
    vol = grid_volume(np.ones((30, 30, 30)), spacing=1.3)
    cam = carm(primary=41, secondary=-23, sid=200, sdd=400, rows=32, cols=32, pixel_size=2.0)
    src, tgt = cam.rays()
    ref = box_chord(src, tgt, vol.corners().min(0), vol.corners().max(0))
    img = _mm(VolumeProjector(vol, step_mm=0.05), cam)
    keep = ref > 5
    np.testing.assert_allclose(img[keep], ref[keep], rtol=5e-4)

    vol = paraboloid_sphere_volume(n=168, radius=80.0)  # density 1 - r^2/R^2: smooth, closed form
    cam = carm(primary=20, secondary=10, sid=400, sdd=600, rows=48, cols=48, pixel_size=4.0)
    src, tgt = cam.rays()
    ref = paraboloid_sphere_integral(src, tgt, 80.0)
    keep = ref > 0.3 * ref.max()
    assert keep.sum() > 400
    fine = _mm(VolumeProjector(vol, step_mm=0.05), cam)
    assert np.max(np.abs(fine - ref)[keep] / ref[keep]) < 5e-4
    coarse = _mm(VolumeProjector(vol, step_mm=8.0), cam)  # the midpoint rule's error shows at big steps
    assert np.abs(coarse - ref)[keep].mean() > 3 * np.abs(fine - ref)[keep].mean()


# ------------------------------------------------------ exact NumPy reference
def _oblique_scene(seed, shape, smooth=0.0, sid=60, pixel=4.0):
    """A random volume on a rotated, sheared, anisotropic grid, 4 random cameras and the exact integrals."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 2, shape)
    values = (gaussian_filter(values, smooth) if smooth else values).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    shear = np.array([[1.0, 0.2, 0], [0, 1, -0.15], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = q @ shear @ np.diag([1.2, 0.9, 2.1])  # rotated, sheared (oblique), anisotropic
    affine[:3, 3] = rng.normal(0, 3, 3)
    vol = Volume(density=values[None], materials=("m",), world_from_index=affine)
    centre = vol.center
    rmax = 0.5 * np.linalg.norm(vol.corners() - centre, axis=1).max()
    cams = [carm(primary=rng.uniform(-180, 180), secondary=rng.uniform(-60, 60), sid=sid, sdd=2 * sid,
                 isocenter=centre + rng.normal(0, rmax / 3, 3), rows=12, cols=12, pixel_size=pixel)
            for _ in range(4)]
    refs = []
    for cam in cams:
        src, tgt = cam.rays()
        refs.append([[exact_trilinear_integral(values, np.linalg.inv(affine), affine[:3, :3], src, tgt[r, c])
                      for c in range(cam.cols)] for r in range(cam.rows)])
    return vol, cams, np.array(refs)


def _rel_errors(proj, cams, refs):
    img = proj(cams)[:, 0].astype(np.float64) * 10
    keep = refs > 0.2 * refs.max(axis=(1, 2), keepdims=True)
    assert keep.sum() > 80
    return np.abs(img - refs)[keep] / refs[keep]


def test_midpoint_sampling_agrees_with_exact_reference_on_white_noise_and_oblique_affine():
    """White noise is the worst case for any sampling: at the default step (half the smallest spacing) within
    1%, at 0.01 mm within 2e-4 of the exact integral of the trilinear interpolant."""
    vol, cams, refs = _oblique_scene(7, (13, 11, 9))
    for step, rtol in ((None, 1e-2), (0.01, 2e-4)):
        err = _rel_errors(VolumeProjector(vol, sampling="midpoint", step_mm=step), cams, refs)
        assert err.max() < rtol, (step, err.max())


@pytest.mark.parametrize("seed", [7, 8])
def test_plane_sampling_agrees_with_exact_reference_on_a_smooth_volume_and_oblique_affine(seed):
    """The default sampling (one bilinear sample per voxel plane, trapezoid rule) on a random volume smoothed
    over 1.5 voxels (CT-like: partial volume and the scanner's blur make CT smooth at the voxel scale), seen
    from random oblique directions: median error ~2e-4 (seen 1.7-2.3e-4), max ~2e-3 of the exact integral.
    (On white noise at 45 degrees the trapezoid rule misses up to ~10%; midpoint sampling is there for that.)"""
    vol, cams, refs = _oblique_scene(seed, (26, 22, 18), smooth=1.5, sid=120, pixel=8.0)
    err = _rel_errors(VolumeProjector(vol), cams, refs)
    assert np.median(err) < 5e-4 and err.max() < 5e-3, (np.median(err), err.max())
    fine = _rel_errors(VolumeProjector(vol, sampling="midpoint", step_mm=0.05), cams, refs)
    assert np.median(fine) < 0.1 * np.median(err)  # the reference is right: fine midpoint sampling agrees


def test_plane_sampling_is_exact_for_rays_along_an_axis_even_on_white_noise():
    """Along a grid axis the interpolant is linear between voxel-centre planes: the trapezoid rule is exact,
    whatever the values (rays within 1e-4 rad of the axis: far source, small detector)."""
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 2, (14, 30, 12)).astype(np.float32)
    vol = grid_volume(values, spacing=1.0)
    for prim, axis in ((0, 1), (90, 0)):  # AP: rays along j (y); lateral: along i (x)
        cam = carm(primary=prim, sid=1e5, sdd=2e5, rows=8, cols=8, pixel_size=1.0, isocenter=vol.center)
        src, tgt = cam.rays()
        a = vol.world_from_index
        ref = np.array([[exact_trilinear_integral(values, np.linalg.inv(a), a[:3, :3], src, tgt[r, c])
                         for c in range(8)] for r in range(8)])
        img = _mm(VolumeProjector(vol), cam)
        assert ref.min() > 5
        np.testing.assert_allclose(img, ref, rtol=2e-5)


def test_empty_space_skipping_is_exact():
    rng = np.random.default_rng(2)
    dens = np.zeros((3, 40, 36, 30), np.float32)
    dens[0] = 0.0012  # constant air everywhere: all blocks uniform unless something else is there
    dens[1, 10:25, 12:30, 5:20] = rng.uniform(0.9, 1.1, (15, 18, 15))
    dens[2, 20:24, 5:9, 22:26] = 1.8
    vol = Volume(density=dens, materials=("air", "soft", "bone"), world_from_index=np.diag([0.8, 0.8, 1.5, 1]))
    proj = VolumeProjector(vol)
    assert 0.2 < proj.uniform_fraction < 1.0
    cams = [carm(primary=a, secondary=b, sid=100, sdd=200, isocenter=vol.center, rows=40, cols=40,
                 pixel_size=2.0) for a, b in ((0, 0), (35, 20), (90, -10))]
    fast = proj(cams)
    proj.skip_empty = False
    slow = proj(cams)
    np.testing.assert_allclose(fast, slow, rtol=2e-5, atol=1e-7)


# --------------------------------------------------------------- invariances
def test_rotated_affine_renders_as_the_equivalent_rotated_camera():
    rng = np.random.default_rng(11)
    dens = rng.uniform(0, 1, (24, 20, 16)).astype(np.float32)
    dens[5:10, 3:8, 2:6] += 3  # asymmetric feature
    base = np.diag([1.1, 0.9, 1.7, 1.0])
    base[:3, 3] = -(np.array(dens.shape) - 1) / 2 * [1.1, 0.9, 1.7]
    move = np.eye(4)
    move[:3, :3] = carm_rotation(40, 25) @ carm_rotation(0, 0)
    move[:3, 3] = [7, -4, 12]
    vol_rot = Volume(density=dens[None], materials=("m",), world_from_index=move @ base)
    vol_ref = Volume(density=dens[None], materials=("m",), world_from_index=base)
    cam = carm(primary=15, secondary=-5, sid=150, sdd=300, rows=40, cols=40, pixel_size=1.5,
               isocenter=vol_rot.center)
    a = VolumeProjector(vol_rot)(cam)
    b = VolumeProjector(vol_ref)(cam.moved(np.linalg.inv(move)))
    assert a.max() > 1
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * a.max())


def test_batch_equals_single_renders_and_buffers_are_reused():
    vol = sphere_volume(n=40, radius=15.0)
    proj = VolumeProjector(vol)
    cams = [carm(primary=a, sid=100, sdd=200, rows=20, cols=24, pixel_size=2.0) for a in (0, 30, 60)]
    batch = proj(cams)
    assert batch.shape == (3, 1, 20, 24)
    buf = proj._out
    for cam, img in zip(cams, batch):
        np.testing.assert_array_equal(proj([cam])[0], img)  # same kernel, same arithmetic
    single = proj(cams[1])
    assert single.shape == (1, 1, 20, 24)  # one Camera: still a view axis
    proj(cams)
    assert proj._out is not buf or proj._out.shape == buf.shape


def test_material_channels_and_units():
    """Two materials: g/cm^2 = density (g/cm^3) x length (mm) / 10."""
    dens = np.zeros((2, 20, 20, 20), np.float32)
    dens[0] = 1.0
    dens[1] = 1.85
    vol = Volume(density=dens, materials=("water", "bone"), world_from_index=np.diag([2.0, 2.0, 2.0, 1.0]))
    cam = carm(sid=200, sdd=400, rows=3, cols=3, pixel_size=0.5, isocenter=vol.center)
    img = VolumeProjector(vol)(cam)
    np.testing.assert_allclose(img[0, :, 1, 1], [4.0, 7.4], rtol=1e-5)  # 40 mm of each


def test_float16_storage_is_close_to_float32():
    vol = sphere_volume(n=48, radius=18.0)
    cam = carm(primary=10, sid=100, sdd=200, rows=24, cols=24, pixel_size=2.0)
    a = VolumeProjector(vol)(cam)
    b = VolumeProjector(vol, storage="f16")(cam)
    np.testing.assert_allclose(b, a, atol=2e-3 * a.max())


def test_detector_that_sees_nothing_warns_and_returns_zeros():
    vol = sphere_volume(n=24, radius=8.0)
    cam = carm(sid=100, sdd=200, rows=8, cols=8, pixel_size=1.0, isocenter=(500.0, 0, 0))
    with pytest.warns(RuntimeWarning, match="sees none of the volume"):
        img = VolumeProjector(vol)(cam)
    assert img.shape == (1, 1, 8, 8) and not img.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VolumeProjector(vol)(carm(sid=100, sdd=200, rows=8, cols=8, pixel_size=1.0))


def test_bad_projector_arguments():
    vol = sphere_volume(n=24, radius=8.0)
    with pytest.raises(ValueError, match="step_mm"):
        VolumeProjector(vol, step_mm=0)
    with pytest.raises(ValueError, match="step_mm"):
        VolumeProjector(vol, step_mm=-1)
    with pytest.raises(ValueError, match="storage"):
        VolumeProjector(vol, storage="f8")
    with pytest.raises(ValueError, match="sampling"):
        VolumeProjector(vol, sampling="siddon")
    with pytest.raises(ValueError, match="step_mm applies"):
        VolumeProjector(vol, sampling="planes", step_mm=0.5)
    with pytest.raises(TypeError):
        VolumeProjector(np.zeros((4, 4, 4)))
    proj = VolumeProjector(vol)
    with pytest.raises(ValueError, match="detector shape"):
        proj([carm(rows=4, cols=4), carm(rows=4, cols=5)])
    with pytest.raises(ValueError, match="no cameras"):
        proj([])


def test_backend_reports_its_arch():
    engine.backend.init()
    b = engine.backend.current()
    assert b.arch in ("cpu", "cuda", "vulkan")


# --------------------------------------------------------------- device buffer limits (bricks, pieces)
@pytest.mark.parametrize("storage", ["f32", "f16"])
@pytest.mark.parametrize("sampling", ["planes", "midpoint"])
def test_bricked_volume_and_pieced_images_equal_one_buffer(storage, sampling):
    """Under a small buffer limit (as Vulkan's 128 MiB is for a real CT) the volume is split along k into
    bricks that share their boundary slice, and a batch is rendered in pieces of views and of rows; every
    sample reads the same voxels as from one buffer, so the images agree to float32 rounding (the bricked
    kernel is other compiled code: ~1e-7 relative), including views that march along k across bricks."""
    rng = np.random.default_rng(5)
    dens = np.zeros((2, 30, 26, 41), np.float32)
    dens[0] = 0.0012
    dens[1, 5:25, 4:22, 3:38] = rng.uniform(0.5, 1.5, (20, 18, 35))
    vol = Volume(density=dens, materials=("air", "soft"), world_from_index=np.diag([1.0, 1.1, 0.7, 1]))
    cams = [carm(primary=a, secondary=b, sid=80, sdd=160, isocenter=vol.center, rows=18, cols=22, pixel_size=2.5)
            for a, b in ((0, 0), (40, 25), (90, -30), (-70, 80))]  # (-70, 80): rays nearly along k
    whole = VolumeProjector(vol, storage=storage, sampling=sampling)
    assert whole.n_bricks == 1 or engine.backend.current().arch == "vulkan"
    elem = 2 if storage == "f16" else 4
    slice_bytes = 26 * 30 * 2 * elem
    small = VolumeProjector(vol, storage=storage, sampling=sampling, max_buffer_bytes=6 * slice_bytes)
    assert small.n_bricks == 8  # 5 slices per brick step: ceil((41 - 1) / 5)
    ref = whole(cams)
    assert (ref[:, 1] > 0.5 * ref[:, 1].max()).sum() > 100  # the test object is in view
    tol = dict(rtol=2e-6, atol=2e-7 * ref.max())
    np.testing.assert_allclose(small(cams), ref, **tol)
    # an output limit below one view: pieces of rows; below the batch: pieces of views
    for limit in (2 * 22 * 4 * 5, 2 * 18 * 22 * 4 * 3):
        pieced = VolumeProjector(vol, storage=storage, sampling=sampling, max_buffer_bytes=max(limit, 6 * slice_bytes))
        pieced._limit = limit  # the volume stays bricked as above; only the output limit shrinks
        np.testing.assert_allclose(pieced(cams), ref, **tol)
        with pytest.raises(ValueError, match="buffer"):
            pieced.render_field(cams)


def test_volume_too_large_for_the_buffer_limit_names_the_problem():
    vol = sphere_volume(n=24, radius=8.0)  # one material, float32: 24 x 24 x 4 bytes per slice
    with pytest.raises(ValueError, match="two slices .* exceed"):
        VolumeProjector(vol, max_buffer_bytes=2 * 24 * 24 * 4 - 1)
    with pytest.raises(ValueError, match="more than 16"):
        VolumeProjector(vol, max_buffer_bytes=2 * 24 * 24 * 4)  # 1 slice per brick step: 23 bricks
    assert VolumeProjector(vol, max_buffer_bytes=3 * 24 * 24 * 4).n_bricks == 12
    with pytest.raises(ValueError, match="max_buffer_bytes"):
        VolumeProjector(vol, max_buffer_bytes=0)


def test_close_frees_and_later_renders_raise():
    vol = sphere_volume(n=24, radius=8.0)
    cam = carm(sid=100, sdd=200, rows=8, cols=8, pixel_size=2.0, isocenter=vol.center)
    with VolumeProjector(vol) as proj:
        proj(cam)
        assert proj.device_bytes >= 24 ** 3 * 4
    assert proj.closed and proj.device_bytes == 0
    with pytest.raises(RuntimeError, match="closed"):
        proj(cam)
