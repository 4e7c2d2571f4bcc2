"""Taichi distance maps of closed triangle meshes, with vertex gradients.

For each detector ray (source -> pixel centre, parameter t in [0, 1]) every
triangle hit is found, by rasterisation (:mod:`engine.mesh.raster`, default) or by
BVH traversal (``method="bvh"``), and recorded; the path length inside the meshes
of material m is ``L_m = sum_i sign(d . n_i) t_i |d|`` (mm; exit hits count +,
entry hits -, DESIGN.md), which is exact for closed, outward-oriented meshes and
independent of where the ray starts or ends outside them.

Ray-triangle tests are watertight (:mod:`engine.mesh.ray_triangle`: Woop, Benthin
& Wald, JCGT 2013, with a top-left ownership rule), so a ray through a shared edge
or vertex is counted once: no cracks, no double counting.

Gradients: hits are recorded in the forward pass; :meth:`MeshProjector.vjp`
differentiates the path lengths over the recorded hits (Taichi autodiff of a
plain kernel, exact for the hit set).  That is the intersection derivative.  The
path length of a closed mesh is continuous across its own outline (it falls to 0
there), so this is the true derivative almost everywhere, but its support is the
set of rays that hit the mesh now: a pixel just outside the outline, where a
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
"""
import numpy as np

from .. import backend
from ..geometry import Camera, bin_image
from ..field_group import FieldGroup
from .bvh import build_bvh
from .bvh_device import DeviceBVH
from .raster import make_raster_kernel
from .ray_triangle import make_ray_funcs
from .mesh import Mesh

STACK = 64


def _make_kernels(ti, real, n_mat):
    vec3 = ti.types.vector(3, real)
    vec_m = ti.types.vector(n_mat, real)

    ray, shear, intersect, slab = make_ray_funcs(ti, real)

    @ti.kernel
    def trace(verts: ti.template(), face_mat: ti.template(), lo: ti.template(), hi: ti.template(),
              right: ti.template(), first: ti.template(), count: ti.template(), order: ti.template(),
              tri: ti.template(), views: ti.types.ndarray(dtype=vec3, ndim=2), n_views: ti.i32,
              out: ti.template(), hit_tri: ti.template(), hit_n: ti.template(), record: ti.template()) -> ti.i32:
        rows, cols = out.shape[2], out.shape[3]
        overflow = 0
        for vi, r, c in ti.ndrange(n_views, rows, cols):
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
            go = slab(lo[0], hi[0], o, inv, neg)
            while go:
                if count[node] > 0:
                    for q in range(first[node], first[node] + count[node]):
                        a = tri[q, 0] - o
                        t, sgn = intersect(a, tri[q, 1] - o, tri[q, 2] - o, m)
                        if t > 0 and t <= 1:
                            f = order[q]
                            for k in ti.static(range(n_mat)):
                                if face_mat[f] == k:
                                    acc[k] += sgn * t * dlen
                            if ti.static(record):
                                if nh < hit_tri.shape[3]:
                                    hit_tri[vi, r, c, nh] = f
                            nh += 1
                    if sp == 0:
                        go = False
                    else:
                        sp -= 1
                        node = stack[sp]
                else:
                    # test both children, descend into the left if hit, keep the right for later
                    left, rgt = node + 1, right[node]
                    hit_l = slab(lo[left], hi[left], o, inv, neg)
                    hit_r = slab(lo[rgt], hi[rgt], o, inv, neg)
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
                hit_n[vi, r, c] = ti.cast(nh, ti.f32)
                if nh > hit_tri.shape[3]:
                    overflow = 1
            for k in ti.static(range(n_mat)):
                out[vi, k, r, c] = acc[k]
        return overflow

    @ti.kernel
    def hit_lengths(verts: ti.template(), faces: ti.template(), face_mat: ti.template(),
                    views: ti.types.ndarray(dtype=vec3, ndim=2), n_views: ti.i32, hit_tri: ti.template(),
                    hit_n: ti.template(), grad_out: ti.template(), loss: ti.template()):
        # loss = sum over recorded hits of grad_out[pixel, material] * sign * t * |d|; differentiated w.r.t. verts
        for vi, r, c in ti.ndrange(n_views, hit_tri.shape[1], hit_tri.shape[2]):
            for k in range(ti.min(ti.cast(hit_n[vi, r, c], ti.i32), hit_tri.shape[3])):
                o, d = ray(views, vi, r, c)
                f = hit_tri[vi, r, c, k]
                i = faces[f]
                v0, v1, v2 = verts[i[0]], verts[i[1]], verts[i[2]]
                n = (v1 - v0).cross(v2 - v0)
                nd = n.dot(d)
                t = n.dot(v0 - o) / nd
                sgn = 1.0 if nd > 0 else -1.0
                loss[None] += grad_out[vi, face_mat[f], r, c] * sgn * t * d.norm()

    return trace, hit_lengths


