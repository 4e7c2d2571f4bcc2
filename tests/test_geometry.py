"""Cameras: projection vs rays, C-arm conventions, source/detector constructor, JSON."""
import numpy as np
import pytest

from engine.geometry import Camera, carm, carm_rotation, from_source_detector


def _random_cameras(rng, n=6):
    cams = []
    for _ in range(n):
        cams.append(carm(primary=rng.uniform(-180, 180), secondary=rng.uniform(-45, 45),
                         sid=rng.uniform(500, 900), sdd=rng.uniform(950, 1300), isocenter=rng.normal(0, 50, 3),
                         rows=int(rng.integers(50, 300)), cols=int(rng.integers(50, 300)),
                         pixel_size=rng.uniform(0.2, 2.0)))
    return cams


def test_projected_point_lies_on_the_ray_through_its_pixel():
    rng = np.random.default_rng(1)
    for cam in _random_cameras(rng):
        pts = cam.source + rng.uniform(300, 900) * cam.principal_axis + rng.normal(0, 80, (200, 3))
        uv = cam.project_points(pts)
        target = cam.detector_point(uv[:, 0], uv[:, 1])
        d = target - cam.source
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        off = pts - cam.source
        dist = np.linalg.norm(off - (off * d).sum(1, keepdims=True) * d, axis=1)
        assert dist.max() < 1e-4  # mm


def test_rays_hit_their_own_pixel_centres():
    cam = carm(primary=30, secondary=-10, rows=7, cols=9, pixel_size=1.3)
    src, targets = cam.rays()
    assert targets.shape == (7, 9, 3)
    uv = cam.project_points(targets)
    np.testing.assert_allclose(uv[..., 0], np.broadcast_to(np.arange(9), (7, 9)), atol=1e-8)
    np.testing.assert_allclose(uv[..., 1], np.broadcast_to(np.arange(7)[:, None], (7, 9)), atol=1e-8)
    # every target lies on the detector plane at distance sdd along the principal axis
    np.testing.assert_allclose((targets - src) @ cam.principal_axis, cam.sdd, atol=1e-9)


def test_projection_matrix_matches_K_R_t_and_points_behind_source_are_nan():
    cam = carm(primary=-20, rows=64, cols=80, pixel_size=1.0)
    p = np.array([[10.0, 20.0, 30.0]])
    h = cam.K @ (cam.R @ p[0] + cam.camera_from_world[:3, 3])
    np.testing.assert_allclose(cam.project_points(p)[0], h[:2] / h[2])
    behind = cam.source - 10 * cam.principal_axis
    assert np.all(np.isnan(cam.project_points(behind)))


def test_carm_ap_and_lateral_follow_the_clinical_convention():
    ap = carm(primary=0, secondary=0, sid=700, sdd=1100)
    np.testing.assert_allclose(ap.source, [0, -700, 0], atol=1e-9)  # posterior, under the table
    np.testing.assert_allclose(ap.detector_center, [0, 400, 0], atol=1e-9)  # anterior
    right, left, head = ap.project_points(np.array([[50.0, 0, 0], [-50.0, 0, 0], [0, 0, 50.0]]))
    assert right[0] < left[0]  # patient's right on the image's left
    assert head[1] < (ap.rows - 1) / 2  # head towards row 0
    lao = carm(primary=90)
    assert lao.detector_center[0] < -1  # LAO: detector towards the patient's left (-x in RAS)
    front, back = lao.project_points(np.array([[0, 50.0, 0], [0, -50.0, 0]]))
    assert front[0] < back[0]  # left lateral: anterior on the image's left
    cra = carm(secondary=30)
    assert cra.detector_center[2] > 1  # CRA: detector towards the head
    rao = carm(primary=-30)
    assert rao.detector_center[0] > 1


