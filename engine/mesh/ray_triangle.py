r"""Ray-triangle and ray-box functions shared by the mesh kernels (BVH traversal, rasteriser, adjoint).

Ray-triangle tests are watertight (Woop, Benthin & Wald, JCGT 2013): the corners,
relative to the ray origin, are sheared so the ray is the +z axis; 2D edge
functions then decide the hit, and neighbouring triangles evaluate a shared edge
as exact negatives of each other: each edge function is computed on its two corners
taken in a canonical order and signed afterwards, so both triangles run the same
products on the same operands (bitwise equal whatever the float type, and however
the compiler fuses multiply-adds); a top-left ownership rule settles edge functions
that are exactly zero, so a ray through a shared edge or vertex is counted once.
No float64 is needed (Woop et al. fall back to double for exact zeros; many GPUs
have no or slow float64, ``shaderFloat64`` on Vulkan): the same float32 formulation
runs on every backend, float64 only with ``precision=64``.  Every kernel derives a pixel's ray with the same
function (:func:`engine.geometry.rays.pixel_ray_func`, through :func:`ray_funcs`' ``ray``), so all of them see
the same edge functions for the same pixel.

Device arrays are flat (1-D) ``ti.ndarray``\ s indexed by hand, so a kernel is
compiled once per element type, never per array: a new projector, or a detector of
another size, reuses the kernels already compiled in the process (see
:mod:`engine.mesh.projector`).  The per-view ray table ``views`` is the view table of
:mod:`engine.geometry.rays` with the dual basis (``view_table(cameras, dual=True)``), flat: 18 reals per
view, rows of 3 (world frame, mm): the source, the centre of pixel (0, 0), the column step, the row step,
then the detector plane's dual basis ``eu``, ``ev``.
"""
import functools

from ..geometry.rays import VIEW_ROWS, pixel_ray_func

VIEW_STRIDE = 3 * (VIEW_ROWS + 2)  # reals per view in the flat ``views`` array: 6 rows of 3


@functools.lru_cache(maxsize=None)
def ray_funcs(bits: int):
    """Taichi functions ``(ray, shear, intersect, slab, vec_at)`` for ``bits`` = 32 or 64, built once per process.

    ``vec_at(a, i)`` reads the 3-vector at flat offset ``3 i`` of a flat array ``a`` (vertices, boxes);
    ``ray(views, vi, r, c)`` returns the source ``o`` and the vector ``d`` from the source to the centre of
    pixel (row ``r``, column ``c``) of view ``vi`` (mm, world frame): THE ray of that pixel in every kernel
    (:func:`engine.geometry.rays.pixel_ray_func` on the view's rows).
    """
    from .. import backend

    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32
    vec3 = ti.types.vector(3, real)
    pixel_ray = pixel_ray_func(bits)

    @ti.func
    def vec_at(a: ti.template(), i):
        # the 3-vector at flat offset 3 i of a flat array
        return vec3(a[3 * i], a[3 * i + 1], a[3 * i + 2])

    @ti.func
    def ray(views: ti.template(), vi, r, c):
        # source and source->pixel-centre vector of pixel (r, c) of view vi: THE ray of that pixel
        base = vi * (VIEW_STRIDE // 3)
        return pixel_ray(vec_at(views, base), vec_at(views, base + 1), vec_at(views, base + 2),
                         vec_at(views, base + 3), r, c)

    @ti.func
    def owned(ex, ey, s):
        # top-left rule on the edge vector (ex, ey), oriented by the triangle's facing s
        ex, ey = ex * s, ey * s
        return ey > 0 or (ey == 0 and ex < 0)

    @ti.func
    def edge(p, q):
        # the 2D edge function p.x q.y - p.y q.x of two sheared corners, evaluated on the pair taken in a
        # canonical order (lexicographic in x, y) and signed after: the triangle on the other side of a shared
        # edge evaluates the same products on the same operands, so edge(q, p) == -edge(p, q) to the bit,
        # whatever the float type and however the compiler fuses multiply-adds
        first = p[0] < q[0] or (p[0] == q[0] and p[1] < q[1])
        x0, y0 = ti.select(first, p[0], q[0]), ti.select(first, p[1], q[1])
        x1, y1 = ti.select(first, q[0], p[0]), ti.select(first, q[1], p[1])
        return ti.select(first, ti.cast(1.0, real), ti.cast(-1.0, real)) * (x0 * y1 - y0 * x1)

    @ti.func
    def intersect(a, b, c, m):
        # returns (t, facing): t in units of |d| (-1 for a miss); facing = sign(d . n) for the
        # counter-clockwise normal n (the sheared frame keeps handedness, so it is the sign of det)
        # the triangle's corners relative to the ray origin, sheared so the ray is the +z axis (rows of m)
        pa, pb, pc = m @ a, m @ b, m @ c
        # edge functions, exactly antisymmetric across a shared edge (see edge), so a ray through a shared
        # edge sees an exact 0 on both sides and the top-left rule gives the hit to one of them (Woop et al.)
        u = edge(pc, pb)
        v = edge(pa, pc)
        w = edge(pb, pa)
        t = ti.cast(-1.0, real)  # typed: a local keeps the type of its first value
        facing = ti.cast(1.0, real)
        if not ((u < 0 or v < 0 or w < 0) and (u > 0 or v > 0 or w > 0)):
            det = u + v + w
            if det != 0:
                s = ti.cast(1.0, real) if det > 0 else ti.cast(-1.0, real)
                facing = -s
                ok = True
                if u == 0:
                    ok = ok and owned(pb[0] - pc[0], pb[1] - pc[1], s)
                if v == 0:
                    ok = ok and owned(pc[0] - pa[0], pc[1] - pa[1], s)
                if w == 0:
                    ok = ok and owned(pa[0] - pb[0], pa[1] - pb[1], s)
                if ok:
                    # (u za + v zb + w zc) / det as za + a small correction: one rounding of za (the
                    # corner's distance along the ray) dominates, as when computed in float64 and rounded
                    t = pa[2] + (v * (pb[2] - pa[2]) + w * (pc[2] - pa[2])) / det
        return t, facing

    @ti.func
    def slab(lo, hi, o, inv, neg):
        # does the segment t in [0, 1] cross the box? near/far planes picked by the ray's direction signs
        near = (ti.select(neg, hi, lo) - o) * inv
        far = (ti.select(neg, lo, hi) - o) * inv
        return ti.max(near.max(), 0.0) <= ti.min(far.min(), 1.0)

    @ti.func
    def shear(d):
        # Woop et al.: kz = dominant axis of d, (kx, ky) the others with the winding kept; rows map a
        # point relative to the origin to (x - sx z, y - sy z, sz z) in that permuted frame
        kz = 0
        if ti.abs(d[1]) > ti.abs(d[kz]):
            kz = 1
        if ti.abs(d[2]) > ti.abs(d[kz]):
            kz = 2
        kx = (kz + 1) % 3
        ky = (kx + 1) % 3
        if d[kz] < 0:
            kx, ky = ky, kx
        m = ti.Matrix.zero(real, 3, 3)
        for a in ti.static(range(3)):
            if a == kx:
                m[0, a] = 1.0
            if a == ky:
                m[1, a] = 1.0
            if a == kz:
                m[0, a] = -d[kx] / d[kz]
                m[1, a] = -d[ky] / d[kz]
                m[2, a] = 1.0 / d[kz]
        return m

    return ray, shear, intersect, slab, vec_at