class MeshProjector:
    """Path lengths (mm) through closed triangle meshes, per material, with vertex gradients.

    Parameters
    ----------
    meshes : sequence of Mesh (world mm), closed and outward oriented
    materials : sequence of str, one per mesh (meshes may share a material)
    max_hits : int
        Hits recorded per ray for the gradient (a ray through a mesh of genus g hits
        at least 2 triangles per wall it crosses).
    precision : 32 or 64
        Float type of the vertex field and kernel arithmetic (64 for gradient checks).
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

    Build once (topology fixed), then :meth:`set_vertices` each step and call.
    """

    def __init__(self, meshes, materials, *, max_hits: int = 32, precision: int = 32, leaf_size: int = 4,
                 soft_sigma_px: float = 0.0, supersample: int = 1, method: str = "raster"):
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
        ti = backend.ti_module()
        self._ti = ti
        self.real = ti.f64 if precision == 64 else ti.f32
        self.materials = tuple(dict.fromkeys(materials))
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
        self.vertex_offsets = offsets
        self._faces_np = np.concatenate([m.faces + off for m, off in zip(meshes, offsets[:-1])]).astype(np.int32)
        verts = np.concatenate([m.vertices for m in meshes])
        mats = np.concatenate([np.full(len(m.faces), self.materials.index(mat), np.int32)
                               for m, mat in zip(meshes, materials)])
        self._verts = ti.Vector.field(3, self.real, shape=len(verts), needs_grad=True)
        self._faces = ti.Vector.field(3, ti.i32, shape=len(self._faces_np))
        self._face_mat = ti.field(ti.i32, shape=len(self._faces_np))
        self._faces.from_numpy(self._faces_np)
        self._face_mat.from_numpy(mats)
        self.leaf_size = int(leaf_size)
        self._tree = None  # the BVH, built on first use by method="bvh" (the rasteriser needs none)
        self.max_hits = int(max_hits)
        if not soft_sigma_px >= 0:
            raise ValueError(f"soft_sigma_px must be >= 0, got {soft_sigma_px}")
        self.soft_sigma_px = float(soft_sigma_px)
        self._trace, self._hit_lengths = _make_kernels(ti, self.real, len(self.materials))
        self._raster = make_raster_kernel(ti, self.real, len(self.materials))
        self._loss = ti.field(self.real, shape=(), needs_grad=True)
        self._bufs = None
        self._last = None
        self.set_vertices(verts)

    @property
    def tree(self) -> DeviceBVH:
        """The BVH on the device (built over the current vertices on first access)."""
        if self._tree is None:
            bvh = build_bvh(self.vertices, self._faces_np, self.leaf_size)
            self._tree = DeviceBVH(bvh, self._faces, self.real)
            self._tree_stale = True
        return self._tree

    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) all meshes' vertices, stacked (mm)."""
        return self._verts.to_numpy().astype(np.float64)

    def set_vertices(self, vertices) -> None:
        """Move the vertices (same topology): uploads them and refits the BVH."""
        v = np.asarray(vertices, np.float64)
        if v.shape != (self.vertex_offsets[-1], 3):
            raise ValueError(f"vertices must be ({self.vertex_offsets[-1]}, 3), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("vertices contain NaN or inf")
        np_real = np.float64 if self.real == self._ti.f64 else np.float32
        self._verts.from_numpy(v.astype(np_real))
        eps = 1e-12 if self.real == self._ti.f64 else 1e-6
        pad = eps * max(1.0, float(np.abs(v).max()))  # keep boxes closed under rounding
        self._pad = pad
        self._tree_stale = True  # refitted on the device when the BVH is next used

    def _buffers(self, n, rows, cols):
        shape = (n, rows, cols)
        if self._bufs is None or self._bufs[0] != shape:
            ti = self._ti
            if self._bufs is not None:
                self._bufs[-1].release()  # the previous detector's buffers (freed, not leaked)
            group = FieldGroup(ti)
            out = group.field(self.real, (n, len(self.materials), rows, cols))
            grad = group.field(self.real, (n, len(self.materials), rows, cols))
            hit_tri = group.field(ti.i32, (n, rows, cols, self.max_hits))
            hit_n = group.field(ti.f32, (n, rows, cols))  # float32 counts: see engine.mesh.raster
            self._bufs = (shape, out, grad, hit_tri, hit_n, group.finalize())
        return self._bufs[1:5]

    @staticmethod
    def _views(cams) -> np.ndarray:
        # source, pixel (0, 0), column and row steps; then the detector plane's dual basis (for the rasteriser)
        out = np.empty((len(cams), 6, 3), np.float64)
        for i, cam in enumerate(cams):
            out[i, :4] = g = cam.pixel_grid()
            du, dv = g[2], g[3]
            gram = np.array([[du @ du, du @ dv], [du @ dv, dv @ dv]])
            out[i, 4:] = np.linalg.solve(gram, np.stack([du, dv]))
        return out

    def __call__(self, cameras, record: bool = True) -> np.ndarray:
        """Path lengths, (M, rows, cols) mm for one Camera, (n, M, rows, cols) for a list (float32, or float64
        with ``precision=64``).

        ``record=False`` skips recording the hits (faster; then :meth:`vjp` is unavailable until the next
        recorded call): for rendering without gradients."""
        single = isinstance(cameras, Camera)
        cams = [cameras] if single else list(cameras)
        if not cams or any(not isinstance(c, Camera) for c in cams):
            raise TypeError("expected a Camera or a non-empty list of Cameras")
        rows, cols = cams[0].rows, cams[0].cols
        if any((c.rows, c.cols) != (rows, cols) for c in cams):
            raise ValueError("all cameras of a batch must share the detector shape")
        ss = self.supersample
        if ss > 1:
            cams = [c.subdivided(ss) for c in cams]
        out, _, hit_tri, hit_n = self._buffers(len(cams), rows * ss, cols * ss)
        views = np.ascontiguousarray(self._views(cams), dtype=np.float64 if self.real == self._ti.f64 else np.float32)
        if self.method == "raster":
            out.fill(0)
            hit_n.fill(0)
            overflow = self._raster(self._verts, self._faces, self._face_mat, views, len(cams), out, hit_tri,
                                    hit_n, bool(record))
        else:
            tr = self.tree
            if self._tree_stale:
                tr.refit(self._verts, self._pad)
                self._tree_stale = False
            overflow = self._trace(self._verts, self._face_mat, tr.lo, tr.hi, tr.right, tr.first, tr.count,
                                   tr.order, tr.tri, views, len(cams), out, hit_tri, hit_n, bool(record))
        if overflow:
            raise RuntimeError(f"a ray hit more than max_hits={self.max_hits} triangles or the BVH is deeper than "
                               f"{STACK}: build the MeshProjector with a larger max_hits")
        self._last = (views, len(cams)) if record else None
        img = out.to_numpy()  # float32, or float64 with precision=64
        if ss > 1:
            img = bin_image(img, ss).astype(img.dtype)
        img = self._soften(img)
        return img[0] if single else img

    def _soften(self, img: np.ndarray) -> np.ndarray:
        """Gaussian blur over (rows, cols) of an (n, M, rows, cols) stack; identity when soft_sigma_px == 0."""
        if self.soft_sigma_px == 0:
            return img
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(img, sigma=(0, 0, self.soft_sigma_px, self.soft_sigma_px), mode="constant",
                               truncate=4.0)

    def vjp(self, grad_lengths) -> np.ndarray:
        """d(loss)/d(vertices), (V, 3), for d(loss)/d(path lengths) of the last call (same shape as its output).

        The intersection derivative over the recorded hits (see module doc: silhouettes not included)."""
        if self._last is None:
            raise RuntimeError("render before asking for gradients")
        views, n = self._last
        _, grad, hit_tri, hit_n = self._buffers(*self._bufs[0])
        g = np.asarray(grad_lengths, np.float64)
        if g.ndim == 3:
            g = g[None]
        ss = self.supersample
        if g.ndim != 4 or (g.shape[0], g.shape[1], g.shape[2] * ss, g.shape[3] * ss) != grad.shape:
            raise ValueError(f"gradient shape {g.shape} differs from the output's "
                             f"{grad.shape[:2] + (grad.shape[2] // ss, grad.shape[3] // ss)}")
        g = self._soften(g)  # the zero-padded symmetric blur is its own adjoint
        if ss > 1:  # adjoint of the block mean: each sub-pixel gets its pixel's gradient / ss^2
            g = np.repeat(np.repeat(g, ss, axis=2), ss, axis=3) / ss ** 2
        grad.from_numpy(g.astype(np.float64 if self.real == self._ti.f64 else np.float32))
        self._verts.grad.fill(0)
        self._loss[None] = 0
        self._loss.grad[None] = 1
        self._hit_lengths.grad(self._verts, self._faces, self._face_mat, views, n, hit_tri, hit_n, grad, self._loss)
        return self._verts.grad.to_numpy().astype(np.float64)