def test_carm_central_ray_passes_through_isocentre_and_rotation_is_proper():
    iso = np.array([12.0, -30.0, 100.0])
    cam = carm(primary=37, secondary=-21, sid=650, sdd=1000, isocenter=iso, rows=101, cols=101)
    np.testing.assert_allclose(cam.project_points(iso), [50, 50], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(cam.source - iso), 650, rtol=1e-12)
    r = carm_rotation(37, -21)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_from_source_detector_with_offset_detector_and_both_handednesses():
    rng = np.random.default_rng(3)
    for mirror in (False, True):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        u, v = q[:, 0], q[:, 1]
        n = np.cross(u, v) * (-1 if mirror else 1)
        src = rng.normal(0, 10, 3)
        centre = src + 900 * n + 25 * u - 13 * v  # detector shifted: principal point off-centre
        cam = from_source_detector(source=src, detector_center=centre, u_axis=u, v_axis=v,
                                   rows=40, cols=60, pixel_size=0.5)
        assert cam.mirrored == mirror
        np.testing.assert_allclose(cam.detector_center, centre, atol=1e-9)
        np.testing.assert_allclose(cam.u_axis, u, atol=1e-12)
        np.testing.assert_allclose(cam.v_axis, v, atol=1e-12)
        np.testing.assert_allclose(cam.source, src, atol=1e-9)
        assert cam.sdd == pytest.approx(900)
        np.testing.assert_allclose(cam.principal_point, [29.5 - 50, 19.5 + 26], atol=1e-9)
        # a point on the detector projects onto its own pixel coordinates
        np.testing.assert_allclose(cam.project_points(cam.detector_point(3.0, 7.0)), [3, 7], atol=1e-9)


def test_json_round_trip_file_and_text(tmp_path):
    for cam in _random_cameras(np.random.default_rng(5), 3) + [
            from_source_detector(source=[0, 0, 0], detector_center=[0, 0, 1000], u_axis=[1, 0, 0],
                                 v_axis=[0, 1, 0], rows=10, cols=20, pixel_size=1.0)]:
        path = tmp_path / "cam.json"
        cam.to_json(path)
        back = Camera.from_json(path)
        assert back == cam
        np.testing.assert_array_equal(back.camera_from_world, cam.camera_from_world)
        assert (back.rows, back.cols, back.pixel_size, back.sdd, back.mirrored, back.principal_point) == \
               (cam.rows, cam.cols, cam.pixel_size, cam.sdd, cam.mirrored, cam.principal_point)
        assert np.array_equal(Camera.from_json(cam.to_json()).P, cam.P)


def test_moving_the_camera_is_the_inverse_of_moving_the_points():
    cam = carm(primary=10)
    t = np.eye(4)
    t[:3, :3] = carm_rotation(25, 5)
    t[:3, 3] = [5, -3, 9]
    pts = np.random.default_rng(0).normal(0, 50, (10, 3))
    moved_pts = pts @ t[:3, :3].T + t[:3, 3]
    np.testing.assert_allclose(cam.moved(t).project_points(moved_pts), cam.project_points(pts), atol=1e-9)


@pytest.mark.parametrize("kw, msg", [
    (dict(rows=0), "rows"), (dict(cols=-3), "cols"), (dict(pixel_size=0.0), "pixel_size"),
    (dict(pixel_size=-1.0), "pixel_size"), (dict(sdd=-5.0), "sdd"), (dict(rows=2.5), "rows"),
])
def test_bad_camera_sizes_are_rejected(kw, msg):
    base = dict(rows=10, cols=10, pixel_size=1.0, sdd=1000.0, camera_from_world=np.eye(4))
    base.update(kw)
    with pytest.raises(ValueError, match=msg):
        Camera(**base)


def test_bad_geometry_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="sdd must exceed sid"):
        carm(sid=1000, sdd=900)
    with pytest.raises(ValueError, match="orthogonal"):
        from_source_detector(source=[0, 0, 0], detector_center=[0, 0, 100], u_axis=[1, 0, 0],
                             v_axis=[1, 1, 0], rows=4, cols=4, pixel_size=1)
    with pytest.raises(ValueError, match="proper rotation"):
        Camera(rows=4, cols=4, pixel_size=1, sdd=100, camera_from_world=np.diag([1.0, 1, -1, 1]))
    with pytest.raises(FileNotFoundError):
        Camera.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        Camera.from_json(tmp_path / "bad.json")


