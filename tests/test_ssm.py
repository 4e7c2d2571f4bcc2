"""Shape models: Procrustes, PCA, instance/project, files, subdivision, quality, the LLP26 pelvis model."""
import numpy as np
import pytest

from engine.mesh import icosphere
from engine.geometry.transforms import rotation_from_vector
from engine.ssm import (ShapeModel, align, build_model, build_pelvis_model, evaluate, generalized_procrustes,
                        llp26_population, load_pelvis_model)
from engine.ssm.pelvis import ASSET


def _blob():
    """An asymmetric closed shape (a bumpy ellipsoid), ~642 vertices, mm."""
    s = icosphere(20.0, 3)
    v = s.vertices * [1.6, 1.0, 0.7]
    v = v + 4.0 * np.exp(-((v - [25, 10, 5]) ** 2).sum(1) / 200.0)[:, None] * [1, 0, 0]
    return v, s.faces


def _population(n=12, seed=1):
    """Shapes = base + a * mode1 + b * mode2 (known std 3 and 1 mm per unit vector norm) in random poses."""
    rng = np.random.default_rng(seed)
    v, f = _blob()
    m1 = v * [1, 0, 0]  # stretch along x
    m2 = np.zeros_like(v)
    m2[:, 2] = np.sin(v[:, 0] / 10.0)  # a wave in z
    # remove the infinitesimal rigid motions of the base shape from the modes (Procrustes would remove them)
    c = v - v.mean(0)
    rigid = [np.tile(e, (len(v), 1)) for e in np.eye(3)] + [np.cross(e, c) for e in np.eye(3)]
    q, _ = np.linalg.qr(np.stack([r.reshape(-1) for r in rigid], 1))
    m1, m2 = ((m - (q @ (q.T @ m.reshape(-1))).reshape(m.shape)) for m in (m1, m2))
    m1 /= np.linalg.norm(m1)
    m2 -= m1 * (m1 * m2).sum()
    m2 /= np.linalg.norm(m2)
    coeffs = rng.standard_normal((n, 2)) * [30.0, 10.0]
    shapes = np.stack([v + a * m1 + b * m2 for a, b in coeffs])
    posed = np.stack([x @ rotation_from_vector(rng.normal(0, 0.5, 3)).T + rng.normal(0, 30, 3) for x in shapes])
    return posed, shapes, f, (m1, m2)


def test_align_recovers_similarity():
    v, _ = _blob()
    rng = np.random.default_rng(0)
    r = rotation_from_vector([0.3, -1.2, 2.0])
    target = 1.3 * v @ r.T + [5.0, -7.0, 11.0]
    t = align(v, target + rng.normal(0, 1e-3, v.shape), scale=True)
    assert np.allclose(t.rotation, r, atol=1e-4) and abs(t.scale - 1.3) < 1e-4
    assert np.abs(t.apply(v) - target).max() < 0.01
    assert np.abs(t.inverse().apply(target) - v).max() < 0.01
    rigid = align(v, v @ r.T + 3.0)
    assert rigid.scale == 1.0 and np.allclose(rigid.rotation, r, atol=1e-9)
    with pytest.raises(ValueError, match="equal shape"):
        align(v, v[:-1])


def test_generalized_procrustes_removes_pose():
    posed, shapes, _, _ = _population()
    aligned, mean, transforms = generalized_procrustes(posed)
    # the result does not depend on the poses: same as for the unposed shapes, up to one common rigid motion
    ref, _, _ = generalized_procrustes(shapes)
    common = align(ref.reshape(-1, 3), aligned.reshape(-1, 3))
    assert np.abs(common.apply(ref.reshape(-1, 3)) - aligned.reshape(-1, 3)).max() < 1e-5
    # converged: the mean is the mean of the aligned shapes, each of which is optimally aligned to it
    assert np.allclose(aligned.mean(0), mean, atol=1e-5)
    for x in aligned:
        t = align(x, mean)
        assert np.allclose(t.rotation, np.eye(3), atol=1e-6) and np.allclose(t.translation, 0, atol=1e-5)
    assert np.allclose(transforms[3].apply(posed[3]), aligned[3])
    scaled, smean, st = generalized_procrustes(posed * np.linspace(0.8, 1.2, len(posed))[:, None, None], scale=True)
    size = np.sqrt(((scaled - scaled.mean(1, keepdims=True)) ** 2).sum((1, 2)))
    assert size.std() / size.mean() < 0.02  # the 0.8-1.2 size spread is removed


