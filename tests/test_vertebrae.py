"""The real vertebra population of the chest CT: surfaces (not in correspondence) and their correspondence.

Skips where the chest CT is absent (see conftest.chest_ct_dir)."""
import time

import numpy as np
import pytest

from engine.mesh import Mesh, validate
from engine.ssm.correspondence import point_to_surface
from engine.ssm.vertebrae import VERTEBRAE, vertebra_meshes, vertebra_population

COMPLETE = VERTEBRAE[:13]  # T1..L1; the scan ends inside L2 and L3


@pytest.fixture(scope="module")
def meshes(chest_ct_dir):
    with pytest.warns(RuntimeWarning, match="L2, L3"):
        return vertebra_meshes(chest_ct_dir / "labels.nii.gz")


def _self_intersecting(mesh: Mesh) -> bool:
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.array(mesh.vertices)),
                                  o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
    return m.is_self_intersecting()


def test_vertebra_meshes_are_closed_plausible_surfaces(meshes):
    assert tuple(meshes) == COMPLETE
    vols = np.array([m.volume for m in meshes.values()]) / 1000  # cm^3: 17.6 (T1) .. 43.5 (L1) measured
    assert np.all((vols > 10) & (vols < 70)), vols
    assert vols[-1] > 2 * vols[0]  # vertebrae grow toward the lumbar spine
    for name, m in meshes.items():
        validate(m.vertices, m.faces, fix_orientation=False, name=name)  # watertight, manifold, outward
        assert 3000 < len(m.faces) < 10000
        assert not _self_intersecting(m), name
        euler = len(m.vertices) - len(m.faces) // 2  # V - E + F with E = 3F/2
        assert euler in (0, -2), (name, euler)  # a ring round the spinal canal (genus 1; T11: 2)


def test_vertebra_meshes_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "labels.nii.gz")):
        vertebra_meshes(tmp_path / "labels.nii.gz")
    (tmp_path / "labels.nii.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        vertebra_meshes(tmp_path / "labels.nii.gz")


def test_vertebra_meshes_unknown_and_cut_vertebrae(chest_ct_dir):
    with pytest.raises(KeyError, match="vertebrae_T13"):
        vertebra_meshes(chest_ct_dir / "labels.nii.gz", names=("T13",))
    cut = vertebra_meshes(chest_ct_dir / "labels.nii.gz", names=("L3",), complete_only=False)
    assert list(cut) == ["L3"] and cut["L3"].volume > 0


def _check_fit(faces, shapes, names, meshes, report):
    for name, v in zip(names, shapes):
        target = meshes[name]
        d = point_to_surface(v, target)  # corresponded vertices -> the vertebra's own surface
        back = point_to_surface(target.vertices, Mesh(vertices=v, faces=faces))  # and the surface is covered
        report.append(f"{name}: mean {d.mean():.3f} p95 {np.percentile(d, 95):.3f} max {d.max():.2f} mm; "
                      f"coverage p95 {np.percentile(back, 95):.3f} max {back.max():.2f} mm")
        assert d.mean() < 0.5 and np.percentile(d, 95) < 1.5, report[-1]
        assert np.percentile(back, 95) < 1.5, report[-1]


def test_vertebra_population_of_neighbours_in_correspondence(meshes):
    names = ("T6", "T7", "T8", "T9")
    sub = {n: meshes[n] for n in names}
    t0 = time.perf_counter()
    faces, shapes, order = vertebra_population(meshes=sub, template="T7")
    seconds = (time.perf_counter() - t0) / 3
    assert order == list(names) and np.array_equal(faces, meshes["T7"].faces)
    assert all(s.shape == meshes["T7"].vertices.shape for s in shapes)
    assert np.array_equal(shapes[1], meshes["T7"].vertices)  # the template keeps its own vertices
    report = []
    _check_fit(faces, shapes, order, sub, report)
    # correspondence: the template's transverse-process tips (left/right extremes) land on each one's tips
    for k, sign in ((0, 1), (0, -1)):
        tip = np.argmax(sign * meshes["T7"].vertices[:, k])
        for v in shapes:
            assert np.linalg.norm(v[tip] - v[np.argmax(sign * v[:, k])]) < 5.0
    print(f"{seconds:.1f} s per vertebra;", "; ".join(report))


@pytest.mark.slow
def test_vertebra_population_t1_to_l1(meshes):
    t0 = time.perf_counter()
    faces, shapes, order = vertebra_population(meshes=meshes)
    seconds = (time.perf_counter() - t0) / (len(order) - 1)
    assert order == list(COMPLETE) and len(shapes) == 13
    report = []
    _check_fit(faces, shapes, order, meshes, report)
    print(f"{seconds:.1f} s per vertebra;", "; ".join(report))
