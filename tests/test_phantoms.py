"""The LLP26 loader (safe unpickling, triangulation, anatomical frame) and the shipped pelvis phantom."""
import os
import pickle

import numpy as np
import pytest

from engine.phantoms import (load_model, mean_pelvis, pelvis_bodies, pelvis_faces, ras_from_model,
                             safe_load_pickle, signed_volume, subject_pelvis, to_ras)
from engine.phantoms.pelvis_ct import ASSET, HU


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_unpickler_refuses_code_and_accepts_arrays():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        safe_load_pickle(pickle.dumps(_Evil()))
    d = safe_load_pickle(pickle.dumps({"a": np.arange(3.0), "b": None}, protocol=4))
    np.testing.assert_array_equal(d["a"], [0, 1, 2])


def test_model_and_subjects():
    m = load_model()
    assert m["mean"].shape == (9675,) and m["modes"].shape == (9675, 26)
    np.testing.assert_allclose(m["projectedWeights"].var(axis=1, ddof=1), m["weights"], rtol=1e-6, atol=1e-6)
    widths = [np.ptp(to_ras(subject_pelvis(i))[:, 0]) for i in range(26)]
    assert 230 < min(widths) and max(widths) < 330  # README: 237..321 mm
    with pytest.raises(ValueError):
        subject_pelvis(26)


def test_triangulation_is_closed_outward_and_has_three_bodies():
    f = pelvis_faces()
    v = mean_pelvis()
    assert f.shape == (3888, 3) and v.shape == (1946, 3)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # each directed edge once: consistent winding
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert np.all(counts == 2)  # watertight
    assert signed_volume(v, f) > 0  # outward
    assert np.bincount(pelvis_bodies()).size == 3


def test_anatomical_frame():
    t = ras_from_model()
    np.testing.assert_allclose(t[:3, :3] @ t[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(t[:3, :3]) == pytest.approx(1.0)
    v = to_ras(mean_pelvis())
    body = pelvis_bodies()
    cents = np.array([v[body == b].mean(0) for b in range(3)])
    sacrum = np.argmin(np.abs(cents[:, 0]))
    hips = [b for b in range(3) if b != sacrum]
    assert cents[hips, 0].min() < -40 and cents[hips, 0].max() > 40  # hip bones left and right
    assert cents[sacrum, 1] < cents[hips, 1].min()  # sacrum posterior to the hip bones' centroids
    # the most anterior nodes (pubis / iliac spines) lie in front of the sacrum; the iliac crests are above the
    # ischial tuberosities
    assert v[:, 1].max() > v[body == sacrum][:, 1].max() + 40
    # the highest node is on an iliac crest and the lowest on an ischium: both hip bones, not the sacrum
    assert body[v[:, 2].argmax()] != sacrum and body[v[:, 2].argmin()] != sacrum
    assert v[:, 2].max() - v[:, 2].min() > 150


def test_shipped_phantom_contents():
    from engine.volume import load_ct

    if not ASSET.is_file():
        pytest.fail(f"{ASSET} is missing: run python -m engine.phantoms.pelvis_ct")
    import nibabel as nib

    assert nib.load(str(ASSET)).get_data_dtype() == np.int16
    ct = load_ct(ASSET)
    hu = ct.hu
    idx = np.argwhere(hu > 700)
    centroid = idx.mean(0) @ ct.world_from_index[:3, :3].T + ct.world_from_index[:3, 3]
    assert np.linalg.norm(centroid) < 25  # mm: the pelvis is centred
    for name, lo, hi in (("air", -1001, -990), ("fat", -101, -99), ("soft", 39, 41), ("gas", -951, -949)):
        assert np.sum((hu >= lo) & (hu <= hi)) > 1000, name
    assert hu.max() == HU["cortical"] and np.sum(np.abs(hu - HU["cancellous"]) < 1) > 10000
    gas = np.argwhere(hu < -900)
    gas = gas @ ct.world_from_index[:3, :3].T + ct.world_from_index[:3, 3]
    inside = gas[(np.abs(gas[:, 0]) < 100) & (np.abs(gas[:, 2]) < 120)]
    assert len(inside) > 500  # gas pockets inside the body


@pytest.mark.slow
def test_phantom_regenerates_exactly():
    from engine.phantoms.pelvis_ct import make_pelvis_phantom
    from engine.volume import load_ct

    hu, affine = make_pelvis_phantom()
    ct = load_ct(ASSET)
    # open3d's float32 distances may round a voxel differently on another CPU: allow a handful
    diff = np.abs(hu.astype(np.int32) - ct.hu.astype(np.int32))
    assert np.mean(diff > 0) < 1e-4 and diff.max() <= 50
    np.testing.assert_allclose(affine, ct.world_from_index, atol=1e-6)
