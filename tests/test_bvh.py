"""The BVH: SAH build invariants, device refit against the host tree, and rendering after moves."""
import numpy as np
import pytest

from engine.geometry import carm
from engine.mesh import build_bvh, icosphere, make_mesh
from engine.mesh.projector import MeshProjector

pytestmark = pytest.mark.kernel  # a GPU kernel's test: CI runs it again with ENGINE_ARCH=vulkan


def _blobby(level=3, seed=0):
    s = icosphere(40.0, level)
    rng = np.random.default_rng(seed)
    v = s.vertices * (1 + 0.2 * np.sin(3 * s.vertices[:, :1] / 40.0)) + rng.normal(0, 0.5, s.vertices.shape)
    return v, s.faces


def _check_tree(bvh, v, f, leaf_size):
    tri = v[f]
    # every triangle in exactly one leaf, leaves small, each node's box bounds its subtree's triangles
    leaves = np.flatnonzero(bvh.count > 0)
    assert np.all(bvh.count[leaves] <= leaf_size)
    slots = np.concatenate([np.arange(bvh.start[n], bvh.start[n] + bvh.count[n]) for n in leaves])
    assert np.array_equal(np.sort(slots), np.arange(len(f)))
    assert np.array_equal(np.sort(bvh.order), np.arange(len(f)))
    size = bvh.subtree_sizes()
    assert size[0] == len(bvh.right) == 2 * len(leaves) - 1
    for n in range(len(bvh.right)):
        sub = [m for m in range(n, n + size[n]) if bvh.count[m] > 0]
        faces = bvh.order[np.concatenate([np.arange(bvh.start[m], bvh.start[m] + bvh.count[m]) for m in sub])]
        np.testing.assert_allclose(bvh.lo[n], tri[faces].min(axis=(0, 1)), atol=1e-9)
        np.testing.assert_allclose(bvh.hi[n], tri[faces].max(axis=(0, 1)), atol=1e-9)
        if bvh.count[n] == 0:  # the left child follows its parent, the right one starts after the left subtree
            assert bvh.right[n] == n + 1 + size[n + 1]


def test_sah_build_is_a_valid_tree_and_refit_matches_a_rebuild_of_the_boxes():
    v, f = _blobby(2)
    for leaf in (1, 4):
        bvh = build_bvh(v, f, leaf)
        _check_tree(bvh, v, f, leaf)
        moved = v + np.random.default_rng(1).normal(0, 3.0, v.shape)
        bvh.refit(moved, f)
        _check_tree(bvh, moved, f, leaf)


def test_device_refit_matches_host_refit_and_the_render_follows_the_moved_mesh():
    v, f = _blobby(3)
    mp = MeshProjector(make_mesh(v, f), "bone", precision=64, method="bvh")
    cam = carm(primary=20, secondary=10, sid=400, sdd=700, rows=48, cols=48, pixel_size=3.0)
    mp(cam)  # builds the tree over v
    moved = 1.3 * v + np.random.default_rng(2).normal(0, 2.0, v.shape) + [5.0, -3.0, 2.0]
    mp.set_vertices(moved)
    img = mp(cam)  # the tree is refitted when next used
    lo, hi = mp.tree.box_arrays()
    host = build_bvh(v, f, 4)
    host.refit(moved, f)
    pad = 1e-12 * np.abs(moved).max()
    np.testing.assert_allclose(lo, host.lo - pad, atol=1e-9)
    np.testing.assert_allclose(hi, host.hi + pad, atol=1e-9)
    # rendering the moved mesh through the refitted tree equals rendering a projector built on it afresh
    fresh = MeshProjector(make_mesh(moved, f), "bone", precision=64, method="bvh")
    np.testing.assert_allclose(img, fresh(cam), atol=1e-9)
    # and record=False gives the same image (to rounding: hits may be summed in another order), but no
    # gradient until the next recorded render
    np.testing.assert_allclose(mp(cam, record=False), mp(cam), rtol=1e-12, atol=1e-12)
    mp(cam, record=False)
    with pytest.raises(RuntimeError, match="record=True"):
        mp.snapshot()


@pytest.mark.parametrize("precision", [32, 64])
def test_rasteriser_equals_bvh_traversal_hits_and_lengths(precision):
    # several meshes and materials, three views in one launch, one mesh reaching behind the source's plane
    # (its far triangles have no bounded projection and take the every-pixel path)
    v, f = _blobby(3, seed=3)
    cams = [carm(primary=a, secondary=b, sid=400, sdd=700, rows=40, cols=44, pixel_size=4.0)
            for a, b in ((0, 0), (35, -10), (90, 20))]
    src = cams[0].source
    long_bar = make_mesh(*_bar(src))
    meshes = [make_mesh(v, f), make_mesh(0.4 * v + [10, 0, 5], f), long_bar]
    mats = ["bone", "titanium", "steel"]
    out = {}
    for method in ("raster", "bvh"):
        mp = MeshProjector(meshes, mats, precision=precision, method=method)
        out[method] = (mp(cams), mp.hit_counts())
    tol = 1e-9 if precision == 64 else 2e-3  # float32: additions in another order, lengths ~ 1e2 mm
    np.testing.assert_allclose(out["raster"][0], out["bvh"][0], atol=tol)
    np.testing.assert_array_equal(out["raster"][1], out["bvh"][1])  # the same hits on every ray
    img = out["raster"][0]
    assert img[0, 0].max() > 50 and np.count_nonzero(img[:, 1]) > 100
    assert np.count_nonzero(img[0, 2] > 5) > 20  # the bar is seen (its far end cap is behind the source)


def _bar(src):
    """A closed box from behind the source's plane to the middle of the field, off the central ray."""
    s = np.asarray(src, float)
    axis = -s / np.linalg.norm(s)  # towards the isocentre
    side = np.cross(axis, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    up = np.cross(side, axis)
    a, b = s - 50 * axis + 12 * side, 0.6 * s + 12 * side  # starts 50 mm behind the source
    corners = []
    for p in (a, b):
        for dx in (-5, 5):
            for dy in (-5, 5):
                corners.append(p + dx * side + dy * up)
    faces = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
                      [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]])
    return np.array(corners), faces


@pytest.mark.parametrize("method", ["raster", "bvh"])
def test_more_hits_than_recorded_is_an_error_not_a_wrong_gradient(method):
    # three nested spheres: a central ray crosses 6 triangles; recording 4 must fail loudly
    meshes = [icosphere(r, 2) for r in (10.0, 20.0, 30.0)]
    cam = carm(sid=300, sdd=500, rows=8, cols=8, pixel_size=2.0)
    img = MeshProjector(meshes, ["bone"] * 3, max_hits=6, method=method)(cam)
    assert img[0].max() > 110  # 2 x (10 + 20 + 30) mm through the centre, less the facets
    with pytest.raises(RuntimeError, match="max_hits=4"):
        MeshProjector(meshes, ["bone"] * 3, max_hits=4, method=method)(cam)
    # without recording there is nothing to overflow
    img4 = MeshProjector(meshes, ["bone"] * 3, max_hits=4, method=method)(cam, record=False)
    np.testing.assert_allclose(img4, img, rtol=1e-6)
