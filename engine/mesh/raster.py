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
"""


MARGIN = 0.05  # pixels: far above the projection's rounding error (~1e-4 px in float32), far below a pixel


def make_raster_kernel(ti, real, n_mat):
    """A Taichi kernel ``raster(verts, faces, face_mat, views, n_views, out, hit_tri, hit_n, record) -> overflow``.

    ``views`` rows per view: source, pixel (0, 0) centre, column step, row step (mm), then the dual basis of
    the detector plane (``eu . du = 1``, ``eu . dv = 0``, ``ev . dv = 1``, ``ev . du = 0``).  ``out`` and
    ``hit_n`` must be zero on entry.
    """
    from .ray_triangle import make_ray_funcs

    vec3 = ti.types.vector(3, real)
    ray, shear, intersect, _ = make_ray_funcs(ti, real)

    @ti.kernel
    def raster(verts: ti.template(), faces: ti.template(), face_mat: ti.template(),
               views: ti.types.ndarray(dtype=vec3, ndim=2), n_views: ti.i32, out: ti.template(),
               hit_tri: ti.template(), hit_n: ti.template(), record: ti.template()) -> ti.i32:
        rows, cols = out.shape[2], out.shape[3]
        overflow = 0
        for vi, f in ti.ndrange(n_views, faces.shape[0]):
            o, p0 = views[vi, 0], views[vi, 1]
            nrm = views[vi, 2].cross(views[vi, 3])
            h = nrm.dot(p0 - o)  # signed distance of the detector plane from the source (times |nrm|)
            i = faces[f]
            corner = ti.Matrix.rows([verts[i[0]] - o, verts[i[1]] - o, verts[i[2]] - o])
            u_lo, u_hi = ti.cast(cols, real), ti.cast(-1.0, real)
            v_lo, v_hi = ti.cast(rows, real), ti.cast(-1.0, real)
            bounded = True
            for k in ti.static(range(3)):
                x = vec3(corner[k, 0], corner[k, 1], corner[k, 2])
                den = nrm.dot(x)
                if den * h <= 0:
                    bounded = False
                else:
                    q = o + (h / den) * x - p0  # where the ray through the corner meets the detector plane
                    pu, pv = q.dot(views[vi, 4]), q.dot(views[vi, 5])
                    u_lo, u_hi = ti.min(u_lo, pu), ti.max(u_hi, pu)
                    v_lo, v_hi = ti.min(v_lo, pv), ti.max(v_hi, pv)
            c0, c1, r0, r1 = 0, cols - 1, 0, rows - 1
            if bounded:  # pixel centres inside the box, widened by MARGIN px against rounding of the projection
                c0 = ti.cast(ti.math.clamp(ti.ceil(u_lo - MARGIN), 0.0, ti.cast(cols, real)), ti.i32)
                c1 = ti.cast(ti.math.clamp(ti.floor(u_hi + MARGIN), -1.0, ti.cast(cols - 1, real)), ti.i32)
                r0 = ti.cast(ti.math.clamp(ti.ceil(v_lo - MARGIN), 0.0, ti.cast(rows, real)), ti.i32)
                r1 = ti.cast(ti.math.clamp(ti.floor(v_hi + MARGIN), -1.0, ti.cast(rows - 1, real)), ti.i32)
            a = vec3(corner[0, 0], corner[0, 1], corner[0, 2])
            b = vec3(corner[1, 0], corner[1, 1], corner[1, 2])
            c = vec3(corner[2, 0], corner[2, 1], corner[2, 2])
            for r in range(r0, r1 + 1):
                for cc in range(c0, c1 + 1):
                    _, d = ray(views, vi, r, cc)
                    t, facing = intersect(a, b, c, shear(d))
                    if t > 0 and t <= 1:
                        ti.atomic_add(out[vi, face_mat[f], r, cc], facing * t * d.norm())
                        if ti.static(record):
                            # the slot counter is a float32 field: see the module doc (Vulkan integer atomics)
                            slot = ti.cast(ti.atomic_add(hit_n[vi, r, cc], 1.0), ti.i32)
                            if slot < hit_tri.shape[3]:
                                hit_tri[vi, r, cc, slot] = f
                            else:
                                overflow = 1
        return overflow

    return raster
