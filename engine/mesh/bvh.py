"""A bounding-volume hierarchy over triangles, built on the host, flattened for Taichi, cheap to refit.

Build: top-down, each node split where the surface-area heuristic (SAH) is lowest
among all splits of the triangles' centroid order along the three axes, leaves of
at most ``leaf_size`` triangles.  The tree is stored as flat
arrays in depth-first order (a node's left child follows it), so traversal needs
only the index of each right child.  Refit: when vertices move but the topology
stays, the boxes are recomputed bottom-up (vectorised level by level), which is
what an optimiser moving vertices every step needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BVH:
    """Flat BVH.  ``order`` permutes triangles so each leaf owns ``order[start:start + count]``."""

    lo: np.ndarray  # (N, 3) box minimum, mm
    hi: np.ndarray  # (N, 3) box maximum, mm
    right: np.ndarray  # (N,) index of the right child; -1 for a leaf
    start: np.ndarray  # (N,) first position in ``order`` (leaves)
    count: np.ndarray  # (N,) triangles in the leaf, 0 for inner nodes
    order: np.ndarray  # (F,) triangle indices
    depth: np.ndarray  # (N,) depth of each node (for the level-wise refit)
    parent: np.ndarray  # (N,) parent index, -1 for the root

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def subtree_sizes(self) -> np.ndarray:
        """(N,) nodes in the subtree rooted at each node, itself included (depth-first: they are the
        indices n .. n + size - 1)."""
        size = np.ones(len(self.right), np.int64)
        for n in range(len(self.right) - 1, -1, -1):  # children have larger indices than their parent
            if self.count[n] == 0:
                size[n] += size[n + 1] + size[self.right[n]]
        return size

    def refit(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        """Recompute all boxes for moved vertices (same faces), in place."""
        tri = np.asarray(vertices, np.float64)[faces]
        tlo, thi = tri.min(axis=1), tri.max(axis=1)
        leaves = np.flatnonzero(self.count > 0)
        # leaf boxes: reduce over each leaf's triangle range
        ordered_lo, ordered_hi = tlo[self.order], thi[self.order]
        starts = self.start[leaves]
        self.lo[leaves] = np.minimum.reduceat(ordered_lo, starts, axis=0)
        self.hi[leaves] = np.maximum.reduceat(ordered_hi, starts, axis=0)
        inner = self.count == 0
        for d in range(self.max_depth, -1, -1):
            nodes = np.flatnonzero(inner & (self.depth == d))
            if len(nodes) == 0:
                continue
            left, right = nodes + 1, self.right[nodes]
            self.lo[nodes] = np.minimum(self.lo[left], self.lo[right])
            self.hi[nodes] = np.maximum(self.hi[left], self.hi[right])


def _half_area(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    e = np.maximum(hi - lo, 0.0)
    return e[..., 0] * e[..., 1] + e[..., 1] * e[..., 2] + e[..., 2] * e[..., 0]


def _sah_split(tlo: np.ndarray, thi: np.ndarray, cen: np.ndarray) -> tuple[np.ndarray, int]:
    """The surface-area-heuristic split of n >= 2 triangles: a permutation and the size of the left part.

    Sweeps all n - 1 splits of the centroid order along each axis and keeps the one
    minimising ``area(left) * n_left + area(right) * n_right`` (MacDonald & Booth 1990;
    the expected number of triangle tests for a ray that hits the parent).
    """
    n = len(cen)
    best = (np.inf, None, 0)
    counts = np.arange(1, n)
    for axis in range(3):
        perm = np.argsort(cen[:, axis], kind="stable")
        lo, hi = tlo[perm], thi[perm]
        left = _half_area(np.minimum.accumulate(lo[:-1]), np.maximum.accumulate(hi[:-1]))
        right = _half_area(np.minimum.accumulate(lo[:0:-1])[::-1], np.maximum.accumulate(hi[:0:-1])[::-1])
        cost = left * counts + right * counts[::-1]
        k = int(np.argmin(cost))
        if cost[k] < best[0]:
            best = (cost[k], perm, k + 1)
    return best[1], best[2]


def build_bvh(vertices: np.ndarray, faces: np.ndarray, leaf_size: int = 4) -> BVH:
    """Build a :class:`BVH` over the triangles ``faces`` of ``vertices`` (SAH splits, leaves of at most
    ``leaf_size`` triangles)."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    tlo, thi = tri.min(axis=1), tri.max(axis=1)
    cen = (tlo + thi) / 2
    order = np.arange(len(faces))
    lo, hi, right, start, count, depth, parent = [], [], [], [], [], [], []
    stack = [(0, len(faces), -1, 0, None)]  # (begin, end, parent, depth, slot to patch as right child)
    while stack:
        b, e, par, dep, patch = stack.pop()
        node = len(lo)
        if patch is not None:
            right[patch] = node
        idx = order[b:e]
        lo.append(tlo[idx].min(axis=0))
        hi.append(thi[idx].max(axis=0))
        parent.append(par)
        depth.append(dep)
        if e - b <= leaf_size:
            right.append(-1)
            start.append(b)
            count.append(e - b)
            continue
        part, mid = _sah_split(tlo[idx], thi[idx], cen[idx])
        order[b:e] = idx[part]
        right.append(-2)  # patched when the right child is created
        start.append(b)
        count.append(0)
        # depth-first: left child (pushed last) comes right after this node
        stack.append((b + mid, e, node, dep + 1, node))
        stack.append((b, b + mid, node, dep + 1, None))
    return BVH(lo=np.array(lo), hi=np.array(hi), right=np.array(right, np.int64), start=np.array(start, np.int64),
               count=np.array(count, np.int64), order=order, depth=np.array(depth, np.int64),
               parent=np.array(parent, np.int64))