def test_build_model_finds_the_population_modes():
    posed, _, faces, (m1, m2) = _population(n=40)
    model = build_model(posed, faces, variance=0.999)
    assert model.n_modes == 2
    # the model's modes span the true modes (up to the common rotation of the aligned frame)
    basis = model.modes.reshape(2, -1)
    for m in (m1, m2):
        mm = align(m1 * 0 + _blob()[0], model.mean).rotation  # frame of the aligned population
        mr = (m @ mm.T).reshape(-1)
        assert np.linalg.norm(basis @ mr) > 0.99
    assert model.std[0] > model.std[1] > 0
    assert model.std[0] == pytest.approx(30.0, rel=0.35) and model.std[1] == pytest.approx(10.0, rel=0.35)


def test_instance_project_roundtrip_and_sampling():
    posed, _, faces, _ = _population(n=20)
    model = build_model(posed, faces, n_modes=2)
    c = np.array([1.5, -0.7])
    v = model.instance(c)
    moved = v @ rotation_from_vector([0.2, 0.1, -0.4]).T + [10, 0, 3]
    got, t = model.project(moved)
    assert np.allclose(got, c, atol=1e-3)
    assert np.abs(t.apply(moved) - v).max() < 1e-3
    shapes, coeffs = model.sample(5, seed=3)
    assert shapes.shape == (5, *model.mean.shape) and coeffs.shape == (5, 2)
    assert np.allclose(shapes[2], model.instance(coeffs[2]))
    assert np.array_equal(model.sample(5, seed=3)[0], shapes)
    assert model.mesh(c).vertices.shape == v.shape
    with pytest.raises(ValueError, match="coefficients"):
        model.instance([1, 2, 3])
    with pytest.raises(ValueError, match="correspondence"):
        model.project(v[:-1])


def test_save_load_and_errors(tmp_path):
    posed, _, faces, _ = _population()
    model = build_model(posed, faces, n_modes=2, info={"name": "blob"})
    p = model.save(tmp_path / "m.npz")
    back = ShapeModel.load(p)
    assert back.info["name"] == "blob" and back.n_modes == 2
    assert np.abs(back.instance([1, 1]) - model.instance([1, 1])).max() < 1e-3  # float32 storage
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a shape model"):
        ShapeModel.load(tmp_path / "x.npz")
    np.savez(tmp_path / "v.npz", version=99, mean=model.mean, faces=faces, modes=model.modes, std=model.std)
    with pytest.raises(ValueError, match="version 99"):
        ShapeModel.load(tmp_path / "v.npz")
    with pytest.raises(FileNotFoundError):
        ShapeModel.load(tmp_path / "none.npz")


def test_subdivided_model_is_the_subdivided_instance():
    from engine.mesh.subdivide import subdivide

    posed, _, faces, _ = _population()
    model = build_model(posed, faces, n_modes=2)
    fine = model.subdivided(1)
    c = [0.8, -1.1]
    assert np.allclose(fine.instance(c), subdivide(model.instance(c), faces, 1)[0])
    got, _ = fine.project(fine.instance(c))
    assert np.allclose(got, c, atol=1e-6)


def test_quality_of_a_two_mode_population():
    posed, _, faces, _ = _population(n=12)
    r = evaluate(posed, faces, ks=[1, 2, 3], n_samples=50, surface_points=1000)
    assert np.all(np.diff(r.compactness) >= 0) and r.compactness[1] > 0.999
    # one mode cannot fit the second; two fit everything (up to the sampled-surface accuracy)
    assert r.generalisation_mean[0] > 5 * r.generalisation_mean[1]
    assert r.generalisation_mean[1] < 0.05
    assert np.all(r.specificity > 0)
    assert "modes" in r.table()


def test_llp26_model():
    shapes, faces = llp26_population()
    assert shapes.shape == (26, 1946, 3)
    model = build_pelvis_model()
    assert model.n_modes == 25
    c, t = model.project(shapes[7])
    assert np.abs(model.instance(c) - t.apply(shapes[7])).max() < 1e-6  # a training subject is in the model
    held = build_pelvis_model(exclude=[7])
    c, t = held.project(shapes[7])
    err = np.linalg.norm(held.instance(c) - t.apply(shapes[7]), axis=1)
    assert 0.5 < err.mean() < 4.0  # an unseen pelvis is fitted, not reproduced
    shipped = load_pelvis_model()
    assert np.abs(shipped.mean - model.mean).max() < 1e-3, f"{ASSET} is stale: python -m engine.ssm.pelvis"
    assert np.allclose(shipped.std, model.std)
    with pytest.raises(ValueError, match="0..25"):
        build_pelvis_model(exclude=[26])
