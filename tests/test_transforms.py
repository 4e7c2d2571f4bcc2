"""engine.geometry.transforms: rotations, rigid poses and their derivatives, against round trips and central
finite differences (float64, random directions)."""
import numpy as np
import pytest

from engine.geometry.transforms import (axis_rotation, left_jacobian, mean_rotation, perturb, pose_gradient,
                                        pose_matrix, pose_matrix_gradient, pose_parameter_gradient, rotation_angle,
                                        rotation_from_vector, rotation_jacobian, skew, vector_from_rotation)

H = 1e-6  # central-difference step (rad, mm): truncation ~H^2, rounding ~1e-16 / H


def _random_rotvecs(rng, n=6):
    """Rotation vectors of angles spread over (0, pi), random axes, plus a tiny one."""
    axes = rng.standard_normal((n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return np.vstack([axes * rng.uniform(0.05, 3.0, (n, 1)), [[1e-9, -2e-9, 3e-9]]])


def test_skew_is_the_cross_product():
    rng = np.random.default_rng(0)
    w, a = rng.standard_normal((2, 3))
    np.testing.assert_allclose(skew(w) @ a, np.cross(w, a), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(skew(w), -skew(w).T)


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_axis_rotation_is_the_rotation_vector_along_that_axis(axis):
    e = np.eye(3)["xyz".index(axis)]
    np.testing.assert_allclose(axis_rotation(axis, 0.7), rotation_from_vector(0.7 * e), atol=1e-15)
    with pytest.raises(ValueError, match="axis"):
        axis_rotation("w", 0.1)


def test_rotation_vector_round_trip_and_angle():
    rng = np.random.default_rng(1)
    for v in _random_rotvecs(rng):
        r = rotation_from_vector(v)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-14)
        np.testing.assert_allclose(r @ v, v, atol=1e-14)  # the axis is fixed
        np.testing.assert_allclose(vector_from_rotation(r), v, rtol=1e-9, atol=1e-15)
        assert rotation_angle(r) == pytest.approx(np.linalg.norm(v), abs=2e-8)  # arccos: ~sqrt(eps) near 0
    # near pi the vector's sign is ambiguous but the rotation is not
    v = (np.pi - 1e-9) * np.array([0.0, 0.6, 0.8])
    np.testing.assert_allclose(rotation_from_vector(vector_from_rotation(rotation_from_vector(v))),
                               rotation_from_vector(v), atol=1e-12)
    np.testing.assert_array_equal(rotation_from_vector(np.zeros(3)), np.eye(3))


def test_rotation_jacobian_matches_central_differences():
    rng = np.random.default_rng(2)
    for v in list(_random_rotvecs(rng)) + [np.zeros(3)]:
        jac = rotation_jacobian(v)
        for _ in range(3):
            d = rng.standard_normal(3)
            fd = (rotation_from_vector(v + H * d) - rotation_from_vector(v - H * d)) / (2 * H)
            np.testing.assert_allclose(np.tensordot(d, jac, axes=1), fd, atol=1e-8)


def test_left_jacobian_maps_rotation_vector_steps_to_world_frame_rotations():
    """R(v + h d) R(v)^T = exp([h J_l(v) d]x) to first order."""
    rng = np.random.default_rng(3)
    for v in list(_random_rotvecs(rng)) + [np.full(3, 3e-7)]:  # the last takes the series branch
        r0t = rotation_from_vector(v).T
        for _ in range(3):
            d = rng.standard_normal(3)
            fd = (vector_from_rotation(rotation_from_vector(v + H * d) @ r0t)
                  - vector_from_rotation(rotation_from_vector(v - H * d) @ r0t)) / (2 * H)
            np.testing.assert_allclose(left_jacobian(v) @ d, fd, atol=1e-8)


def test_pose_matrix_and_perturb():
    rng = np.random.default_rng(4)
    c = np.array([10.0, -5.0, 3.0])
    p = np.r_[0.3, -0.4, 0.2, 5.0, 6.0, -7.0]
    m = pose_matrix(p, center=c)
    np.testing.assert_allclose(m[:3, :3], rotation_from_vector(p[:3]), atol=0)
    np.testing.assert_allclose(m[:3, :3] @ c + m[:3, 3], c + p[3:], atol=1e-12)  # the centre moves by tau
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])
    np.testing.assert_array_equal(pose_matrix(np.zeros(6), center=c), np.eye(4))
    base = pose_matrix(rng.standard_normal(6))
    np.testing.assert_allclose(perturb(base, p[:3], p[3:], center=c), m @ base, atol=0)
    with pytest.raises(ValueError, match="6 numbers"):
        pose_matrix(np.zeros(5))


