"""Taichi distance maps of closed triangle meshes, with vertex gradients.

For each detector ray (source -> pixel centre, parameter t in [0, 1]) every
triangle hit is found, by rasterisation (:mod:`engine.mesh.raster`, default) or by
BVH traversal (``method="bvh"``), and recorded; the path length inside the meshes
of material m is ``L_m = sum_i sign(d . n_i) t_i |d|`` (mm; exit hits count +,
entry hits -, docs/architecture.md), which is exact for closed, outward-oriented meshes and
independent of where the ray starts or ends outside them.

Ray-triangle tests are watertight (:mod:`engine.mesh.ray_triangle`: Woop, Benthin
& Wald, JCGT 2013, with a top-left ownership rule), so a ray through a shared edge
or vertex is counted once: no cracks, no double counting.

Gradients: hits are recorded in the forward pass (:meth:`MeshProjector.forward` returns them as a state);
:meth:`MeshProjector.vjp` (``vjp(state, grad)``)
differentiates the path lengths over the recorded hits with a hand-written adjoint
(:func:`adjoint_kernel`): a hit of the ray ``o + t d`` on the triangle
``(v0, v1, v2)`` with normal ``n = (v1 - v0) x (v2 - v0)`` has
``t = n . (v0 - o) / (n . d)`` and ``dt/dv_k = b_k n / (n . d)``, ``b_k`` the
barycentric coordinates of the hit point (moving corner k by ``e`` moves the plane
at the hit point by ``b_k e``), so its length ``sign(n . d) t |d|`` has
``d/dv_k = |d| b_k n / |n . d|``.  That is the intersection derivative, exact for the
hit set.  The path length of a closed mesh is continuous across its own outline (it
falls to 0 there), so this is the true derivative almost everywhere, but its support
is the set of rays that hit the mesh now: a pixel just outside the outline, where a
target image still has bone, sends no gradient, and an optimiser cannot grow the
outline towards it.

Soft edges (``soft_sigma_px > 0``): the images are convolved with a Gaussian of that
width (pixels, zero padding) and the VJP convolves the incoming gradient with the
same kernel (it is self-adjoint), so pixels up to ~3 sigma outside the outline pull
on the vertices that form it.  This is image-space softening (a blurred distance
map, as in coarse-to-fine silhouette losses), not a geometric soft rasteriser: it
trades detail for reach; lower sigma as the fit converges.

Anti-aliasing (``supersample = s``): each pixel averages s x s sub-pixel rays, the
VJP spreads its gradient over them; the image's steps as an outline or a thread
ridge crosses a ray shrink s-fold (area sampling in the limit).

Compilation and memory: the kernels are built once per process (module-level
caches keyed by float type, and by the number of materials for the BVH traversal)
and take flat ``ti.ndarray`` arguments, which Taichi compiles per element type only;
fields passed as ``ti.template()`` would be compiled again for every projector (the
template key is the field's address).  So a second projector of the same precision
renders its first image with no compilation.  Device memory has one owner: the
projector allocates its ndarrays (vertices, faces, detector buffers; its BVH its
own) and frees them on :meth:`MeshProjector.close`, at the end of a ``with`` block,
or when it is garbage collected.  Detector buffers are kept at the largest detector
(views x rows x cols, after supersampling) seen so far and reused for smaller ones.
"""

import functools
import weakref
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..geometry import camera_batch
from ..geometry.rays import view_table
from .bvh import build_bvh
from .bvh_device import DeviceArrays, DeviceBVH
from .finish import Finisher
from .mesh import Mesh
from .raster import raster_kernel
from .ray_triangle import VIEW_STRIDE, ray_funcs

STACK = 64


@dataclass(frozen=True, eq=False)
class MeshProjectionState:
    """What :meth:`MeshProjector.vjp` needs of one :meth:`MeshProjector.forward`, held apart from the projector's
    reusable buffers: the vertices, ray table and recorded hits of that render (device copies) and its detector
    shape (sub-pixel rows and cols).  Freed with the object."""

    verts: object
    views: object
    hit_tri: object
    hit_n: object
    shape: tuple  # (n, rows, cols) of sub-pixel rays


