"""The BVH on the device: flat Taichi ndarrays, triangles stored in leaf order, refit by kernels.

:class:`DeviceBVH` holds what ray traversal reads: node boxes (``lo``, ``hi``), the
right-child index (the left child follows its parent, depth-first), each leaf's
range of triangle slots, and the triangles' vertices copied into those slots
(``tri[9 q + 3 k + a]`` = coordinate a of corner k of the triangle in slot q), so a
leaf's triangles are contiguous in memory and the kernel needs no index indirection.

:meth:`DeviceBVH.refit` follows moved vertices without rebuilding: one kernel
gathers the corners into the slots from the vertex array, a second computes each
leaf's box from its slots, a third each inner node's box as the union of the leaf
boxes among its descendants (contiguous node indices in depth-first order); all
parallel, no host round trip.  An optimiser that moves vertices every step keeps
the tree on the device (GPU-ready); the host :class:`~engine.mesh.bvh.BVH` only
supplies the topology.

Boxes are padded by ``pad`` (mm) so rounding cannot open a gap between a box and
the triangles it bounds.

Device memory has one owner: :class:`DeviceArrays` allocates flat ``ti.ndarray``\\ s
and frees them together (:meth:`DeviceBVH.close`, the end of a ``with`` block, or
garbage collection).  The kernels are built once per process per float type
(:func:`bvh_kernels`) and take ndarrays, which Taichi compiles per element type and
dimension only, so a new tree reuses them.
"""

import functools
import weakref

import numpy as np

from .. import backend
from .bvh import BVH
from .ray_triangle import ray_funcs


class DeviceArrays:
    """Flat Taichi ndarrays with one owner, freed together.

    Taichi frees an ndarray when its last Python reference goes
    (``ScalarNdarray.__del__`` -> ``Program.delete_ndarray``), but on Vulkan only if
    no kernel launched since the last synchronisation uses it; otherwise the
    allocation is silently kept until ``ti.reset()``.  So this class holds the only
    references, and :meth:`release` (and :meth:`new` when it replaces an array)
    synchronises first, then drops them.  Only scalar ndarrays are made (Taichi's
    vector ndarrays have no ``__del__`` and would never be freed).

    Parameters
    ----------
    owner : str
        Name used in the error raised after :meth:`release` (e.g. ``"MeshProjector"``).
    """

    def __init__(self, owner: str):
        self._owner = owner
        self._arrays: dict = {}
        self._released = False

    def new(self, name: str, dtype, size: int):
        """A zero-filled flat ndarray of ``size`` elements of ``dtype`` stored under ``name`` (an array already
        stored there is freed first)."""
        self._check()
        ti = backend.ti_module()
        if name in self._arrays:
            ti.sync()
            del self._arrays[name]
        arr = ti.ndarray(dtype, shape=max(int(size), 1))
        self._arrays[name] = arr
        return arr

    def __getitem__(self, name: str):
        self._check()
        return self._arrays[name]

    def __contains__(self, name: str) -> bool:
        return not self._released and name in self._arrays

    def size(self, name: str) -> int:
        """Elements of the array ``name`` (0 when there is none)."""
        return int(self._arrays[name].shape[0]) if name in self else 0

    @property
    def released(self) -> bool:
        return self._released

    @property
    def nbytes(self) -> int:
        """Device bytes held (0 after :meth:`release`)."""
        return sum(int(a.shape[0]) * (8 if "64" in str(a.dtype) else 4) for a in self._arrays.values())

    def _check(self):
        if self._released:
            raise RuntimeError(f"this {self._owner} is closed: its device memory was freed (make a new one)")

    def release(self) -> None:
        """Free every array (idempotent).  Later use of this object raises ``RuntimeError``."""
        if self._released:
            return
        self._released = True
        arrays, self._arrays = self._arrays, {}
        try:
            backend.ti_module().sync()  # Vulkan frees only allocations no pending kernel uses
        except Exception:  # noqa: BLE001 - Taichi already shut down (interpreter exit): nothing to free
            pass
        arrays.clear()


