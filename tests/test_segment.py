"""Segment models (several bones as one shape model): parts, shape and placement modes, the placement statistics,
and the reconstruction's gradient through a segment (central finite differences, float64)."""
import numpy as np
import pytest

import engine
from engine.geometry.transforms import pose_matrix, rotation_from_vector
from engine.recon import Objective, ReconConfig
from engine.ssm import ShapeModel, align, load_pelvis_model
from engine.ssm.segment import consecutive_placement, part_mesh, placement_trend, segment_model
from engine.ssm.vertebrae import vertebra_segment
from fd import fd_check_params
from research.experiments import rotation_angle_deg


def _rigid(rotvec_deg, t):
    return pose_matrix(np.concatenate([np.deg2rad(rotvec_deg), t]))


@pytest.fixture(scope="module")
def two_bones():
    """The coarse pelvis model (3 modes) twice: part 1 is the reference, part 0 placed 12 degrees and 60 mm off."""
    model = load_pelvis_model().truncated(3)
    place = _rigid([4.0, -10.0, 5.0], [10.0, -60.0, 5.0])
    seg = segment_model(model, [place, np.eye(4)], reference=1, rotation_sd=np.deg2rad(3.0), translation_sd=2.0,
                        names=["lower", "upper"])
    return model, place, seg


def test_segment_parts_and_shape_modes(two_bones, tmp_path):
    model, place, seg = two_bones
    nv = model.n_vertices
    assert seg.n_vertices == 2 * nv and len(seg.faces) == 2 * len(model.faces)
    assert seg.n_modes == 2 * 3 + 6
    lower = part_mesh(seg, seg.mean, "lower")
    assert np.allclose(lower.vertices, model.mean @ place[:3, :3].T + place[:3, 3])
    assert np.array_equal(lower.faces, model.faces)
    assert np.allclose(part_mesh(seg, seg.mean, 1).vertices, model.mean)
    c = np.array([0.7, -1.2, 0.4])
    x = seg.instance(np.r_[c, 0, 0, 0])  # part 0's shape modes move part 0 alone, rotated by its placement
    assert np.allclose(x[:nv], model.instance(c) @ place[:3, :3].T + place[:3, 3])
    assert np.allclose(x[nv:], model.mean)
    x = seg.instance(np.r_[0, 0, 0, c])
    assert np.allclose(x[:nv], seg.mean[:nv]) and np.allclose(x[nv:], model.instance(c))
    back = ShapeModel.load(seg.save(tmp_path / "segment.npz"))  # the parts survive the .npz (info is JSON)
    assert back.info["parts"] == seg.info["parts"]
    assert np.allclose(part_mesh(back, back.mean, "lower").vertices, lower.vertices, atol=1e-3)  # float32 file
    with pytest.raises(KeyError, match="lower, upper|'lower', 'upper'"):
        part_mesh(seg, seg.mean, "middle")
    with pytest.raises(ValueError, match="vertices"):
        part_mesh(seg, model.mean, "lower")
    with pytest.raises(ValueError, match="parts"):
        part_mesh(model, model.mean, 0)


def test_segment_placement_modes(two_bones):
    """The translation modes move the part by std mm; the rotation modes are the rotation about the part's
    centroid to first order (error of order angle^2 times the part's radius); the reference never moves."""
    model, place, seg = two_bones
    nv = model.n_vertices
    part = seg.mean[:nv]
    centre = part.mean(0)
    radius = np.linalg.norm(part - centre, axis=1).max()
    for a in range(3):
        c = np.zeros(seg.n_modes)
        c[6 + a] = 1.5
        x = seg.instance(c)
        assert np.allclose(x[:nv] - part, 1.5 * 2.0 * np.eye(3)[a]) and np.allclose(x[nv:], seg.mean[nv:])
        c = np.zeros(seg.n_modes)
        c[9 + a] = 1.0  # 3 degrees
        angle = np.deg2rad(3.0)
        exact = (part - centre) @ rotation_from_vector(angle * np.eye(3)[a]).T + centre
        err = np.abs(seg.instance(c)[:nv] - exact).max()
        assert err <= 0.6 * angle ** 2 * radius, (err, angle ** 2 * radius)
        assert err > 0.1 * angle ** 2 * radius  # linearised, not exact: the check measures something


def test_segment_model_errors(two_bones):
    model, place, seg = two_bones
    with pytest.raises(ValueError, match="identity"):
        segment_model(model, [place, place], reference=1, rotation_sd=0.05, translation_sd=2.0)
    with pytest.raises(ValueError, match="rigid"):
        segment_model(model, [2 * np.eye(4), np.eye(4)], reference=1, rotation_sd=0.05, translation_sd=2.0)
    with pytest.raises(ValueError, match="two or more parts"):
        segment_model(model, [np.eye(4)], reference=0, rotation_sd=0.05, translation_sd=2.0)
    with pytest.raises(ValueError, match="positive"):
        segment_model(model, [place, np.eye(4)], reference=1, rotation_sd=0.0, translation_sd=2.0)
    with pytest.raises(ValueError, match="subdivide"):
        seg.subdivided(1)


