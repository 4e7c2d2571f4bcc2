"""The BVH: SAH build invariants, device refit against the host tree, and rendering after moves."""
import numpy as np
import pytest

from engine.geometry import carm
from engine.mesh import build_bvh, icosphere, make_mesh
from engine.mesh.projector import MeshProjector


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
    mp = MeshProjector(make_mesh(v, f), "bone", precision=64)
    moved = 1.3 * v + np.random.default_rng(2).normal(0, 2.0, v.shape) + [5.0, -3.0, 2.0]
    mp.set_vertices(moved)
    lo, hi = mp._tree.box_arrays()
    host = build_bvh(v, f, 4)
    host.refit(moved, f)
    pad = 1e-12 * np.abs(moved).max()
    np.testing.assert_allclose(lo, host.lo - pad, atol=1e-9)
    np.testing.assert_allclose(hi, host.hi + pad, atol=1e-9)
    # rendering the moved mesh through the refitted tree equals rendering a projector built on it afresh
    cam = carm(primary=20, secondary=10, sid=400, sdd=700, rows=48, cols=48, pixel_size=3.0)
    np.testing.assert_allclose(mp(cam), MeshProjector(make_mesh(moved, f), "bone", precision=64)(cam), atol=1e-9)
    # and record=False gives the same image, but no gradient until the next recorded render
    np.testing.assert_array_equal(mp(cam, record=False), mp(cam))
    mp(cam, record=False)
    with pytest.raises(RuntimeError, match="render before"):
        mp.vjp(np.ones((1, 48, 48)))