def _arrays(ti, real):
    return (ti.types.ndarray(dtype=real, ndim=1), ti.types.ndarray(dtype=ti.i32, ndim=1),
            ti.types.ndarray(dtype=ti.f32, ndim=1))


@functools.lru_cache(maxsize=None)
def trace_kernel(bits: int, n_mat: int):
    """BVH traversal for ``bits`` = 32 or 64 and ``n_mat`` materials, built once per process.

    ``trace(face_mat, lo, hi, right, first, count, order, tri, views, n_views, rows, cols, max_hits, out,
    hit_tri, hit_n, record) -> overflow``: the tree's flat arrays (:class:`~engine.mesh.bvh_device.DeviceBVH`),
    the ray table and the detector buffers laid out as for :func:`engine.mesh.raster.raster_kernel` (``out``
    and ``hit_n`` are written, not accumulated: no zeroing needed).  ``overflow`` is 1 when a ray had more
    than ``max_hits`` hits to record or the traversal stack (``STACK`` nodes) overflowed.
    """
    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32
    vec3 = ti.types.vector(3, real)
    vec_m = ti.types.vector(n_mat, real)
    ray, shear, intersect, slab, vec_at = ray_funcs(bits)
    arr_r, arr_i, arr_f = _arrays(ti, real)

    @ti.kernel
    def trace(face_mat: arr_i, lo: arr_r, hi: arr_r, right: arr_i, first: arr_i, count: arr_i, order: arr_i,
              tri: arr_r, views: arr_r, n_views: ti.i32, rows: ti.i32, cols: ti.i32, max_hits: ti.i32,
              out: arr_r, hit_tri: arr_i, hit_n: arr_f, record: ti.template()) -> ti.i32:
        overflow = 0
        for vi, r, c in ti.ndrange(n_views, rows, cols):
            pix = (vi * rows + r) * cols + c
            o, d = ray(views, vi, r, c)
            dlen = d.norm()
            m = shear(d)
            inv = vec3(0.0)
            for a in ti.static(range(3)):
                inv[a] = 1.0 / d[a] if d[a] != 0 else 1e30  # a parallel slab then needs no branch
            stack = ti.Vector([0] * STACK, ti.i32)
            sp = 0
            nh = 0
            acc = vec_m(0.0)  # per-material length of this ray, written once
            node = 0
            neg = inv < 0
            go = slab(vec_at(lo, 0), vec_at(hi, 0), o, inv, neg)
            while go:
                if count[node] > 0:
                    for q in range(first[node], first[node] + count[node]):
                        a = vec_at(tri, 3 * q) - o
                        t, sgn = intersect(a, vec_at(tri, 3 * q + 1) - o, vec_at(tri, 3 * q + 2) - o, m)
                        if t > 0 and t <= 1:
                            f = order[q]
                            for k in ti.static(range(n_mat)):
                                if face_mat[f] == k:
                                    acc[k] += sgn * t * dlen
                            if ti.static(record):
                                if nh < max_hits:
                                    hit_tri[pix * max_hits + nh] = f
                            nh += 1
                    if sp == 0:
                        go = False
                    else:
                        sp -= 1
                        node = stack[sp]
                else:
                    # test both children, descend into the left if hit, keep the right for later
                    left, rgt = node + 1, right[node]
                    hit_l = slab(vec_at(lo, left), vec_at(hi, left), o, inv, neg)
                    hit_r = slab(vec_at(lo, rgt), vec_at(hi, rgt), o, inv, neg)
                    if hit_l and hit_r:
                        if sp < STACK:
                            stack[sp] = rgt
                            sp += 1
                        else:
                            overflow = 1
                        node = left
                    elif hit_l:
                        node = left
                    elif hit_r:
                        node = rgt
                    elif sp == 0:
                        go = False
                    else:
                        sp -= 1
                        node = stack[sp]
            if ti.static(record):
                hit_n[pix] = ti.cast(nh, ti.f32)
                if nh > max_hits:
                    overflow = 1
            for k in ti.static(range(n_mat)):
                out[((vi * n_mat + k) * rows + r) * cols + c] = acc[k]
        return overflow

    return trace