def test_consecutive_placement_recovers_mean_and_spread():
    """A chain whose steps are a fixed transform times a random rotation of 2 degrees (sd per axis) and a
    random translation of 1.5 mm (sd per axis): the mean step and both spreads come back (400 steps: the
    spreads' sampling error is ~4 %, the mean's ~0.1 degree / 0.08 mm)."""
    rng = np.random.default_rng(5)
    step = _rigid([6.0, 1.0, -2.0], [0.5, -1.0, 28.0])
    chain = [_rigid([20.0, 5.0, 3.0], [1.0, 2.0, 3.0])]
    for _ in range(400):
        noise = _rigid(rng.normal(0, 2.0, 3), rng.normal(0, 1.5, 3))
        chain.append(chain[-1] @ step @ noise)
    mean, rsd, tsd = consecutive_placement([chain[:150], chain[150:]])  # a gap: the pair (149, 150) is skipped
    d = np.linalg.inv(step) @ mean
    assert rotation_angle_deg(mean, step) < 0.5
    assert np.linalg.norm(d[:3, 3]) < 0.5  # the noise rotation also moves the translation a little
    assert np.rad2deg(rsd) == pytest.approx(2.0, rel=0.15)
    assert tsd == pytest.approx(1.5, rel=0.15)
    exact, r0, t0 = consecutive_placement([chain[0], chain[0] @ step, chain[0] @ step @ step])
    assert np.allclose(exact, step) and r0 < 1e-7 and t0 < 1e-9
    with pytest.raises(ValueError, match="two consecutive pairs"):
        consecutive_placement(chain[:2])


def _growing_chain(n, rng=None, rot_sd_deg=0.0, t_sd=0.0):
    """Poses of a chain whose step grows level by level: translation ``(0.5, -1, 20 + 0.8 j)`` mm, rotation
    about z of ``3 + 0.5 j`` degrees after a fixed 8-degree tilt about z (all about one axis: the trend is then
    exactly linear in the rotation vector); with noise, a random rotation and translation per step."""
    chain = [_rigid([10.0, 5.0, 3.0], [1.0, 2.0, 3.0])]
    for j in range(n - 1):
        step = _rigid([0.0, 0.0, 8.0 + 3.0 + 0.5 * j], [0.5, -1.0, 20.0 + 0.8 * j])
        if rng is not None:
            step = step @ _rigid(rng.normal(0, rot_sd_deg, 3), rng.normal(0, t_sd, 3))
        chain.append(chain[-1] @ step)
    return chain


def test_placement_trend_predicts_a_growing_step():
    """Without noise a linear trend predicts the two steps of a left-out level exactly (the chain's mean step
    misses them by millimetres); with noise the prediction's standard errors are the noise's spread and
    grow where the trend is extrapolated; too few pairs is an error."""
    chain = _growing_chain(12)
    truth = [np.linalg.inv(chain[j]) @ chain[j + 1] for j in (1, 2)]  # level 2 left out, near the chain's end
    gapped = chain[:2] + [None] + chain[3:]
    pred, rsd, tsd = placement_trend(gapped, [1, 2])
    for p, t in zip(pred, truth):
        assert np.abs(p - t).max() < 1e-9
    assert rsd.max() < 1e-9 and tsd.max() < 1e-9
    mean, _, _ = consecutive_placement([chain[:2], chain[3:]])
    assert min(np.linalg.norm(mean[:3, 3] - t[:3, 3]) for t in truth) > 2.0  # what the trend is for

    rng = np.random.default_rng(8)
    noisy = _growing_chain(300, rng, rot_sd_deg=2.0, t_sd=1.5)
    pred, rsd, tsd = placement_trend(noisy[:150] + [None] + noisy[151:], [149, 150])
    assert tsd[0] == pytest.approx(1.5, rel=0.15) and np.rad2deg(rsd[0]) == pytest.approx(2.0, rel=0.15)
    _, rsd_short, tsd_short = placement_trend(noisy[:10], [4, 30])  # within 9 pairs and 21 levels beyond them
    assert tsd_short[1] > 1.5 * tsd_short[0] and rsd_short[1] > 1.5 * rsd_short[0]
    clean = _growing_chain(300)
    for p, j, t_se in zip(pred[:2], (149, 150), tsd[:2]):
        t = np.linalg.inv(clean[j]) @ clean[j + 1]
        assert np.linalg.norm(p[:3, 3] - t[:3, 3]) < 4 * t_se  # the trend, not the noise of that step
        assert rotation_angle_deg(p, t) < 1.5
    with pytest.raises(ValueError, match="at least 3 consecutive pairs"):
        placement_trend(chain[:3] + [None] + chain[4:5], [3])


