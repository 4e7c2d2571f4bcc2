"""The ray-marching kernels of :class:`engine.volume.VolumeProjector`, compiled once per process.

Kernels take Taichi ndarrays, whose template key is their dtype and dimension, not their
identity (a field passed as ``ti.template()`` compiles a new kernel for every new field),
so a second projector of the same kind reuses the compiled kernels: they are cached by
what changes the code (materials, storage type, number of bricks).

**Storage.** Each brick is a flat (1-D) array of voxels ``(k, j, i)``, ``i`` fastest, all
materials of a voxel side by side (``M`` values: one cache line per corner), indexed by
hand: a sample computes one offset and reaches its other corners by fixed strides.
Flat scalar arrays also because Taichi 1.7.4 never frees vector ndarrays.

**Bricks.** Vulkan guarantees storage buffers of only 128 MiB (``maxStorageBufferRange``;
Mesa's lavapipe has exactly that, many GPUs more, Taichi does not expose the limit), and a
chest CT of 512 x 512 x 133 voxels with three float32 material channels is 418 MB.  So on
Vulkan the volume is cut along its slowest index ``k`` into bricks of at most
:data:`VULKAN_BUFFER_BYTES`, each its own ndarray: brick ``b`` holds slices
``b*S .. b*S + S`` (``S + 1`` slices, one shared with the next brick), so both ``k``
corners of any trilinear cell lie in one brick, the cell's brick is
``min(k0 // S, n - 1)``, and the samples are the ones a single buffer would give, to the
bit.  On the CPU and CUDA one brick holds everything.  At most :data:`MAX_BRICKS` bricks
(2 GiB of volume on Vulkan; use ``storage="f16"`` for twice that).

Sampling (see :mod:`engine.volume.projector`): :func:`planes_kernel` (default) samples each
ray on the voxel-centre planes across its dominant axis (bilinear, 4 voxels a sample) and
integrates by the trapezoid rule; :func:`march_kernel` samples at a fixed step (midpoint
rule, trilinear), with empty-space skipping over uniform 8^3 blocks (exact).  Both clamp
the interpolation to the edge voxels in the outer half voxel.
"""
import functools

from .. import backend
from ..geometry.rays import pixel_ray_func

BLOCK = 8  # voxels per empty-space-skipping block edge
MAX_BRICKS = 16
VULKAN_BUFFER_BYTES = 1 << 27  # 128 MiB: the smallest maxStorageBufferRange Vulkan allows