def test_binned_camera_sees_the_same_points():
    from engine.geometry import bin_image

    cam = carm(primary=20.0, secondary=-10.0, rows=240, cols=200, pixel_size=0.5,
                      isocenter=(5.0, -3.0, 10.0)).replace(principal_point=(90.3, 130.7))
    pts = np.random.default_rng(0).normal(0, 60, (50, 3))
    fine = cam.project_points(pts)
    for f in (2, 4, 8):
        b = cam.binned(f)
        assert (b.rows, b.cols, b.pixel_size) == (240 // f, 200 // f, 0.5 * f)
        # the bin containing fine pixels f*i .. f*i+f-1 has centre (f*i + (f-1)/2) in fine coordinates
        assert np.allclose(b.project_points(pts), (fine + 0.5) / f - 0.5, atol=1e-9)
        assert np.allclose(b.detector_point(0, 0), cam.detector_point((f - 1) / 2, (f - 1) / 2))
    img = np.arange(24.0).reshape(4, 6)
    assert np.array_equal(bin_image(img, 2), [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    with pytest.raises(ValueError, match="bin factor"):
        cam.binned(0)


def test_camera_helpers_depth_detector_corners_visibility_and_carm_angles():
    from engine.geometry import carm_angles, central_rays_meet

    iso = np.array([10.0, -20.0, 30.0])
    cams = [carm(primary=p, secondary=s, sid=700, sdd=1100, isocenter=iso, rows=30, cols=40, pixel_size=2.0)
            for p, s in ((0, 0), (90, 10), (-35, -20))]
    np.testing.assert_allclose(central_rays_meet(cams), iso, atol=1e-9)  # the central rays meet at the isocentre
    one = central_rays_meet(cams[:1])  # one camera: its central ray's point nearest the origin
    assert np.linalg.norm(np.cross(one - cams[0].source, cams[0].principal_axis)) < 1e-9
    assert abs((one - 0.0) @ cams[0].principal_axis) < 1e-9
    for cam, (p, s) in zip(cams, ((0, 0), (90, 10), (-35, -20))):
        np.testing.assert_allclose(carm_angles(cam), (p, s), atol=1e-9)
        assert cam.depth(iso) == pytest.approx(700)
        corners = cam.detector_corners()
        np.testing.assert_allclose(cam.project_points(corners), [[-0.5, -0.5], [39.5, -0.5], [39.5, 29.5],
                                                                 [-0.5, 29.5]], atol=1e-9)
        assert cam.sees(iso) and not cam.sees(cam.source - 5 * cam.principal_axis)
        np.testing.assert_array_equal(cam.on_detector([[-0.5, 0], [39.6, 3], [np.nan, 1]]), [True, False, False])
        assert cam.may_see(iso + np.array([[-5, -5, -5], [5, 5, 5.0]]))
        assert not cam.may_see(cam.source - 100 * cam.principal_axis + np.eye(3))  # all behind the source
        assert cam.may_see(np.stack([cam.source - cam.principal_axis, cam.source + cam.principal_axis]))  # straddles
        far = cam.detector_point(400.0, 15.0)  # beyond the detector's right edge, on its plane
        assert not cam.may_see(far + np.array([[0, 0, 0], [1.0, 1, 1]]))


def test_camera_batch_is_the_one_check_of_every_renderer():
    """A Camera or a sequence of them, sharing the detector shape; anything else is named."""
    from engine.geometry import camera_batch

    a = carm(rows=8, cols=6, pixel_size=1.0)
    assert camera_batch(a) == [a] and camera_batch((a, a)) == [a, a]
    with pytest.raises(ValueError, match="no cameras"):
        camera_batch([])
    with pytest.raises(TypeError, match="camera 1 is a str"):
        camera_batch([a, "ap.json"])
    with pytest.raises(ValueError, match="share the detector shape"):
        camera_batch([a, carm(rows=8, cols=8, pixel_size=1.0)])