@functools.lru_cache(maxsize=None)
def bvh_kernels(bits: int):
    """``(gather, leaf_boxes, inner_boxes)`` for ``bits`` = 32 or 64, built once per process (flat ndarray
    arguments; layouts in the module doc and :class:`DeviceBVH`)."""
    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32
    vec3 = ti.types.vector(3, real)
    vec_at = ray_funcs(bits)[4]
    arr_r = ti.types.ndarray(dtype=real, ndim=1)
    arr_i = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.kernel
    def gather(verts: arr_r, faces: arr_i, order: arr_i, tri: arr_r):
        for q in range(order.shape[0]):
            f = order[q]
            for k in ti.static(range(3)):
                i = faces[3 * f + k]
                for a in ti.static(range(3)):
                    tri[9 * q + 3 * k + a] = verts[3 * i + a]

    @ti.kernel
    def leaf_boxes(tri: arr_r, first: arr_i, count: arr_i, lo: arr_r, hi: arr_r, pad: real):
        for n in range(count.shape[0]):
            if count[n] > 0:
                a = vec3(ti.math.inf)
                b = vec3(-ti.math.inf)
                for q in range(first[n], first[n] + count[n]):
                    for k in ti.static(range(3)):
                        p = vec_at(tri, 3 * q + k)
                        a = ti.min(a, p)
                        b = ti.max(b, p)
                for j in ti.static(range(3)):
                    lo[3 * n + j] = a[j] - pad
                    hi[3 * n + j] = b[j] + pad

    @ti.kernel
    def inner_boxes(count: arr_i, subtree: arr_i, lo: arr_r, hi: arr_r):
        # an inner node's box is the union of the leaf boxes among its descendants, which are the
        # nodes n+1 .. n+subtree[n]-1 in depth-first order (leaf boxes are final: no race)
        for n in range(count.shape[0]):
            if count[n] == 0:
                a = vec3(ti.math.inf)
                b = vec3(-ti.math.inf)
                for m in range(n + 1, n + subtree[n]):
                    if count[m] > 0:
                        a = ti.min(a, vec_at(lo, m))
                        b = ti.max(b, vec_at(hi, m))
                for j in ti.static(range(3)):
                    lo[3 * n + j] = a[j]
                    hi[3 * n + j] = b[j]

    return gather, leaf_boxes, inner_boxes


class DeviceBVH:
    """A :class:`~engine.mesh.bvh.BVH`'s topology in flat Taichi ndarrays, with device-side refit.

    Parameters
    ----------
    bvh : BVH
        The host tree (its ``order``, ``right``, ``start``, ``count`` and subtree sizes).
    faces : ti.ndarray
        Flat (F * 3) int32 vertex indices of the faces the tree was built over; owned by the caller (the
        projector), which must keep it alive as long as this tree.
    real : ti.f32 or ti.f64
        Float type of the boxes and slot corners (mm, world frame).

    Attributes
    ----------
    lo, hi : ti.ndarray
        Flat (N * 3) node box corners, mm.
    right, first, count, subtree : ti.ndarray
        Flat (N,) int32: right child, a leaf's first slot, slots owned by a leaf (0 for inner nodes),
        nodes in the subtree rooted at each node (itself included).
    order : ti.ndarray
        Flat (F,) int32: face index of each slot.
    tri : ti.ndarray
        Flat (F * 9) slot corners, mm.

    The arrays are freed by :meth:`close` (or ``with``, or garbage collection); using the tree afterwards
    raises ``RuntimeError``.
    """

    def __init__(self, bvh: BVH, faces, real):
        ti = backend.ti_module()
        self._ti, self.real = ti, real
        self._bits = 64 if real == ti.f64 else 32
        nn, nf = len(bvh.right), len(bvh.order)
        self.n_nodes, self.n_faces = nn, nf
        mem = self._mem = DeviceArrays("DeviceBVH")
        self._finalizer = weakref.finalize(self, mem.release)
        mem.new("lo", real, 3 * nn)
        mem.new("hi", real, 3 * nn)
        for name, values, n in (("right", bvh.right, nn), ("first", bvh.start, nn), ("count", bvh.count, nn),
                                ("subtree", bvh.subtree_sizes(), nn), ("order", bvh.order, nf)):
            mem.new(name, ti.i32, n).from_numpy(np.ascontiguousarray(values, np.int32))
        mem.new("tri", real, 9 * nf)
        self._faces = faces
        self._gather, self._leaf_boxes, self._inner_boxes = bvh_kernels(self._bits)

    lo = property(lambda self: self._mem["lo"])
    hi = property(lambda self: self._mem["hi"])
    right = property(lambda self: self._mem["right"])
    first = property(lambda self: self._mem["first"])
    count = property(lambda self: self._mem["count"])
    subtree = property(lambda self: self._mem["subtree"])
    order = property(lambda self: self._mem["order"])
    tri = property(lambda self: self._mem["tri"])

    def refit(self, verts, pad: float) -> None:
        """Copy corners from ``verts`` (the flat (V * 3) vertex ndarray, mm) into the slots and recompute all
        boxes, each padded by ``pad`` mm."""
        mem = self._mem
        self._gather(verts, self._faces, mem["order"], mem["tri"])
        self._leaf_boxes(mem["tri"], mem["first"], mem["count"], mem["lo"], mem["hi"], float(pad))
        self._inner_boxes(mem["count"], mem["subtree"], mem["lo"], mem["hi"])

    def box_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The node boxes (lo, hi), (N, 3) mm each, read back to the host (for tests and inspection)."""
        return (self.lo.to_numpy().reshape(-1, 3).astype(np.float64),
                self.hi.to_numpy().reshape(-1, 3).astype(np.float64))

    @property
    def closed(self) -> bool:
        return self._mem.released

    def close(self) -> None:
        """Free the tree's device memory (idempotent); the caller's ``faces`` array is not touched."""
        self._faces = None
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