def brick_slices(nk: int, nj: int, ni: int, bytes_per_voxel: int, limit: int | None) -> int:
    """Slices ``S`` per brick step (a brick holds ``S + 1``): all of ``nk - 1`` when there is no limit.

    Raises ``ValueError`` when one slice pair already exceeds ``limit`` or more than
    :data:`MAX_BRICKS` bricks would be needed.
    """
    if limit is None:
        return max(nk - 1, 1)
    slice_bytes = nj * ni * bytes_per_voxel
    s = limit // slice_bytes - 1
    if s < 1:
        raise ValueError(f"two slices of {nj} x {ni} voxels ({2 * slice_bytes / 2**20:.0f} MiB) exceed the "
                         f"device's {limit / 2**20:.0f} MiB buffer limit: downsample the volume")
    s = min(s, max(nk - 1, 1))
    n = -(-(nk - 1) // s)
    if n > MAX_BRICKS:
        raise ValueError(f"the volume ({nk} x {nj} x {ni} voxels, {nk * slice_bytes / 2**30:.2f} GiB on the "
                         f"device) needs {n} buffers of at most {limit / 2**20:.0f} MiB, more than {MAX_BRICKS}: "
                         "use storage='f16', fewer materials, or downsample")
    return s


def n_bricks(nk: int, s: int) -> int:
    """Bricks for ``nk`` slices at ``s`` slices per brick step."""
    return max(1, -(-(nk - 1) // s))


@functools.lru_cache(maxsize=None)
def _voxel_funcs(n_mat: int, storage: str, nb: int):
    """``(fetch, brick_of)``: ``fetch(bricks, kb, o)`` the ``n_mat`` values at flat offset ``o`` of brick ``kb``,
    in the arithmetic type; ``brick_of(k, s)`` the brick that holds slices ``k`` and ``k + 1``."""
    ti = backend.ti_module()
    if not 1 <= nb <= MAX_BRICKS:
        raise ValueError(f"nb must be in 1..{MAX_BRICKS}, got {nb}")
    real = _types(storage)[1]
    vec_m = ti.types.vector(n_mat, real)

    @ti.func
    def load(brick: ti.template(), o):
        return vec_m([ti.cast(brick[o + m], real) for m in ti.static(range(n_mat))])

    @ti.func
    def brick_of(k, s):
        # the brick holding slices k and k + 1 (0 without a division when there is one brick)
        kb = 0
        if ti.static(nb > 1):
            kb = ti.min(k // s, nb - 1)
        return kb

    @ti.func
    def fetch(bricks: ti.template(), kb, o):
        v = vec_m(0.0)
        if ti.static(nb == 1):
            v = load(bricks[0], o)
        else:
            for q in ti.static(range(nb)):
                if kb == q:
                    v = load(bricks[q], o)
        return v

    return fetch, brick_of


def _types(storage: str):
    """``(elem, real)``: the storage element type and the arithmetic type (float64 only for ``"f64"``)."""
    ti = backend.ti_module()
    elem = {"f16": ti.f16, "f32": ti.f32, "f64": ti.f64}[storage]
    return elem, (ti.f64 if storage == "f64" else ti.f32)


def _brick_type(storage: str):
    ti = backend.ti_module()
    return ti.types.ndarray(dtype=_types(storage)[0], ndim=1)


def _pixel_ray(storage: str):
    """The pixel-ray function of :mod:`engine.geometry.rays` in the arithmetic type of ``storage``."""
    return pixel_ray_func(64 if storage == "f64" else 32)


@functools.lru_cache(maxsize=None)
def march_kernel(n_mat: int, storage: str, nb: int):
    """The fixed-step kernel for ``n_mat`` materials stored as ``storage`` ("f32"/"f16") in ``nb`` bricks.

    ``march(b0, ..., b15, s, ni, nj, nk, blocks, out, views, n_views, row0, lin, step_mm, skip)``: bricks
    are flat arrays (module doc), those beyond ``nb`` placeholders (any array of the type); ``s`` slices
    per brick step; ``ni, nj, nk`` the grid; ``blocks`` the uniform-block table (u8, k, j, i); ``out``
    (n, M, rows, cols) float32 g/cm^2 for detector rows ``row0 .. row0 + rows - 1``; ``views`` (n, 4, 3):
    the view table of :mod:`engine.geometry.rays` (source, pixel (0, 0) centre, column and row steps) in
    voxel-index coordinates, whose pixel rays every kernel takes from ``pixel_ray``; ``lin`` (3, 3): the
    columns of the volume's ``world_from_index`` linear part (mm per index unit).
    """
    ti = backend.ti_module()
    fetch, brick_of = _voxel_funcs(n_mat, storage, nb)
    clip, _ = _clip(_types(storage)[1])
    real = _types(storage)[1]
    vec_m = ti.types.vector(n_mat, real)
    vec3 = ti.types.vector(3, real)
    vol_t = _brick_type(storage)
    pixel_ray = _pixel_ray(storage)

    @ti.kernel
    def march(b0: vol_t, b1: vol_t, b2: vol_t, b3: vol_t, b4: vol_t, b5: vol_t, b6: vol_t, b7: vol_t,
              b8: vol_t, b9: vol_t, b10: vol_t, b11: vol_t, b12: vol_t, b13: vol_t, b14: vol_t, b15: vol_t,
              s: ti.i32, ni: ti.i32, nj: ti.i32, nk: ti.i32, blocks: ti.types.ndarray(dtype=ti.u8, ndim=3),
              out: ti.types.ndarray(dtype=real, ndim=4), views: ti.types.ndarray(dtype=vec3, ndim=2),
              n_views: ti.i32, row0: ti.i32, lin: ti.types.ndarray(dtype=vec3, ndim=1), step_mm: real,
              skip: ti.i32):
        bricks = ti.static([b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15])
        rows, cols = out.shape[2], out.shape[3]
        hi = vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = vec3(-0.5, -0.5, -0.5)
        top = vec3(ni - 1.0, nj - 1.0, nk - 1.0)
        last = ti.math.ivec3(ni - 1, nj - 1, nk - 1)
        si, sj, sk = n_mat, ni * n_mat, nj * ni * n_mat  # flat strides of i, j, k
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src, d = pixel_ray(views[v, 0], views[v, 1], views[v, 2], views[v, 3], r + row0, c)
            t0, t1 = clip(src, d, lo, hi)
            acc = vec_m(0.0)
            if t1 > t0:
                dw = d[0] * lin[0] + d[1] * lin[1] + d[2] * lin[2]  # world mm per unit t
                seg_mm = (t1 - t0) * dw.norm()
                n = ti.max(1, ti.cast(ti.ceil(seg_mm / step_mm - 1e-4), ti.i32))
                dt = (t1 - t0) / n
                p0 = src + (t0 + 0.5 * dt) * d
                dp = dt * d
                k = 0
                cell = ti.math.ivec3(-1, -1, -1)  # the trilinear cell whose 8 corners are held below
                v000 = vec_m(0.0)
                v001 = vec_m(0.0)
                v010 = vec_m(0.0)
                v011 = vec_m(0.0)
                v100 = vec_m(0.0)
                v101 = vec_m(0.0)
                v110 = vec_m(0.0)
                v111 = vec_m(0.0)
                while k < n:
                    p = ti.min(ti.max(p0 + ti.cast(k, real) * dp, 0.0), top)
                    b = ti.cast(p, ti.i32) // BLOCK
                    if skip and blocks[b[2], b[1], b[0]] == 1:
                        # samples left in this block: up to where p leaves [b*B, b*B + B]
                        texit = ti.cast(1e30, real)
                        for a in ti.static(range(3)):
                            if dp[a] > 1e-12:
                                texit = ti.min(texit, (ti.cast(b[a] * BLOCK + BLOCK, real) - (p0[a] + ti.cast(k, real) * dp[a])) / dp[a])
                            elif dp[a] < -1e-12:
                                texit = ti.min(texit, (ti.cast(b[a] * BLOCK, real) - (p0[a] + ti.cast(k, real) * dp[a])) / dp[a])
                        cnt = ti.max(1, ti.min(n - k, ti.cast(ti.floor(texit), ti.i32) + 1))
                        i0 = ti.min(b * BLOCK, last)
                        kb = brick_of(i0[2], s)
                        acc += ti.cast(cnt, real) * fetch(bricks, kb, (i0[2] - kb * s) * sk + i0[1] * sj + i0[0] * si)
                        k += cnt
                    else:
                        i0 = ti.max(ti.min(ti.cast(p, ti.i32), last - 1), 0)
                        if i0[0] != cell[0] or i0[1] != cell[1] or i0[2] != cell[2]:
                            # consecutive samples (half a voxel apart) mostly share a cell: load on change only
                            kb = brick_of(i0[2], s)
                            o = (i0[2] - kb * s) * sk + i0[1] * sj + i0[0] * si
                            v000 = fetch(bricks, kb, o)
                            v001 = fetch(bricks, kb, o + si)
                            v010 = fetch(bricks, kb, o + sj)
                            v011 = fetch(bricks, kb, o + sj + si)
                            v100 = fetch(bricks, kb, o + sk)
                            v101 = fetch(bricks, kb, o + sk + si)
                            v110 = fetch(bricks, kb, o + sk + sj)
                            v111 = fetch(bricks, kb, o + sk + sj + si)
                            cell = i0
                        f = p - ti.cast(i0, real)
                        c00 = v000 + (v001 - v000) * f[0]
                        c01 = v010 + (v011 - v010) * f[0]
                        c10 = v100 + (v101 - v100) * f[0]
                        c11 = v110 + (v111 - v110) * f[0]
                        c0 = c00 + (c01 - c00) * f[1]
                        c1 = c10 + (c11 - c10) * f[1]
                        acc += c0 + (c1 - c0) * f[2]
                        k += 1
                acc *= seg_mm / n * 0.1  # g/cm^3 * mm -> g/cm^2
            for m in ti.static(range(n_mat)):
                out[v, m, r, c] = acc[m]

    return march


@functools.lru_cache(maxsize=None)
def _clip(real=None):
    """``(clip, clip_faces)``: Taichi functions clipping a ray to a box (see their comments), in type ``real``."""
    ti = backend.ti_module()
    real = real or ti.f32

    @ti.func
    def clip_faces(src, d, lo, hi):
        # the ray src + t d, t in [0, 1], clipped to the box [lo, hi]: (t0, t1), empty when t1 <= t0, and the
        # axis of the box face that sets t0 and t1 (-1 where the bound 0 or 1 does)
        t0, t1 = ti.cast(0.0, real), ti.cast(1.0, real)
        f0, f1 = -1, -1
        for a in ti.static(range(3)):
            if ti.abs(d[a]) < 1e-12:
                if src[a] < lo[a] or src[a] > hi[a]:
                    t1 = -1.0
            else:
                ta = (lo[a] - src[a]) / d[a]
                tb = (hi[a] - src[a]) / d[a]
                if ti.min(ta, tb) > t0:
                    t0 = ti.min(ta, tb)
                    f0 = a
                if ti.max(ta, tb) < t1:
                    t1 = ti.max(ta, tb)
                    f1 = a
        return t0, t1, f0, f1

    @ti.func
    def clip(src, d, lo, hi):
        # the ray src + t d, t in [0, 1], clipped to the box [lo, hi]: (t0, t1), empty when t1 <= t0
        t0, t1, _, _ = clip_faces(src, d, lo, hi)
        return t0, t1

    return clip, clip_faces


@functools.lru_cache(maxsize=None)
def upload_kernel(storage: str):
    """``upload(brick, n_mat, m, slab)``: material ``m`` of every voxel of a flat brick from ``slab`` (I, J, K')
    in the arithmetic type (float32; float64 for ``"f64"``; K' = the brick's slices), converted to the storage
    type."""
    ti = backend.ti_module()
    elem, real = _types(storage)

    @ti.kernel
    def upload(brick: ti.types.ndarray(dtype=elem, ndim=1), n_mat: ti.i32, m: ti.i32,
               slab: ti.types.ndarray(dtype=real, ndim=3)):
        ni, nj = slab.shape[0], slab.shape[1]
        for k, j, i in ti.ndrange(slab.shape[2], nj, ni):
            brick[((k * nj + j) * ni + i) * n_mat + m] = ti.cast(slab[i, j, k], elem)

    return upload


@functools.lru_cache(maxsize=None)
def _plane_funcs(storage: str, nb: int):
    """``(main_axis, cell)``, the Taichi functions plane sampling and its adjoint share.

    ``main_axis(d)``: the index axis along which ``d`` moves fastest (ties to the lower axis).
    ``cell(s, A, n, p, last, st)``: the bilinear cell on the plane ``a = n`` of axis ``A`` at the point
    ``p`` (its two other coordinates, clamped to the edge voxels): flat offset, brick, fractions along the
    other two axes ``B < C``, and 1 / 0 for an unclamped / clamped ``p[B]`` and ``p[C]``.
    """
    ti = backend.ti_module()
    real = _types(storage)[1]

    @ti.func
    def main_axis(d):
        ad = ti.abs(d)
        ax = 0
        if ad[1] > ad[0] and ad[1] >= ad[2]:
            ax = 1
        elif ad[2] > ad[0] and ad[2] > ad[1]:
            ax = 2
        return ax

    @ti.func
    def cell(s, A: ti.template(), n, p, last, st):
        B, C = ti.static([x for x in range(3) if x != A])
        b = ti.min(ti.max(p[B], 0.0), ti.cast(last[B], real))
        c = ti.min(ti.max(p[C], 0.0), ti.cast(last[C], real))
        ib = ti.min(ti.cast(b, ti.i32), last[B] - 1)
        ic = ti.min(ti.cast(c, ti.i32), last[C] - 1)
        kb = 0
        if ti.static(nb > 1):  # the brick of the lowest k of the 4 corners (C is axis 2 unless A is)
            kb = ti.min((ic if ti.static(A != 2) else n) // s, nb - 1)
        o = n * st[A] + ib * st[B] + ic * st[C] - kb * s * st[2]
        inb = ti.cast(1.0, real) if p[B] == b else ti.cast(0.0, real)
        inc = ti.cast(1.0, real) if p[C] == c else ti.cast(0.0, real)
        return o, kb, b - ti.cast(ib, real), c - ti.cast(ic, real), inb, inc

    return main_axis, cell


@functools.lru_cache(maxsize=None)
def planes_kernel(n_mat: int, storage: str, nb: int):
    """The plane-sampling kernel (the default sampling): arguments as :func:`march_kernel`'s less
    ``blocks``, ``step_mm`` and ``skip``.

    Each ray is sampled where it crosses the planes of voxel centres normal to its dominant index axis
    ``A`` (the axis along which it moves fastest in index space: one plane per voxel, as Joseph's
    projector does).  On such a plane the trilinear interpolant is bilinear in the other two axes, so a
    sample reads 4 voxels, not 8.  The samples and the two ends ``a0 < a1`` of the clipped segment
    (trilinear there) are the nodes of the trapezoid rule over the segment, in units of ``A``:

        I = sum_n f(n) - (f(n_lo) + f(n_hi)) / 2 + (f(a0) + f(n_lo)) / 2 (n_lo - a0) + (f(n_hi) + f(a1)) / 2 (a1 - n_hi)

    over the planes ``n_lo..n_hi`` inside the segment, times ``|d|_mm / |d_A|`` (mm per plane).  The
    interpolant is piecewise cubic along the ray, cut where the ray crosses a voxel-centre plane of any
    axis; between two ``A`` planes each other axis adds at most one cut (its index moves by at most 1 per
    plane).  The rule is exact for rays along an axis; ``tests/test_projector.py`` bounds it against the
    exact integral otherwise.
    """
    ti = backend.ti_module()
    fetch, brick_of = _voxel_funcs(n_mat, storage, nb)
    clip, _ = _clip(_types(storage)[1])
    main_axis, cell = _plane_funcs(storage, nb)
    real = _types(storage)[1]
    vec_m = ti.types.vector(n_mat, real)
    vec3 = ti.types.vector(3, real)
    vol_t = _brick_type(storage)
    pixel_ray = _pixel_ray(storage)

    @ti.func
    def lerp4(bricks: ti.template(), kb, o, sb, sc, fb, fc):
        # bilinear interpolation between the voxels at offsets o, o + sb, o + sc, o + sb + sc of brick kb
        v00 = fetch(bricks, kb, o)
        v10 = fetch(bricks, kb, o + sb)
        v01 = fetch(bricks, kb, o + sc)
        v11 = fetch(bricks, kb, o + sb + sc)
        lo = v00 + (v10 - v00) * fb
        hi = v01 + (v11 - v01) * fb
        return lo + (hi - lo) * fc

    @ti.func
    def bilinear(bricks: ti.template(), s, A: ti.template(), n, p, last, st):
        # the interpolant on the plane a = n (an integer voxel index along axis A) at the point p (its other
        # two coordinates; p[A] is not read), clamped to the edge voxels; st = the flat strides of i, j, k
        B, C = ti.static([x for x in range(3) if x != A])
        o, kb, fb, fc, _, _ = cell(s, A, n, p, last, st)
        return lerp4(bricks, kb, o, st[B], st[C], fb, fc)

    @ti.func
    def trilinear(bricks: ti.template(), s, A: ti.template(), p, last, st):
        a = ti.min(ti.max(p[A], 0.0), ti.cast(last[A], real))
        ia = ti.min(ti.cast(a, ti.i32), last[A] - 1)
        fa = a - ti.cast(ia, real)
        f0 = bilinear(bricks, s, A, ia, p, last, st)
        f1 = bilinear(bricks, s, A, ia + 1, p, last, st)
        return f0 + (f1 - f0) * fa

    @ti.kernel
    def planes(b0: vol_t, b1: vol_t, b2: vol_t, b3: vol_t, b4: vol_t, b5: vol_t, b6: vol_t, b7: vol_t,
               b8: vol_t, b9: vol_t, b10: vol_t, b11: vol_t, b12: vol_t, b13: vol_t, b14: vol_t, b15: vol_t,
               s: ti.i32, ni: ti.i32, nj: ti.i32, nk: ti.i32, out: ti.types.ndarray(dtype=real, ndim=4),
               views: ti.types.ndarray(dtype=vec3, ndim=2), n_views: ti.i32, row0: ti.i32,
               lin: ti.types.ndarray(dtype=vec3, ndim=1)):
        bricks = ti.static([b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15])
        rows, cols = out.shape[2], out.shape[3]
        hi = vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = vec3(-0.5, -0.5, -0.5)
        last = ti.math.ivec3(ni - 1, nj - 1, nk - 1)
        st = ti.math.ivec3(n_mat, ni * n_mat, nj * ni * n_mat)  # flat strides of i, j, k
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src, d = pixel_ray(views[v, 0], views[v, 1], views[v, 2], views[v, 3], r + row0, c)
            t0, t1 = clip(src, d, lo, hi)
            acc = vec_m(0.0)
            if t1 > t0:
                ax = main_axis(d)
                dw = d[0] * lin[0] + d[1] * lin[1] + d[2] * lin[2]  # world mm per unit t
                for A in ti.static(range(3)):
                    if ax == A:
                        slope = d / d[A]  # index units per unit of a; slope[A] = 1
                        pa = src + t0 * d
                        pb = src + t1 * d
                        if pa[A] > pb[A]:
                            pa, pb = pb, pa
                        a0, a1 = pa[A], pb[A]
                        n_lo = ti.max(ti.cast(ti.ceil(a0), ti.i32), 0)
                        n_hi = ti.min(ti.cast(ti.floor(a1), ti.i32), last[A])
                        f0 = trilinear(bricks, s, A, pa, last, st)
                        f1 = trilinear(bricks, s, A, pb, last, st)
                        if n_lo > n_hi:  # no plane inside: one trapezoid
                            acc = 0.5 * (f0 + f1) * (a1 - a0)
                        else:
                            base = src - src[A] * slope  # the ray's point on the plane a = 0
                            g_lo = bilinear(bricks, s, A, n_lo, base + ti.cast(n_lo, real) * slope, last, st)
                            g_hi = bilinear(bricks, s, A, n_hi, base + ti.cast(n_hi, real) * slope, last, st)
                            acc = 0.5 * (f0 + g_lo) * (ti.cast(n_lo, real) - a0) \
                                + 0.5 * (g_hi + f1) * (a1 - ti.cast(n_hi, real)) - 0.5 * (g_lo + g_hi)
                            for n in range(n_lo, n_hi + 1):
                                acc += bilinear(bricks, s, A, n, base + ti.cast(n, real) * slope, last, st)
                        acc *= dw.norm() / ti.abs(d[A]) * 0.1  # per plane -> per mm; g/cm^3 mm -> g/cm^2
            for m in ti.static(range(n_mat)):
                out[v, m, r, c] = acc[m]

    return planes


@functools.lru_cache(maxsize=None)
def planes_vjp_kernel(n_mat: int, storage: str, nb: int, density: bool):
    """The adjoint of :func:`planes_kernel`: per ray, the gradient of ``sum_m g_m I_m`` with respect to the ray's
    source ``s`` and vector ``d`` (voxel-index coordinates), and, with ``density``, the back-projection of ``g``
    into the voxels (one brick only: ``nb == 1``).

    ``planes_vjp(b0, ..., b15, s, ni, nj, nk, grad, views, n_views, row0, lin, gray, gvol)``: arguments as
    :func:`planes_kernel`'s; ``grad`` (n, M, rows, cols) the incoming gradient (per g/cm^2); ``gray``
    (n, rows, cols, 6) receives ``(dL/ds, dL/dd)``; ``gvol`` (flat, the volume's layout, zero on entry)
    accumulates ``dL/d density`` (per g/cm^3) when ``density``, else is not touched.

    Hand-written (reverse mode through the forward's formula, see :func:`planes_kernel`): with
    ``I = K J``, ``K = 0.1 |d|_mm / |d_A|``, the trapezoid sum ``J`` depends on the ray through the plane
    samples ``q_n = s + tau_n d`` (``tau_n = (n - s_A) / d_A``: ``dq_n/ds = P``, ``dq_n/dd = tau_n P``,
    ``P = I - (d / d_A) e_A^T``), through the ends of the clipped segment (``s + t d`` with ``t`` set by the
    box face of axis ``c``: ``P_c`` likewise, or ``t`` = 0 / 1), and through ``K``.  The bilinear and
    trilinear interpolants are differentiated piecewise (zero across a clamped coordinate), so the result
    is the exact derivative of the forward wherever it is differentiable (not on a voxel-centre plane, where
    the interpolant has a kink; not where a ray's plane count or main axis changes).
    """
    ti = backend.ti_module()
    if density and nb != 1:
        raise ValueError("density gradients need the volume in one device buffer (nb == 1)")
    fetch, _ = _voxel_funcs(n_mat, storage, nb)
    _, clip_faces = _clip(_types(storage)[1])
    main_axis, cell = _plane_funcs(storage, nb)
    real = _types(storage)[1]
    vec_m = ti.types.vector(n_mat, real)
    vec3 = ti.types.vector(3, real)
    vol_t = _brick_type(storage)
    pixel_ray = _pixel_ray(storage)

    @ti.func
    def bil_grad(bricks: ti.template(), s, A: ti.template(), n, p, last, st):
        # value and derivatives along the plane's two axes (B, C) of the bilinear interpolant (vectors over m)
        B, C = ti.static([x for x in range(3) if x != A])
        o, kb, fb, fc, inb, inc = cell(s, A, n, p, last, st)
        v00 = fetch(bricks, kb, o)
        v10 = fetch(bricks, kb, o + st[B])
        v01 = fetch(bricks, kb, o + st[C])
        v11 = fetch(bricks, kb, o + st[B] + st[C])
        lo = v00 + (v10 - v00) * fb
        hi = v01 + (v11 - v01) * fb
        db = ((v10 - v00) * (1.0 - fc) + (v11 - v01) * fc) * inb
        return lo + (hi - lo) * fc, db, (hi - lo) * inc

    @ti.func
    def bil_scatter(gvol: ti.template(), s, A: ti.template(), n, p, last, st, w):
        # gvol[corner, m] += w[m] x the corner's bilinear weight
        B, C = ti.static([x for x in range(3) if x != A])
        o, _, fb, fc, _, _ = cell(s, A, n, p, last, st)
        for m in ti.static(range(n_mat)):
            ti.atomic_add(gvol[o + m], w[m] * (1.0 - fb) * (1.0 - fc))
            ti.atomic_add(gvol[o + st[B] + m], w[m] * fb * (1.0 - fc))
            ti.atomic_add(gvol[o + st[C] + m], w[m] * (1.0 - fb) * fc)
            ti.atomic_add(gvol[o + st[B] + st[C] + m], w[m] * fb * fc)

    @ti.func
    def tri_grad(bricks: ti.template(), s, A: ti.template(), p, last, st, g):
        # value (vector over m) and the g-weighted gradient (3-vector) of the trilinear interpolant at p
        B, C = ti.static([x for x in range(3) if x != A])
        a = ti.min(ti.max(p[A], 0.0), ti.cast(last[A], real))
        ia = ti.min(ti.cast(a, ti.i32), last[A] - 1)
        fa = a - ti.cast(ia, real)
        ina = ti.cast(1.0, real) if p[A] == a else ti.cast(0.0, real)
        v0, b0, c0 = bil_grad(bricks, s, A, ia, p, last, st)
        v1, b1, c1 = bil_grad(bricks, s, A, ia + 1, p, last, st)
        grad = vec3(0.0)
        grad[A] = g.dot(v1 - v0) * ina
        grad[B] = g.dot(b0 + (b1 - b0) * fa)
        grad[C] = g.dot(c0 + (c1 - c0) * fa)
        return v0 + (v1 - v0) * fa, grad

    @ti.func
    def tri_scatter(gvol: ti.template(), s, A: ti.template(), p, last, st, w):
        a = ti.min(ti.max(p[A], 0.0), ti.cast(last[A], real))
        ia = ti.min(ti.cast(a, ti.i32), last[A] - 1)
        fa = a - ti.cast(ia, real)
        bil_scatter(gvol, s, A, ia, p, last, st, w * (1.0 - fa))
        bil_scatter(gvol, s, A, ia + 1, p, last, st, w * fa)

    @ti.func
    def end_chain(gam, d, t, face, fixed_t):
        # (dL/ds, dL/dd) of a segment end p = s + t d with dL/dp = gam: t set by the box face of axis `face`
        # (t = (L - s_c) / d_c: dp/ds = P_c, dp/dd = t P_c), or the fixed bound fixed_t (0: p = s; 1: p = s + d)
        gs, gd = gam, vec3(0.0)
        if face >= 0:
            for q in ti.static(range(3)):
                if face == q:
                    gs[q] -= d.dot(gam) / d[q]
            gd = t * gs
        elif fixed_t == 1:
            gd = gam
        return gs, gd

    @ti.kernel
    def planes_vjp(b0: vol_t, b1: vol_t, b2: vol_t, b3: vol_t, b4: vol_t, b5: vol_t, b6: vol_t, b7: vol_t,
                   b8: vol_t, b9: vol_t, b10: vol_t, b11: vol_t, b12: vol_t, b13: vol_t, b14: vol_t, b15: vol_t,
                   s: ti.i32, ni: ti.i32, nj: ti.i32, nk: ti.i32, grad: ti.types.ndarray(dtype=real, ndim=4),
                   views: ti.types.ndarray(dtype=vec3, ndim=2), n_views: ti.i32, row0: ti.i32,
                   lin: ti.types.ndarray(dtype=vec3, ndim=1), gray: ti.types.ndarray(dtype=real, ndim=4),
                   gvol: ti.types.ndarray(dtype=real, ndim=1)):
        bricks = ti.static([b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15])
        rows, cols = grad.shape[2], grad.shape[3]
        hi = vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = vec3(-0.5, -0.5, -0.5)
        last = ti.math.ivec3(ni - 1, nj - 1, nk - 1)
        st = ti.math.ivec3(n_mat, ni * n_mat, nj * ni * n_mat)
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src, d = pixel_ray(views[v, 0], views[v, 1], views[v, 2], views[v, 3], r + row0, c)
            t0, t1, face0, face1 = clip_faces(src, d, lo, hi)
            gs, gd = vec3(0.0), vec3(0.0)
            if t1 > t0:
                g = vec_m([grad[v, m, r, c] for m in ti.static(range(n_mat))])
                ax = main_axis(d)
                dw = d[0] * lin[0] + d[1] * lin[1] + d[2] * lin[2]
                dwn = dw.norm()
                for A in ti.static(range(3)):
                    if ax == A:
                        B, C = ti.static([x for x in range(3) if x != A])
                        slope = d / d[A]
                        kk = dwn / ti.abs(d[A]) * 0.1
                        # the two ends, ordered by a: (point, t, face, fixed bound)
                        pa, pb = src + t0 * d, src + t1 * d
                        ta, tb, fa_, fb_, xa, xb = t0, t1, face0, face1, 0, 1
                        if pa[A] > pb[A]:
                            pa, pb = pb, pa
                            ta, tb, fa_, fb_, xa, xb = t1, t0, face1, face0, 1, 0
                        a0, a1 = pa[A], pb[A]
                        n_lo = ti.max(ti.cast(ti.ceil(a0), ti.i32), 0)
                        n_hi = ti.min(ti.cast(ti.floor(a1), ti.i32), last[A])
                        f0, gam0 = tri_grad(bricks, s, A, pa, last, st, g)
                        f1, gam1 = tri_grad(bricks, s, A, pb, last, st, g)
                        jj = vec_m(0.0)
                        wf0, wf1 = ti.cast(0.0, real), ti.cast(0.0, real)
                        ja0, ja1 = vec_m(0.0), vec_m(0.0)  # dJ/da0, dJ/da1
                        sg, stg = vec3(0.0), vec3(0.0)  # sum c_n G_n, sum c_n tau_n G_n
                        if n_lo > n_hi:
                            wf0 = 0.5 * (a1 - a0)
                            wf1 = wf0
                            jj = wf0 * (f0 + f1)
                            ja0 = -0.5 * (f0 + f1)
                            ja1 = 0.5 * (f0 + f1)
                        else:
                            base = src - src[A] * slope
                            g_lo = bil_grad(bricks, s, A, n_lo, base + ti.cast(n_lo, real) * slope, last, st)[0]
                            g_hi = bil_grad(bricks, s, A, n_hi, base + ti.cast(n_hi, real) * slope, last, st)[0]
                            wf0 = 0.5 * (ti.cast(n_lo, real) - a0)
                            wf1 = 0.5 * (a1 - ti.cast(n_hi, real))
                            ja0 = -0.5 * (f0 + g_lo)
                            ja1 = 0.5 * (g_hi + f1)
                            jj = wf0 * (f0 + g_lo) + wf1 * (g_hi + f1) - 0.5 * (g_lo + g_hi)
                            for n in range(n_lo, n_hi + 1):
                                q = base + ti.cast(n, real) * slope
                                val, db, dc = bil_grad(bricks, s, A, n, q, last, st)
                                cn = ti.cast(1.0, real)
                                if n == n_lo:
                                    cn += wf0 - 0.5
                                if n == n_hi:
                                    cn += wf1 - 0.5
                                jj += val
                                gn = vec3(0.0)
                                gn[B] = g.dot(db)
                                gn[C] = g.dot(dc)
                                tau = (ti.cast(n, real) - src[A]) / d[A]
                                sg += cn * gn
                                stg += (cn * tau) * gn
                                if ti.static(density):
                                    bil_scatter(gvol, s, A, n, q, last, st, g * (kk * cn))
                        gs = sg  # P^T x = x - e_A (slope . x)
                        gs[A] -= slope.dot(sg)
                        gd = stg
                        gd[A] -= slope.dot(stg)
                        # the ends: the interpolant there (weights wf) and the end's position along A (ja)
                        e0 = wf0 * gam0
                        e0[A] += g.dot(ja0)
                        e1 = wf1 * gam1
                        e1[A] += g.dot(ja1)
                        s0, d0 = end_chain(e0, d, ta, fa_, xa)
                        s1, d1 = end_chain(e1, d, tb, fb_, xb)
                        gs = kk * (gs + s0 + s1)
                        gd = kk * (gd + d0 + d1)
                        # dK/dd: K = 0.1 |W d| / |d_A|
                        dk = vec3(lin[0].dot(dw), lin[1].dot(dw), lin[2].dot(dw)) * (0.1 / (dwn * ti.abs(d[A])))
                        dk[A] -= 0.1 * dwn / (d[A] * ti.abs(d[A]))
                        gd += g.dot(jj) * dk
                        if ti.static(density):
                            tri_scatter(gvol, s, A, pa, last, st, g * (kk * wf0))
                            tri_scatter(gvol, s, A, pb, last, st, g * (kk * wf1))
            for q in ti.static(range(3)):
                gray[v, r, c, q] = gs[q]
                gray[v, r, c, 3 + q] = gd[q]

    return planes_vjp