def test_segment_model_takes_a_spread_per_part(two_bones):
    model = two_bones[0]
    place = _rigid([0.0, 0.0, 5.0], [0.0, 0.0, 40.0])
    seg = segment_model(model, [np.linalg.inv(place), np.eye(4), place], reference=1,
                        rotation_sd=[0.01, 0.03], translation_sd=[1.0, 2.5])
    k = 3 * model.n_modes
    assert np.allclose(seg.std[k:k + 6], [1.0] * 3 + [0.01] * 3)
    assert np.allclose(seg.std[k + 6:], [2.5] * 3 + [0.03] * 3)
    with pytest.raises(ValueError, match="one per non-reference part"):
        segment_model(model, [np.linalg.inv(place), np.eye(4), place], reference=1, rotation_sd=[0.01] * 3,
                      translation_sd=1.0)


def test_vertebra_segment_follows_the_trend(two_bones):
    """Along a chain whose step grows, the trend places the held-out level's neighbours where they are; the
    chain's mean step (``trend_degree=None``) misplaces them."""
    model = two_bones[0]
    chain = _growing_chain(8)  # V1 is held out: its neighbours' steps lie at the chain's upper end
    shapes = [model.mean @ t[:3, :3].T + t[:3, 3] for t in chain]
    names = [f"V{j}" for j in range(8)]
    errors = []
    for degree in (1, None):
        seg = vertebra_segment(model, shapes, names, "V1", trend_degree=degree)
        middle = part_mesh(seg, seg.mean, "V1").vertices
        placed = [align(middle, part_mesh(seg, seg.mean, x).vertices).matrix for x in ("V0", "V2")]
        truth = [np.linalg.inv(chain[1]) @ chain[j] for j in (0, 2)]
        errors.append(max(np.linalg.norm(p[:3, 3] - t[:3, 3]) for p, t in zip(placed, truth)))
    assert errors[0] < 1e-6 < 2.0 < errors[1]


def test_objective_gradient_through_segment(two_bones):
    """d(X-ray loss + prior)/d(shape and placement coefficients, pose) of a two-part segment, end to end."""
    model, place, seg = two_bones
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=40, cols=40, pixel_size=9.0) for a in (0, 90)]
    probe = Objective(np.zeros((2, 40, 40)), cams, seg, ReconConfig(loss="xray", precision=64, soft_sigma_px=0.0))
    q = probe.shape_pose.initial(None, np.r_[0.8, -0.3, 0.2, -0.5, 0.4, 0.1, 1.0, -0.5, 0.5, 0.7, -0.4, 0.3])
    r = probe.render(q)
    target = 1.0 * (r[:, 0] - np.maximum(r[:, 1], 0)) + 0.3 * np.maximum(r[:, 1], 0)
    obj = Objective(target, cams, seg, ReconConfig(loss="xray", precision=64, soft_sigma_px=1.0, prior_weight=0.01))
    p = obj.shape_pose.initial(_rigid([2.0, -3.0, 1.0], [2.0, -1.0, 3.0]))
    obj.prepare(p)
    val, grads = obj(p)
    assert val > 0 and np.abs(grads["shape"][6:]).max() > 0  # the placement modes feel the image
    rng = np.random.default_rng(6)
    fd_check_params(obj, p, grads, rng)


def test_vertebra_segment_ignores_the_held_out_placement(two_bones):
    """A chain of six model instances, each placed by a fixed step and a small random rotation: the segment
    of the third has its neighbours above and below, placed by the mean step; it is built from the pairs
    that do not involve the third, so moving the third (its shape or its place) changes nothing."""
    model = two_bones[0]
    rng = np.random.default_rng(7)
    step = _rigid([5.0, 0.0, 0.0], [0.0, 0.0, 30.0])
    poses, shapes = [np.eye(4)], []
    for j in range(6):
        if j:
            poses.append(poses[-1] @ step @ _rigid(rng.normal(0, 1.0, 3), rng.normal(0, 0.5, 3)))
        v = model.instance(rng.normal(0, 1, 3))
        shapes.append(v @ poses[-1][:3, :3].T + poses[-1][:3, 3])
    names = [f"V{j}" for j in range(6)]
    seg = vertebra_segment(model, shapes, names, "V2")
    assert [p[0] for p in seg.info["parts"]] == ["V1", "V2", "V3"]
    below = part_mesh(seg, seg.mean, "V3").vertices
    placed = align(model.mean, below).matrix  # the mean step, up to the chain's noise
    assert rotation_angle_deg(placed, step) < 3.0
    moved = list(shapes)
    moved[2] = shapes[2] @ rotation_from_vector([0.3, 0.1, 0.0]).T + 9.0
    again = vertebra_segment(model, moved, names, "V2")
    assert np.array_equal(again.mean, seg.mean) and np.array_equal(again.std, seg.std)
    with pytest.raises(ValueError, match="neighbour on either side"):
        vertebra_segment(model, shapes, names, "V0")
    with pytest.raises(KeyError, match="V9"):
        vertebra_segment(model, shapes, names, "V9")