@functools.lru_cache(maxsize=None)
def adjoint_kernel(bits: int, serialize: bool = False):
    """The vertex-gradient adjoint for ``bits`` = 32 or 64, built once per process (and per ``serialize``).

    ``vertex_grad(verts, faces, face_mat, views, n_views, rows, cols, n_mat, max_hits, hit_tri, hit_n,
    grad_out, vgrad)`` adds, for every recorded hit of every pixel, ``grad_out[pixel, material of the face]``
    times the derivative of the hit's signed length ``sign(n . d) t |d|`` with respect to the face's three
    corners (module doc: ``|d| b_k n / |n . d|``, ``b_k = d . (c_{k+1} x c_{k+2}) / (n . d)`` with ``c_k`` the
    corners relative to the source) into ``vgrad`` (flat (V * 3), zero on entry).  Layouts as in
    :func:`engine.mesh.raster.raster_kernel`; ``grad_out`` as ``out``.

    One thread per pixel loops over the pixel's hits and adds with float atomics, nine per hit (several
    pixels hit the same face).  No integer atomics (see :mod:`engine.mesh.raster` on Vulkan/lavapipe);
    float32 atomics are native there, float64 ones Taichi emulates with a compare-and-swap loop, which
    ``tests/test_mesh_projector.py``'s float64 gradient checks exercise on Vulkan.

    Float atomics add in whatever order the threads reach them, so the parallel adjoint's last bits vary from
    run to run (about 1e-7 of the gradient in float32), and a long descent (a reconstruction) drifts apart.
    ``serialize=True`` runs the pixel loop on one thread, in order: the same inputs give the same bits (the
    CPU default, :class:`MeshProjector` ``deterministic``; about twice the parallel time on 2 cores).
    """
    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32
    ray, _, _, _, vec_at = ray_funcs(bits)
    arr_r, arr_i, arr_f = _arrays(ti, real)

    @ti.kernel
    def vertex_grad(verts: arr_r, faces: arr_i, face_mat: arr_i, views: arr_r, n_views: ti.i32, rows: ti.i32,
                    cols: ti.i32, n_mat: ti.i32, max_hits: ti.i32, hit_tri: arr_i, hit_n: arr_f, grad_out: arr_r,
                    vgrad: arr_r):
        ti.loop_config(serialize=serialize)
        for vi, r, c in ti.ndrange(n_views, rows, cols):
            pix = (vi * rows + r) * cols + c
            nh = ti.min(ti.cast(hit_n[pix], ti.i32), max_hits)
            if nh > 0:
                o, d = ray(views, vi, r, c)
                dlen = d.norm()
                for h in range(nh):
                    f = hit_tri[pix * max_hits + h]
                    g = grad_out[((vi * n_mat + face_mat[f]) * rows + r) * cols + c]
                    i0, i1, i2 = faces[3 * f], faces[3 * f + 1], faces[3 * f + 2]
                    a = vec_at(verts, i0) - o
                    b = vec_at(verts, i1) - o
                    cc = vec_at(verts, i2) - o
                    n = (b - a).cross(cc - a)
                    nd = n.dot(d)
                    if g != 0 and nd != 0:
                        inv = 1.0 / nd
                        w = g * dlen / ti.abs(nd)  # d(sign(nd) t |d|)/dv_k = |d| b_k n / |nd|
                        b0 = d.dot(b.cross(cc)) * inv  # barycentric coordinates of the hit point
                        b1 = d.dot(cc.cross(a)) * inv
                        b2 = d.dot(a.cross(b)) * inv
                        for j in ti.static(range(3)):
                            ti.atomic_add(vgrad[3 * i0 + j], w * b0 * n[j])
                            ti.atomic_add(vgrad[3 * i1 + j], w * b1 * n[j])
                            ti.atomic_add(vgrad[3 * i2 + j], w * b2 * n[j])

    return vertex_grad


