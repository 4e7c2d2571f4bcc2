"""Distance maps by rasterisation: every triangle visits the pixels it may cover.

The same sum as the BVH traversal, ``L_m = sum_i sign(d . n_i) t_i |d|``, organised
the other way round: one thread per (view, triangle) projects the triangle's corners
through the source onto the detector plane, takes the pixel centres inside the
bounding box of the three projections (widened by a twentieth of a pixel against
rounding), and runs the exact watertight ray-triangle test on each of those pixels'
rays (:mod:`engine.mesh.ray_triangle`: a pixel's ray is the same in every kernel),
adding the signed length atomically.  So the image is the
one the BVH gives (up to the order of floating-point additions), with no tree and
no refit, at a cost proportional to the triangles' projected areas instead of
rays x log(triangles): far cheaper for meshes whose triangles cover few pixels each.

A triangle with a corner on or behind the source's plane (parallel to the detector)
has no bounded projection; it is tested against every pixel (correct, slow; such
a triangle is next to the source, where no anatomy is).

Why the per-pixel hit counter ``hit_n`` is a float32 field: every Vulkan integer
atomic that Taichi 1.7.4 emits is preceded by an ``OpMemoryBarrier``, and Mesa's
lavapipe (22.3, the CPU Vulkan driver of Debian 12) mis-executes that barrier inside
a loop whose trip count differs between the lanes of a SIMD group (here: the pixels
of each triangle's box): lanes lose their remaining iterations and later stores,
which dropped one hit of an entry/exit pair on up to a quarter of the pixels (path
lengths of -290 mm for 20 mm).  Float atomics (``OpAtomicFAddEXT``) carry no barrier;
counts are exact in float32 up to 2^24.  ``tests/test_backend_patterns.py`` keeps the
patterns the kernels rely on checked on every backend.

The kernel is built once per process per float type (:func:`raster_kernel`) and takes
flat ``ti.ndarray`` arguments (layouts in :func:`raster_kernel`), so every projector
and every detector size shares one compiled kernel.
"""
import functools

from .ray_triangle import VIEW_STRIDE, ray_funcs


MARGIN = 0.05  # pixels: far above the projection's rounding error (~1e-4 px in float32), far below a pixel


@functools.lru_cache(maxsize=None)
def raster_kernel(bits: int):
    """The rasteriser for ``bits`` = 32 or 64 (float type of vertices, rays and lengths), built once per process.

    Returns
    -------
    raster : Taichi kernel
        ``raster(verts, faces, face_mat, views, n_views, rows, cols, n_mat, max_hits, out, hit_tri, hit_n,
        record) -> overflow`` (1 when a ray had more than ``max_hits`` hits to record, else 0).  All arrays
        are flat (C order):

        - ``verts`` (V * 3) real: vertex coordinates, mm, world frame;
        - ``faces`` (F * 3) i32: vertex indices, counter-clockwise seen from outside;
        - ``face_mat`` (F,) i32: material index of each face, in ``[0, n_mat)``;
        - ``views`` (n_views * 18) real: per view, source, pixel (0, 0) centre, column and row steps and the
          detector plane's dual basis (mm; :mod:`engine.mesh.ray_triangle`);
        - ``out`` (n_views, n_mat, rows, cols) real: path lengths, mm; must be zero on entry;
        - ``hit_tri`` (n_views, rows, cols, max_hits) i32: face of each recorded hit, per pixel;
        - ``hit_n`` (n_views, rows, cols) f32: hits per pixel (float: see the module doc); zero on entry.

        Arrays may be longer than these sizes (buffers kept at the largest detector seen); the rest is
        neither read nor written.  ``record`` (a compile-time bool) turns the hit recording on.
    """
    from .. import backend

    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32
    vec3 = ti.types.vector(3, real)
    ray, shear, intersect, _, vec_at = ray_funcs(bits)
    arr_r = ti.types.ndarray(dtype=real, ndim=1)
    arr_i = ti.types.ndarray(dtype=ti.i32, ndim=1)
    arr_f = ti.types.ndarray(dtype=ti.f32, ndim=1)
    vs = VIEW_STRIDE // 3

    @ti.kernel
    def raster(verts: arr_r, faces: arr_i, face_mat: arr_i, views: arr_r, n_views: ti.i32, rows: ti.i32,
               cols: ti.i32, n_mat: ti.i32, max_hits: ti.i32, out: arr_r, hit_tri: arr_i, hit_n: arr_f,
               record: ti.template()) -> ti.i32:
        overflow = 0
        for vi, f in ti.ndrange(n_views, face_mat.shape[0]):
            o, p0 = vec_at(views, vi * vs), vec_at(views, vi * vs + 1)
            du, dv = vec_at(views, vi * vs + 2), vec_at(views, vi * vs + 3)
            eu, ev = vec_at(views, vi * vs + 4), vec_at(views, vi * vs + 5)
            nrm = du.cross(dv)
            h = nrm.dot(p0 - o)  # signed distance of the detector plane from the source (times |nrm|)
            a = vec_at(verts, faces[3 * f]) - o
            b = vec_at(verts, faces[3 * f + 1]) - o
            c = vec_at(verts, faces[3 * f + 2]) - o
            u_lo, u_hi = ti.cast(cols, real), ti.cast(-1.0, real)
            v_lo, v_hi = ti.cast(rows, real), ti.cast(-1.0, real)
            bounded = True
            corner = ti.Matrix.rows([a, b, c])
            for k in ti.static(range(3)):
                x = vec3(corner[k, 0], corner[k, 1], corner[k, 2])
                den = nrm.dot(x)
                if den * h <= 0:
                    bounded = False
                else:
                    q = o + (h / den) * x - p0  # where the ray through the corner meets the detector plane
                    pu, pv = q.dot(eu), q.dot(ev)
                    u_lo, u_hi = ti.min(u_lo, pu), ti.max(u_hi, pu)
                    v_lo, v_hi = ti.min(v_lo, pv), ti.max(v_hi, pv)
            c0, c1, r0, r1 = 0, cols - 1, 0, rows - 1
            if bounded:  # pixel centres inside the box, widened by MARGIN px against rounding of the projection
                c0 = ti.cast(ti.math.clamp(ti.ceil(u_lo - MARGIN), 0.0, ti.cast(cols, real)), ti.i32)
                c1 = ti.cast(ti.math.clamp(ti.floor(u_hi + MARGIN), -1.0, ti.cast(cols - 1, real)), ti.i32)
                r0 = ti.cast(ti.math.clamp(ti.ceil(v_lo - MARGIN), 0.0, ti.cast(rows, real)), ti.i32)
                r1 = ti.cast(ti.math.clamp(ti.floor(v_hi + MARGIN), -1.0, ti.cast(rows - 1, real)), ti.i32)
            mat = face_mat[f]
            for r in range(r0, r1 + 1):
                for cc in range(c0, c1 + 1):
                    _, d = ray(views, vi, r, cc)
                    t, facing = intersect(a, b, c, shear(d))
                    if t > 0 and t <= 1:
                        ti.atomic_add(out[((vi * n_mat + mat) * rows + r) * cols + cc], facing * t * d.norm())
                        if ti.static(record):
                            pix = (vi * rows + r) * cols + cc
                            # the slot counter is a float32 array: see the module doc (Vulkan integer atomics)
                            slot = ti.cast(ti.atomic_add(hit_n[pix], 1.0), ti.i32)
                            if slot < max_hits:
                                hit_tri[pix * max_hits + slot] = f
                            else:
                                overflow = 1
        return overflow

    return raster
