"""The BVH on the device: flat Taichi fields, triangles stored in leaf order, refit by kernels.

:class:`DeviceBVH` holds what ray traversal reads: node boxes (``lo``, ``hi``), the
right-child index (the left child follows its parent, depth-first), each leaf's
range of triangle slots, and the triangles' vertices copied into those slots
(``tri[q, k]`` = corner k of the triangle in slot q), so a leaf's triangles are
contiguous in memory and the kernel needs no index indirection.

:meth:`DeviceBVH.refit` follows moved vertices without rebuilding: one kernel
gathers the corners into the slots from the vertex field, a second computes each
leaf's box from its slots, a third each inner node's box as the union of the leaf
boxes among its descendants (contiguous node indices in depth-first order); all
parallel, no host round trip.  An optimiser that moves vertices every step keeps
the tree on the device (GPU-ready); the host :class:`~engine.mesh.bvh.BVH` only
supplies the topology.

Boxes are padded by ``pad`` (mm) so rounding cannot open a gap between a box and
the triangles it bounds.
"""
import numpy as np

from .. import backend
from .bvh import BVH


def _make_kernels(ti, real):
    vec3 = ti.types.vector(3, real)

    @ti.kernel
    def gather(verts: ti.template(), faces: ti.template(), order: ti.template(), tri: ti.template()):
        for q in order:
            i = faces[order[q]]
            for k in ti.static(range(3)):
                tri[q, k] = verts[i[k]]

    @ti.kernel
    def leaf_boxes(tri: ti.template(), first: ti.template(), count: ti.template(), lo: ti.template(),
                   hi: ti.template(), pad: real):
        for n in lo:
            if count[n] > 0:
                a = vec3(ti.math.inf)
                b = vec3(-ti.math.inf)
                for q in range(first[n], first[n] + count[n]):
                    for k in ti.static(range(3)):
                        a = ti.min(a, tri[q, k])
                        b = ti.max(b, tri[q, k])
                lo[n] = a - pad
                hi[n] = b + pad

    @ti.kernel
    def inner_boxes(count: ti.template(), subtree: ti.template(), lo: ti.template(), hi: ti.template()):
        # an inner node's box is the union of the leaf boxes among its descendants, which are the
        # nodes n+1 .. n+subtree[n]-1 in depth-first order (leaf boxes are final: no race)
        for n in lo:
            if count[n] == 0:
                a = vec3(ti.math.inf)
                b = vec3(-ti.math.inf)
                for m in range(n + 1, n + subtree[n]):
                    if count[m] > 0:
                        a = ti.min(a, lo[m])
                        b = ti.max(b, hi[m])
                lo[n] = a
                hi[n] = b

    return gather, leaf_boxes, inner_boxes


class DeviceBVH:
    """A :class:`~engine.mesh.bvh.BVH`'s topology in Taichi fields, with device-side refit.

    Parameters
    ----------
    bvh : the host tree (its ``order``, ``right``, ``start``, ``count`` and subtree sizes)
    faces : ti.Vector.field(3, i32) of the faces the tree was built over
    real : ti.f32 or ti.f64
    """

    def __init__(self, bvh: BVH, faces, real):
        ti = backend.ti_module()
        self._ti, self.real = ti, real
        nn, nf = len(bvh.right), len(bvh.order)
        self.n_nodes, self.n_faces = nn, nf
        self.lo = ti.Vector.field(3, real, shape=nn)
        self.hi = ti.Vector.field(3, real, shape=nn)
        self.right = ti.field(ti.i32, shape=nn)
        self.first = ti.field(ti.i32, shape=nn)  # a leaf's first triangle slot
        self.subtree = ti.field(ti.i32, shape=nn)  # nodes in the subtree rooted here, itself included
        self.count = ti.field(ti.i32, shape=nn)  # slots owned by a leaf, 0 for inner nodes
        self.order = ti.field(ti.i32, shape=nf)  # face index of each slot
        self.tri = ti.Vector.field(3, real, shape=(nf, 3))
        self.right.from_numpy(bvh.right.astype(np.int32))
        self.first.from_numpy(bvh.start.astype(np.int32))
        self.subtree.from_numpy(bvh.subtree_sizes().astype(np.int32))
        self.count.from_numpy(bvh.count.astype(np.int32))
        self.order.from_numpy(bvh.order.astype(np.int32))
        self._faces = faces
        self._gather, self._leaf_boxes, self._inner_boxes = _make_kernels(ti, real)

    def refit(self, verts, pad: float) -> None:
        """Copy corners from ``verts`` (the vertex field, mm) into the slots and recompute all boxes."""
        self._gather(verts, self._faces, self.order, self.tri)
        self._leaf_boxes(self.tri, self.first, self.count, self.lo, self.hi, pad)
        self._inner_boxes(self.count, self.subtree, self.lo, self.hi)

    def box_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The node boxes (lo, hi), (N, 3) mm each, read back to the host (for tests and inspection)."""
        return self.lo.to_numpy().astype(np.float64), self.hi.to_numpy().astype(np.float64)