@functools.lru_cache(maxsize=None)
def _util_kernels():
    """``(zero, copy)``: ``zero(a, n)`` sets ``a[:n] = 0``; ``copy(dst, src, n)`` sets ``dst[:n] = src[:n]``
    (flat ndarrays or NumPy arrays of any one element type; compiled per element type, once per process)."""
    ti = backend.ti_module()

    @ti.kernel
    def zero(a: ti.types.ndarray(ndim=1), n: ti.i32):
        for i in range(n):
            a[i] = 0

    @ti.kernel
    def copy(dst: ti.types.ndarray(ndim=1), src: ti.types.ndarray(ndim=1), n: ti.i32):
        for i in range(n):
            dst[i] = src[i]

    return zero, copy


class MeshProjector:
    """Path lengths (mm) through closed triangle meshes, per material, with vertex gradients.

    Parameters
    ----------
    meshes : Mesh or sequence of Mesh
        Closed, outward-oriented meshes, vertices in the world frame (mm).
    materials : str or sequence of str
        One per mesh (meshes may share a material).
    max_hits : int
        Hits recorded per ray for the gradient (a ray through a mesh of genus g hits
        at least 2 triangles per wall it crosses).
    precision : 32 or 64
        Float type of the vertices and kernel arithmetic (64 for gradient checks).
    leaf_size : int
        Triangles per BVH leaf (``method="bvh"``).
    soft_sigma_px : float
        Soft edges: Gaussian width in pixels (0 = sharp); see the module doc.
    supersample : int
        Anti-aliasing: each pixel is the mean of ``supersample x supersample`` sub-pixel
        rays (the VJP spreads each pixel's gradient over them).  The image then moves
        continuously with the outline at the sub-pixel scale, so finite differences and
        the exact derivative agree over smaller steps; cost grows with its square.
    method : "raster" (default) or "bvh"
        How rays find their triangles: every triangle visits the pixels its projection
        may cover (:mod:`engine.mesh.raster`), or every ray traverses the BVH.  Both
        run the same watertight test on the same rays, so they give the same image (up
        to the order of float additions); the rasteriser is faster unless triangles
        cover many pixels each (a few large triangles on a fine detector).
    deterministic : bool, optional
        Vertex gradients with the same bits for the same inputs, run after run: the adjoint adds in pixel
        order on one thread instead of with parallel float atomics (:func:`adjoint_kernel`).  Default: on the
        CPU backend (where it costs a few ms per call), not on a GPU; ``True`` on a GPU is refused (one GPU
        thread would take seconds).

    Notes
    -----
    Build once (topology fixed), then :meth:`set_vertices` each step and call.  The
    projector owns its device memory: :meth:`close` (or leaving a ``with`` block, or
    garbage collection) frees it, after which every call raises ``RuntimeError``.
    """

    def __init__(self, meshes, materials, *, max_hits: int = 32, precision: int = 32, leaf_size: int = 4,
                 soft_sigma_px: float = 0.0, supersample: int = 1, method: str = "raster",
                 deterministic: bool | None = None):
        if method not in ("raster", "bvh"):
            raise ValueError(f"method must be 'raster' or 'bvh', got {method!r}")
        self.method = method
        if int(supersample) != supersample or supersample < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
        self.supersample = int(supersample)
        meshes = [meshes] if isinstance(meshes, Mesh) else list(meshes)
        materials = [materials] if isinstance(materials, str) else list(materials)
        if not meshes or len(meshes) != len(materials):
            raise ValueError(f"need one material per mesh, got {len(meshes)} meshes and {len(materials)} materials")
        if precision not in (32, 64):
            raise ValueError("precision must be 32 or 64")
        if not soft_sigma_px >= 0:
            raise ValueError(f"soft_sigma_px must be >= 0, got {soft_sigma_px}")
        ti = backend.ti_module()
        on_cpu = backend.current().arch == "cpu"
        if deterministic and not on_cpu:
            raise ValueError(f"deterministic vertex gradients run the adjoint on one thread: CPU backend only "
                             f"(this one is {backend.current().arch}); leave deterministic unset")
        self.deterministic = on_cpu if deterministic is None else bool(deterministic)
        self._ti = ti
        self.precision = int(precision)
        self.real = ti.f64 if precision == 64 else ti.f32
        self._np_real = np.float64 if precision == 64 else np.float32
        self.materials = tuple(dict.fromkeys(materials))
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
        self.vertex_offsets = offsets
        self._faces_np = np.concatenate([m.faces + off for m, off in zip(meshes, offsets[:-1])]).astype(np.int32)
        verts = np.concatenate([m.vertices for m in meshes])
        mats = np.concatenate([np.full(len(m.faces), self.materials.index(mat), np.int32)
                               for m, mat in zip(meshes, materials)])
        self.leaf_size = int(leaf_size)
        self.max_hits = int(max_hits)
        self.soft_sigma_px = float(soft_sigma_px)
        self._tree = None  # the BVH, built on first use by method="bvh" (the rasteriser needs none)
        self._tree_stale = True
        self._last = None  # (n_views, rows, cols) of the last recorded render (sub-pixel rows and cols)
        self._closed = False
        mem = self._mem = DeviceArrays("MeshProjector")
        self._finalizer = weakref.finalize(self, mem.release)
        nv, nf = len(verts), len(self._faces_np)
        mem.new("verts", self.real, 3 * nv)
        mem.new("faces", ti.i32, 3 * nf).from_numpy(self._faces_np.ravel())
        mem.new("face_mat", ti.i32, nf).from_numpy(mats)
        mem.new("vgrad", self.real, 3 * nv)
        # the kernels: built (and compiled, on first launch) once per process, shared by every projector
        bits = self.precision
        self._raster = raster_kernel(bits)
        self._trace = trace_kernel(bits, len(self.materials)) if method == "bvh" else None
        self._adjoint = adjoint_kernel(bits, self.deterministic)
        self._zero, self._copy = _util_kernels()
        self._finisher = Finisher(self.supersample, self.soft_sigma_px, bits, mem)
        self.set_vertices(verts)

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Free the projector's device memory (vertices, faces, detector buffers, BVH); idempotent.

        Later calls of the projector, :meth:`vjp`, :meth:`set_vertices`, :attr:`vertices` and :attr:`tree`
        raise ``RuntimeError``."""
        if self._closed:
            return
        self._closed = True
        if self._tree is not None:
            self._tree.close()
            self._tree = None
        self._last = None
        self._finalizer()

    def __enter__(self) -> "MeshProjector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this MeshProjector is closed: its device memory was freed (make a new one)")

    @property
    def device_bytes(self) -> int:
        """Device memory held now (bytes): vertices, faces, detector buffers and the BVH."""
        tree = 0 if self._tree is None or self._tree.closed else self._tree._mem.nbytes
        return self._mem.nbytes + tree

    # ------------------------------------------------------------------ geometry
    @property
    def _verts(self):
        """The flat (V * 3) vertex ndarray (mm), for device-side users such as :meth:`DeviceBVH.refit`."""
        self._check_open()
        return self._mem["verts"]

    @property
    def tree(self) -> DeviceBVH:
        """The BVH on the device (built over the current vertices on first access; refitted before a render
        when the vertices moved)."""
        self._check_open()
        if self._tree is None:
            bvh = build_bvh(self.vertices, self._faces_np, self.leaf_size)
            self._tree = DeviceBVH(bvh, self._mem["faces"], self.real)
            self._tree_stale = True
        return self._tree

    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) all meshes' vertices, stacked (mm, world frame), float64."""
        self._check_open()
        return self._mem["verts"].to_numpy().reshape(-1, 3).astype(np.float64)

    def set_vertices(self, vertices) -> None:
        """Move the vertices (same topology): uploads them; the BVH, if any, is refitted when next used.

        Parameters
        ----------
        vertices : (V, 3) array_like
            All meshes' vertices, stacked in the order given at construction (mm, world frame).
        """
        self._check_open()
        v = np.asarray(vertices, np.float64)
        if v.shape != (self.vertex_offsets[-1], 3):
            raise ValueError(f"vertices must be ({self.vertex_offsets[-1]}, 3), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("vertices contain NaN or inf")
        flat = np.ascontiguousarray(v, self._np_real).ravel()
        self._copy(self._mem["verts"], flat, len(flat))
        eps = 1e-12 if self.precision == 64 else 1e-6
        self._pad = eps * max(1.0, float(np.abs(v).max()))  # keep boxes closed under rounding
        self._tree_stale = True  # refitted on the device when the BVH is next used

    # ------------------------------------------------------------------ buffers
    def _buffer(self, name: str, dtype, size: int):
        """The detector buffer ``name`` with room for ``size`` elements: kept at the largest size asked so far
        (alternating detector sizes reuse it; only a larger one reallocates)."""
        if self._mem.size(name) < size:
            self._mem.new(name, dtype, size)
        return self._mem[name]

    def _read(self, arr, shape, dtype) -> np.ndarray:
        """The first prod(shape) elements of a flat device array, as a NumPy array of ``shape``."""
        host = np.empty(int(np.prod(shape)), dtype)
        self._copy(host, arr, host.size)
        return host.reshape(shape)

    # ------------------------------------------------------------------ forward and adjoint
    def __call__(self, cameras, record: bool = True) -> np.ndarray:
        """Path lengths through the meshes, per material.

        Parameters
        ----------
        cameras : Camera or sequence of Camera
            One camera, or several sharing the detector shape (rendered in one launch).
        record : bool
            Record the hits for :meth:`vjp`.  ``False`` is faster, and then :meth:`vjp` is unavailable until
            the next recorded call: for rendering without gradients.

        Returns
        -------
        np.ndarray
            (n, M, rows, cols) mm, n = 1 for one Camera (always a view axis: docs/conventions.md, "Return
            shapes"), float32, or float64 with ``precision=64``; M = ``len(self.materials)``.
        """
        field, shape = self._render(cameras, record)
        return self._read(field, shape, self._np_real)  # float32, or float64 with precision=64

    def render_field(self, cameras, record: bool = True):
        """Render like :meth:`__call__` but leave the finished image on the device.

        Returns
        -------
        field : flat Taichi ndarray of the projector's float type, holding the (n, M, rows, cols) image (mm) in
            its first n M rows cols elements (n = 1 for one Camera); the projector's own buffer, overwritten
            by the next render: read it, do not write it.
        shape : (n, M, rows, cols)
        """
        return self._render(cameras, record)

    def _render(self, cameras, record: bool):
        """Trace the rays and finish the image on the device (block mean, blur); returns (flat field, shape)."""
        self._check_open()
        cams = camera_batch(cameras)
        rows, cols = cams[0].rows, cams[0].cols
        ss = self.supersample
        if ss > 1:
            cams = [c.subdivided(ss) for c in cams]
        n, sub_rows, sub_cols = len(cams), rows * ss, cols * ss
        n_mat, k, npix = len(self.materials), self.max_hits, n * sub_rows * sub_cols
        views_np = np.ascontiguousarray(view_table(cams, dual=True), self._np_real).ravel()
        views = self._buffer("views", self.real, views_np.size)
        out = self._buffer("out", self.real, npix * n_mat)
        hit_n = self._buffer("hit_n", self._ti.f32, npix)
        # without recording the kernels never touch hit_tri: any buffer will do
        hit_tri = self._buffer("hit_tri", self._ti.i32, npix * k if record else 1)
        self._last = None
        self._copy(views, views_np, views_np.size)
        mem = self._mem
        if self.method == "raster":
            self._zero(out, npix * n_mat)
            self._zero(hit_n, npix)
            overflow = self._raster(mem["verts"], mem["faces"], mem["face_mat"], views, n, sub_rows, sub_cols, n_mat,
                                    k, out, hit_tri, hit_n, bool(record))
        else:
            tr = self.tree
            if self._tree_stale:
                tr.refit(mem["verts"], self._pad)
                self._tree_stale = False
            overflow = self._trace(mem["face_mat"], tr.lo, tr.hi, tr.right, tr.first, tr.count, tr.order, tr.tri,
                                   views, n, sub_rows, sub_cols, k, out, hit_tri, hit_n, bool(record))
        if overflow:
            raise RuntimeError(f"a ray hit more than max_hits={self.max_hits} triangles or the BVH is deeper than "
                               f"{STACK}: build the MeshProjector with a larger max_hits")
        self._last = (n, sub_rows, sub_cols) if record else None
        return self._finisher.forward(out, n * n_mat, rows, cols), (n, n_mat, rows, cols)

    def forward(self, cameras):
        """Render like :meth:`__call__` (recording the hits) and return what :meth:`vjp` needs.

        Returns
        -------
        image : np.ndarray
            (n, M, rows, cols), as :meth:`__call__` returns it.
        state : MeshProjectionState
            Device copies of this render's vertices, rays and hits: renders, vertex moves and VJPs may then
            interleave in any order (``vjp(state, grad)``).
        """
        img = self(cameras, record=True)
        return img, self.snapshot()

    def snapshot(self) -> "MeshProjectionState":
        """The saved state of the last recorded render (:meth:`forward` returns it; a device user of
        :meth:`render_field` takes it after the render)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("render with record=True before taking a snapshot")
        n, rows, cols = self._last
        npix = n * rows * cols
        mem = self._mem

        def copy(name, dtype, size):
            a = self._ti.ndarray(dtype, (max(size, 1),))
            self._copy(a, mem[name], size)
            return a

        return MeshProjectionState(
            verts=copy("verts", self.real, mem.size("verts")),
            views=copy("views", self.real, n * VIEW_STRIDE),
            hit_tri=copy("hit_tri", self._ti.i32, npix * self.max_hits),
            hit_n=copy("hit_n", self._ti.f32, npix),
            shape=(n, rows, cols))

    def hit_counts(self) -> np.ndarray:
        """Hits per ray of the last recorded render, (n, rows, cols) float32 (sub-pixel rays with supersampling;
        for tests and inspection)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("render (with record=True) before asking for hit counts")
        return self._read(self._mem["hit_n"], self._last, np.float32)

    def vjp(self, state: MeshProjectionState, grad_lengths) -> np.ndarray:
        """d(loss)/d(vertices) for d(loss)/d(path lengths) of the render that returned ``state``.

        Parameters
        ----------
        state : MeshProjectionState
            From :meth:`forward` (or :meth:`snapshot`): the render to differentiate, at the vertices it was made
            with (nothing is taken from the last call).
        grad_lengths : array_like
            That render's output shape, (n, M, rows, cols), per mm of path length.

        Returns
        -------
        np.ndarray
            (V, 3) float64, per mm of vertex motion (world frame).  The intersection derivative over the
            recorded hits (see the module doc: silhouettes not included).
        """
        self._check_open()
        if not isinstance(state, MeshProjectionState):
            raise TypeError("vjp(state, grad): state must be the MeshProjectionState returned by forward()")
        return self._vjp(grad_lengths, state.shape, state.verts, state.views, state.hit_tri, state.hit_n)

    def _vjp(self, grad_lengths, shape, verts, views, hit_tri, hit_n) -> np.ndarray:
        n, rows, cols = shape
        n_mat, ss = len(self.materials), self.supersample
        g = np.asarray(grad_lengths, np.float64)
        if g.ndim != 4 or (g.shape[0], g.shape[1], g.shape[2] * ss, g.shape[3] * ss) != (n, n_mat, rows, cols):
            raise ValueError(f"gradient shape {g.shape} differs from the output's "
                             f"{(n, n_mat, rows // ss, cols // ss)}")
        if not np.all(np.isfinite(g)):
            raise ValueError("gradient contains NaN or inf")
        g = np.ascontiguousarray(g, self._np_real).ravel()
        mem = self._mem
        grad = self._buffer("grad", self.real, g.size)
        self._copy(grad, g, g.size)
        # the adjoint of the finishing steps, on the device: the blur (its own adjoint), then the block mean's
        grad = self._finisher.adjoint(grad, n * n_mat, rows // ss, cols // ss)
        vgrad = mem["vgrad"]
        self._zero(vgrad, vgrad.shape[0])
        self._adjoint(verts, mem["faces"], mem["face_mat"], views, n, rows, cols, n_mat, self.max_hits, hit_tri,
                      hit_n, grad, vgrad)
        return self._read(vgrad, (self.vertex_offsets[-1], 3), self._np_real).astype(np.float64)
