"""Reconstruction: gradients of every piece against central finite differences (float64), and a small
self-consistency run (targets from the mesh renderer, known shape and pose, recovered)."""
import numpy as np
import pytest

import engine
from engine.geometry.transforms import rotation_from_vector
from engine.recon import (MSE, NCC, BandpassNCC, GradientNCC, Objective, ReconConfig, ShapePose, Silhouette, line_integral,
                          reconstruct)
from engine.ssm import load_pelvis_model
from fd import fd_check, fd_check_params
from research.experiments import rotation_angle_deg


@pytest.mark.parametrize("loss", [MSE(), NCC(), NCC(weights=np.linspace(0, 1, 24)[None, :] * np.ones((20, 1))),
                                  GradientNCC(), BandpassNCC(sigma_px=4.0), Silhouette(tau=1.5)])
def test_loss_gradients(loss):
    rng = np.random.default_rng(1)
    a = np.abs(rng.standard_normal((2, 20, 24))) * 3
    b = (rng.random((2, 20, 24)) > 0.5).astype(float) if isinstance(loss, Silhouette) else \
        a + rng.standard_normal(a.shape)
    val, g = loss(a, b)
    fd_check(lambda x: loss(x, b)[0], g, a, rng)
    if not isinstance(loss, Silhouette):
        assert loss(b, b)[0] == pytest.approx(0.0, abs=1e-12)  # perfect match is the minimum


def test_ncc_is_gain_and_offset_invariant():
    rng = np.random.default_rng(2)
    a = rng.random((16, 16))
    assert NCC()(a, 3.0 * a + 7.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert GradientNCC()(a, 2.0 * a + 1.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert BandpassNCC(3.0)(a, 2.0 * a + 1.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert NCC()(a, -a)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        line_integral(np.zeros((4, 4)))
    assert np.allclose(line_integral(np.exp(-a) * 5.0, i0=5.0), a)


def test_shape_pose_adjoint():
    model = load_pelvis_model()
    sp = ShapePose(model)
    rng = np.random.default_rng(3)
    t = np.eye(4)
    t[:3, :3] = 1.1 * rotation_from_vector([0.3, -0.2, 0.5])
    t[:3, 3] = [5, 6, -7]
    p = sp.initial(t, rng.standard_normal(5))
    assert np.allclose(sp.world_from_model(p), t)
    assert np.allclose(sp.vertices(p), model.instance(p.shape) @ t[:3, :3].T + t[:3, 3])
    w = rng.standard_normal(model.mean.shape)  # L = <w, x>
    grads = sp.backward(p, w)
    for group in ("shape", "rotation", "translation", "scale", "free"):
        def f(v, g=group):
            q = p.copy()
            setattr(q, g, v)
            return float((w * sp.vertices(q)).sum())
        fd_check(f, getattr(grads, group), getattr(p, group), rng, h=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def small_problem():
    """The coarse LLP26 pelvis model, 2 views of 48 x 48 pixels of 6 mm, a target from a known instance."""
    model = load_pelvis_model()
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=48, cols=48, pixel_size=7.0) for a in (0, 90)]
    sp = ShapePose(model)
    truth = sp.initial(None, [1.0, -0.5, 0.3])
    obj = Objective(np.zeros((2, 48, 48)), cams, model, ReconConfig(precision=64, soft_sigma_px=0.0))
    target = obj.render(truth)
    return model, cams, target


@pytest.mark.parametrize("loss", ["ncc", "gncc", "bncc", "mse"])
def test_objective_gradient_end_to_end(small_problem, loss):
    """d(loss + prior)/d(coefficients, pose, scale, free vertices) through the renderer, against central FD."""
    model, cams, target = small_problem
    obj = Objective(target, cams, model, ReconConfig(loss=loss, precision=64, soft_sigma_px=1.0, prior_weight=0.01))
    sp = obj.shape_pose
    t = np.eye(4)
    t[:3, :3] = rotation_from_vector(np.deg2rad([3.0, -4.0, 2.0]))
    t[:3, 3] = [3.0, -2.0, 4.0]
    p = sp.initial(t, [0.5, 0.2, -0.4, 0.1])
    rng = np.random.default_rng(4)
    p.free = rng.normal(0, 0.3, p.free.shape)
    val, grads = obj(p, free=True)
    assert val > 0
    steps = (("shape", 1e-6), ("rotation", 1e-7), ("translation", 1e-6), ("scale", 1e-7), ("free", 1e-5))
    fd_check_params(obj, p, grads, rng, steps, free=True)


@pytest.mark.slow
def test_self_consistency_small(small_problem):
    """Tier 1 in small: a known instance in a known pose is recovered from 2 views, 10 deg / 20 mm off."""
    from engine import metrics

    model = load_pelvis_model().subdivided(1)
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=128, cols=128, pixel_size=4.0) for a in (0, 90)]
    c_true = np.zeros(model.n_modes)
    c_true[:5] = [1.2, -0.8, 0.5, 0.9, -0.4]
    truth_pose = np.eye(4)
    truth_pose[:3, 3] = [2.0, -3.0, 1.0]
    truth = model.mesh(c_true, truth_pose)
    target = engine.mesh.MeshProjector(truth, "bone", max_hits=64)(cams)[:, 0]
    init = np.eye(4)
    init[:3, :3] = rotation_from_vector(np.deg2rad([6.0, -5.0, 5.0]))  # ~9.3 degrees
    init[:3, 3] = truth_pose[:3, 3] + [12.0, -10.0, 12.0]  # ~20 mm
    res = reconstruct(target, cams, model, init, ReconConfig(n_modes=10))
    d = res.world_from_model @ np.linalg.inv(truth_pose)
    angle = rotation_angle_deg(res.world_from_model, truth_pose)
    m = metrics.surface_metrics(res.mesh, truth, n=4000)
    assert angle < 1.0 and np.linalg.norm(d[:3, 3]) < 1.0, (angle, d[:3, 3])
    assert m["assd"] < 0.5, m
    assert np.abs(res.coeffs[:5] - c_true[:5]).max() < 0.3
    assert res.loss_history[-1] < res.loss_history[0]