def test_pose_gradient_matches_central_differences():
    """d/d(delta, tau) at 0 of a loss of moved points, sum w . x'."""
    rng = np.random.default_rng(5)
    c = rng.normal(0, 10, 3)
    x = rng.normal(0, 20, (25, 3))
    w = rng.standard_normal((25, 3))

    def loss(q):
        m = pose_matrix(q, center=c)
        return float((w * (x @ m[:3, :3].T + m[:3, 3])).sum())

    g = np.concatenate(pose_gradient(x, w, center=c))
    for _ in range(3):
        d = rng.standard_normal(6)
        assert g @ d == pytest.approx((loss(H * d) - loss(-H * d)) / (2 * H), rel=1e-7, abs=1e-7)


def _right_gradient(loss_of_matrix, m, c):
    """(6,) gradient of ``loss(M N(e))`` in the right move ``e`` at 0 (central differences)."""
    return np.array([(loss_of_matrix(m @ pose_matrix(H * e, center=c))
                      - loss_of_matrix(m @ pose_matrix(-H * e, center=c))) / (2 * H) for e in np.eye(6)])


def test_pose_parameter_gradient_composes_right_moves():
    """A loss of the composite move M(p) N(e): its gradient in e at 0, mapped by pose_parameter_gradient,
    equals the central difference of the loss in p along random directions."""
    rng = np.random.default_rng(6)
    c = np.array([3.0, -2.0, 5.0])
    pts = rng.normal(0, 20, (30, 3))
    w = rng.normal(0, 1, (30, 3))

    def loss_of_matrix(m):
        return float((w * (pts @ m[:3, :3].T + m[:3, 3])).sum())

    p = np.r_[0.3, -0.2, 0.5, 4.0, -1.0, 2.0]
    g = pose_parameter_gradient(p, _right_gradient(loss_of_matrix, pose_matrix(p, center=c), c))
    for _ in range(3):
        d = rng.standard_normal(6)
        fd = (loss_of_matrix(pose_matrix(p + H * d, center=c)) - loss_of_matrix(pose_matrix(p - H * d, center=c)))
        assert g @ d == pytest.approx(fd / (2 * H), rel=1e-6, abs=1e-6)


def test_pose_matrix_gradient_agrees_with_the_loss_on_rigid_tangents():
    """For a loss linear in M, sum(W * M), the matrix gradient has the loss's derivative along every rigid
    tangent dM = d/dh M N(h e)."""
    rng = np.random.default_rng(7)
    c = rng.normal(0, 5, 3)
    wm = rng.standard_normal((4, 4))
    m = pose_matrix(rng.standard_normal(6), center=rng.normal(0, 5, 3))
    g = pose_matrix_gradient(m, _right_gradient(lambda a: float((wm * a).sum()), m, c), c)
    for _ in range(3):
        e = rng.standard_normal(6)
        dm = (m @ pose_matrix(H * e, center=c) - m @ pose_matrix(-H * e, center=c)) / (2 * H)
        assert float((g * dm).sum()) == pytest.approx(float((wm * dm).sum()), rel=1e-6, abs=1e-6)


def test_mean_rotation():
    rng = np.random.default_rng(8)
    r0 = rotation_from_vector([0.4, -1.0, 0.3])
    w = 0.2 * rng.standard_normal((4, 3))
    spread = [r0 @ rotation_from_vector(s * x) for x in w for s in (1, -1)]  # symmetric about r0
    np.testing.assert_allclose(mean_rotation(spread), r0, atol=1e-12)  # r0 times a symmetric matrix
    np.testing.assert_allclose(mean_rotation([r0]), r0, atol=1e-14)
