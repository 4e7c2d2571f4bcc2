"""C-arm views of the shipped pelvis phantom look the way a radiologist expects."""
import numpy as np
import pytest

from engine.geometry import carm
from engine.phantoms import mean_pelvis, pelvis_bodies, to_ras
from engine.phantoms.pelvis_ct import ASSET, pelvis_mesh
from engine.volume import Volume, VolumeProjector, load_ct


@pytest.fixture(scope="module")
def phantom():
    ct = load_ct(ASSET)
    return ct, VolumeProjector(Volume.from_ct(ct))


def _extent(mask, axis, pixel_size, mag):
    idx = np.flatnonzero(mask.any(axis=axis))
    return (idx.max() - idx.min() + 1) * pixel_size / mag


def test_ap_and_lateral_bone_extents(phantom):
    ct, proj = phantom
    # a long throw keeps the magnification nearly the same across the pelvis's depth
    ap, lat = (carm(primary=p, sid=3000, sdd=3450, rows=200, cols=200, pixel_size=2.5, isocenter=(0.0, 0, 0))
               for p in (0, 90))
    mag = 3450 / 3000
    bone_ap, bone_lat = proj([ap, lat])[:, 2]
    v = pelvis_mesh()[0]  # the surface that was voxelised
    # AP: the bone spans the pelvis width across the columns and its height down the rows
    width = _extent(bone_ap > 0.05, 0, 2.5, mag)
    height = _extent(bone_ap > 0.05, 1, 2.5, mag)
    assert width == pytest.approx(np.ptp(v[:, 0]), rel=0.08)
    assert height == pytest.approx(np.ptp(v[:, 2]), rel=0.08)
    # lateral: the columns span the antero-posterior depth instead, smaller than the width
    depth = _extent(bone_lat > 0.05, 0, 2.5, mag)
    assert depth == pytest.approx(np.ptp(v[:, 1]), rel=0.1) and depth < 0.8 * width


def test_lateral_shows_anterior_on_the_left_and_ap_is_head_up(phantom):
    ct, proj = phantom
    v = to_ras(mean_pelvis())
    body = pelvis_bodies()
    sacrum = np.argmin([abs(v[body == b, 0].mean()) for b in range(3)])
    lat = carm(primary=90, sid=750, sdd=1150, rows=160, cols=160, pixel_size=3.0)
    bone = proj(lat)[0, 2]
    cols = bone.sum(0)
    # the sacrum is posterior: in a left lateral view it lies right of the pubis (anterior, image left)
    u_sacrum = lat.project_points(v[body == sacrum].mean(0))[0]
    u_pubis = lat.project_points(v[np.argmax(v[:, 1])])[0]
    assert u_pubis < u_sacrum
    assert cols[: int(u_pubis) - 8].sum() < 0.05 * cols.sum()  # almost no bone in front of the pubis
    ap = carm(primary=0, sid=750, sdd=1150, rows=160, cols=160, pixel_size=3.0)
    rows = proj(ap)[0, 2].sum(1)
    crest_row = ap.project_points(v[np.argmax(v[:, 2])])[1]
    ischium_row = ap.project_points(v[np.argmin(v[:, 2])])[1]
    assert crest_row < ischium_row  # head towards row 0
    assert rows[: int(crest_row) - 5].sum() < 0.02 * rows.sum()  # nothing above the iliac crests