def test_one_view_keeps_depth(small_problem):
    """From one view the model's distance along the principal ray stays at its initial value."""
    from engine.recon import Stage

    model, cams, target = small_problem
    init = np.eye(4)
    init[:3, 3] = [4.0, 6.0, -3.0]
    sched = [Stage(1, 15, ("shape", "rotation", "translation"), 2.0)]
    c0 = model.mean.mean(0)
    for fix, same in ((None, True), (False, False)):
        res = reconstruct(target[:1], cams[:1], model, init, ReconConfig(schedule=sched, patience=100, fix_depth=fix))
        moved = res.world_from_model[:3, :3] @ c0 + res.world_from_model[:3, 3] - (c0 + init[:3, 3])
        along = abs(float(cams[0].principal_axis @ moved))
        assert (along < 1e-9) == same, along
        assert np.linalg.norm(moved) > 0.5  # it did move, across the ray


def test_recon_config_is_frozen_validated_and_names_the_field():
    import dataclasses

    from engine.recon import DEFAULT_LR, Stage

    cfg = ReconConfig(lr={"shape": 0.2})
    assert cfg.learning_rates == {**DEFAULT_LR, "shape": 0.2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.prior_weight = 1.0
    assert cfg.replace(prior_weight=0.5).prior_weight == 0.5 and cfg.prior_weight == 1e-3
    assert hash(cfg) == hash(ReconConfig(lr={"shape": 0.2}))
    for kw, match in [({"loss": "huber"}, "unknown loss 'huber'"), ({"loss": 3}, "ReconConfig.loss"),
                      ({"lr": {"shapes": 1.0}}, "unknown groups"), ({"lr": {"shape": -1.0}}, "positive"),
                      ({"prior_weight": float("nan")}, "prior_weight"), ({"patience": 0}, "patience"),
                      ({"n_modes": 0}, "n_modes"), ({"search_mm": (16.0, 0.0)}, "search_mm"),
                      ({"precision": 16}, "precision"), ({"schedule": [1, 2]}, "schedule")]:
        with pytest.raises((ValueError, TypeError), match=match):
            ReconConfig(**kw)
    with pytest.raises(ValueError, match="Stage.groups"):
        Stage(1, 10, ("shape", "pose"))
    xr = ReconConfig.xray(128)
    assert xr.loss == "xray" and xr.prior_weight == 1e-2 and xr.search_mm == (16.0, 8.0)
    assert xr.stages(128) == xr.schedule and ReconConfig().stages(256)[0].factor == 4


def test_reconstruct_takes_a_config_and_no_loose_settings(small_problem):
    import inspect

    params = inspect.signature(reconstruct).parameters
    assert len([p for p in params if p != "config"]) <= 6
    model, cams, target = small_problem
    with pytest.raises(TypeError, match="ReconConfig"):
        reconstruct(target, cams, model, None, {"loss": "mse"})


def test_a_function_is_a_loss_and_a_loss_object_in_a_config_is_not_mutated(small_problem):
    """get_loss adopts a function (value, gradient) and a Loss; the objective works on a copy of a Loss object
    (its region of interest is the objective's), and forward/vjp agree with __call__."""
    from engine.recon import FunctionLoss, Loss, get_loss

    model, cams, target = small_problem

    def half_mse(images, tgt):
        d = images - tgt
        return 0.5 * float((d ** 2).sum()), d

    loss = get_loss(half_mse)
    assert isinstance(loss, FunctionLoss) and loss.name == "half_mse" and isinstance(loss, Loss)
    with pytest.raises(TypeError, match="a loss is a name"):
        get_loss(3)
    obj = Objective(target, cams, model, ReconConfig(loss=half_mse, precision=64, soft_sigma_px=0.0))
    p = obj.shape_pose.initial(None, [0.3])
    val, grads = obj(p)
    assert val == pytest.approx(0.5 * float(((obj.render(p) - target) ** 2).sum()) + obj._prior(p))
    rng = np.random.default_rng(9)
    fd_check_params(obj, p, grads, rng, (("shape", 1e-6), ("translation", 1e-6)))
    ncc = NCC()
    v, state = ncc.forward(target, target[::-1])
    assert v == ncc(target, target[::-1])[0] and np.array_equal(ncc.vjp(state, 2.0), 2 * ncc(target, target[::-1])[1])


def test_a_reconstruction_repeats_bit_for_bit_on_the_cpu(small_problem):
    """Same inputs, same result: the loss history and the pose of two runs are identical (the mesh adjoint adds
    in a fixed order on the CPU)."""
    from engine import backend
    from engine.recon import Stage

    if backend.current().arch != "cpu":
        pytest.skip("bit-for-bit repeats are the CPU backend's (GPU float atomics add in any order)")
    model, cams, target = small_problem
    init = np.eye(4)
    init[:3, 3] = [3.0, -2.0, 2.0]
    cfg = ReconConfig(schedule=(Stage(1, 25, ("shape", "rotation", "translation")),), n_modes=5)
    a, b = (reconstruct(target, cams, model, init, cfg) for _ in range(2))
    assert a.iterations == b.iterations > 5
    assert np.array_equal(a.loss_history, b.loss_history) and np.array_equal(a.world_from_model, b.world_from_model)
