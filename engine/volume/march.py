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
    as float32; ``brick_of(k, s)`` the brick that holds slices ``k`` and ``k + 1``."""
    ti = backend.ti_module()
    if not 1 <= nb <= MAX_BRICKS:
        raise ValueError(f"nb must be in 1..{MAX_BRICKS}, got {nb}")
    vec_m = ti.types.vector(n_mat, ti.f32)

    @ti.func
    def load(brick: ti.template(), o):
        return vec_m([ti.cast(brick[o + m], ti.f32) for m in ti.static(range(n_mat))])

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


def _brick_type(storage: str):
    ti = backend.ti_module()
    return ti.types.ndarray(dtype=ti.f16 if storage == "f16" else ti.f32, ndim=1)


@functools.lru_cache(maxsize=None)
def march_kernel(n_mat: int, storage: str, nb: int):
    """The fixed-step kernel for ``n_mat`` materials stored as ``storage`` ("f32"/"f16") in ``nb`` bricks.

    ``march(b0, ..., b15, s, ni, nj, nk, blocks, out, views, n_views, row0, lin, step_mm, skip)``: bricks
    are flat arrays (module doc), those beyond ``nb`` placeholders (any array of the type); ``s`` slices
    per brick step; ``ni, nj, nk`` the grid; ``blocks`` the uniform-block table (u8, k, j, i); ``out``
    (n, M, rows, cols) float32 g/cm^2 for detector rows ``row0 .. row0 + rows - 1``; ``views`` (n, 4, 3):
    source, pixel (0, 0) centre, column and row steps in voxel-index coordinates; ``lin`` (3, 3): the
    columns of the volume's ``world_from_index`` linear part (mm per index unit).
    """
    ti = backend.ti_module()
    fetch, brick_of = _voxel_funcs(n_mat, storage, nb)
    clip = _clip()
    vec_m = ti.types.vector(n_mat, ti.f32)
    vol_t = _brick_type(storage)

    @ti.kernel
    def march(b0: vol_t, b1: vol_t, b2: vol_t, b3: vol_t, b4: vol_t, b5: vol_t, b6: vol_t, b7: vol_t,
              b8: vol_t, b9: vol_t, b10: vol_t, b11: vol_t, b12: vol_t, b13: vol_t, b14: vol_t, b15: vol_t,
              s: ti.i32, ni: ti.i32, nj: ti.i32, nk: ti.i32, blocks: ti.types.ndarray(dtype=ti.u8, ndim=3),
              out: ti.types.ndarray(dtype=ti.f32, ndim=4), views: ti.types.ndarray(dtype=ti.math.vec3, ndim=2),
              n_views: ti.i32, row0: ti.i32, lin: ti.types.ndarray(dtype=ti.math.vec3, ndim=1), step_mm: ti.f32,
              skip: ti.i32):
        bricks = ti.static([b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15])
        rows, cols = out.shape[2], out.shape[3]
        hi = ti.math.vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = ti.math.vec3(-0.5, -0.5, -0.5)
        top = ti.math.vec3(ni - 1.0, nj - 1.0, nk - 1.0)
        last = ti.math.ivec3(ni - 1, nj - 1, nk - 1)
        si, sj, sk = n_mat, ni * n_mat, nj * ni * n_mat  # flat strides of i, j, k
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src = views[v, 0]
            d = views[v, 1] + ti.f32(c) * views[v, 2] + ti.f32(r + row0) * views[v, 3] - src
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
                    p = ti.min(ti.max(p0 + ti.f32(k) * dp, 0.0), top)
                    b = ti.cast(p, ti.i32) // BLOCK
                    if skip and blocks[b[2], b[1], b[0]] == 1:
                        # samples left in this block: up to where p leaves [b*B, b*B + B]
                        texit = 1e30
                        for a in ti.static(range(3)):
                            if dp[a] > 1e-12:
                                texit = ti.min(texit, (ti.f32(b[a] * BLOCK + BLOCK) - (p0[a] + ti.f32(k) * dp[a])) / dp[a])
                            elif dp[a] < -1e-12:
                                texit = ti.min(texit, (ti.f32(b[a] * BLOCK) - (p0[a] + ti.f32(k) * dp[a])) / dp[a])
                        cnt = ti.max(1, ti.min(n - k, ti.cast(ti.floor(texit), ti.i32) + 1))
                        i0 = ti.min(b * BLOCK, last)
                        kb = brick_of(i0[2], s)
                        acc += ti.f32(cnt) * fetch(bricks, kb, (i0[2] - kb * s) * sk + i0[1] * sj + i0[0] * si)
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
                        f = p - ti.cast(i0, ti.f32)
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
def _clip():
    """``clip(src, d, lo, hi) -> (t0, t1)``: a Taichi function (see its comment)."""
    ti = backend.ti_module()

    @ti.func
    def clip(src, d, lo, hi):
        # the ray src + t d, t in [0, 1], clipped to the box [lo, hi]: (t0, t1), empty when t1 <= t0
        t0, t1 = 0.0, 1.0
        for a in ti.static(range(3)):
            if ti.abs(d[a]) < 1e-12:
                if src[a] < lo[a] or src[a] > hi[a]:
                    t1 = -1.0
            else:
                ta = (lo[a] - src[a]) / d[a]
                tb = (hi[a] - src[a]) / d[a]
                t0 = ti.max(t0, ti.min(ta, tb))
                t1 = ti.min(t1, ti.max(ta, tb))
        return t0, t1

    return clip


@functools.lru_cache(maxsize=None)
def upload_kernel(storage: str):
    """``upload(brick, n_mat, m, slab)``: material ``m`` of every voxel of a flat brick from ``slab`` (I, J, K')
    float32 (K' = the brick's slices), converted to the storage type."""
    ti = backend.ti_module()
    elem = ti.f16 if storage == "f16" else ti.f32

    @ti.kernel
    def upload(brick: ti.types.ndarray(dtype=elem, ndim=1), n_mat: ti.i32, m: ti.i32,
               slab: ti.types.ndarray(dtype=ti.f32, ndim=3)):
        ni, nj = slab.shape[0], slab.shape[1]
        for k, j, i in ti.ndrange(slab.shape[2], nj, ni):
            brick[((k * nj + j) * ni + i) * n_mat + m] = ti.cast(slab[i, j, k], elem)

    return upload


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
    clip = _clip()
    vec_m = ti.types.vector(n_mat, ti.f32)
    vol_t = _brick_type(storage)

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
        b = ti.min(ti.max(p[B], 0.0), ti.f32(last[B]))
        c = ti.min(ti.max(p[C], 0.0), ti.f32(last[C]))
        ib = ti.min(ti.cast(b, ti.i32), last[B] - 1)
        ic = ti.min(ti.cast(c, ti.i32), last[C] - 1)
        fb, fc = b - ti.f32(ib), c - ti.f32(ic)
        kb = 0
        if ti.static(nb > 1):  # the brick of the lowest k of the 4 corners (C is axis 2 unless A is)
            kb = ti.min((ic if ti.static(A != 2) else n) // s, nb - 1)
        o = n * st[A] + ib * st[B] + ic * st[C] - kb * s * st[2]
        return lerp4(bricks, kb, o, st[B], st[C], fb, fc)

    @ti.func
    def trilinear(bricks: ti.template(), s, A: ti.template(), p, last, st):
        a = ti.min(ti.max(p[A], 0.0), ti.f32(last[A]))
        ia = ti.min(ti.cast(a, ti.i32), last[A] - 1)
        fa = a - ti.f32(ia)
        f0 = bilinear(bricks, s, A, ia, p, last, st)
        f1 = bilinear(bricks, s, A, ia + 1, p, last, st)
        return f0 + (f1 - f0) * fa

    @ti.kernel
    def planes(b0: vol_t, b1: vol_t, b2: vol_t, b3: vol_t, b4: vol_t, b5: vol_t, b6: vol_t, b7: vol_t,
               b8: vol_t, b9: vol_t, b10: vol_t, b11: vol_t, b12: vol_t, b13: vol_t, b14: vol_t, b15: vol_t,
               s: ti.i32, ni: ti.i32, nj: ti.i32, nk: ti.i32, out: ti.types.ndarray(dtype=ti.f32, ndim=4),
               views: ti.types.ndarray(dtype=ti.math.vec3, ndim=2), n_views: ti.i32, row0: ti.i32,
               lin: ti.types.ndarray(dtype=ti.math.vec3, ndim=1)):
        bricks = ti.static([b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15])
        rows, cols = out.shape[2], out.shape[3]
        hi = ti.math.vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = ti.math.vec3(-0.5, -0.5, -0.5)
        last = ti.math.ivec3(ni - 1, nj - 1, nk - 1)
        st = ti.math.ivec3(n_mat, ni * n_mat, nj * ni * n_mat)  # flat strides of i, j, k
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src = views[v, 0]
            d = views[v, 1] + ti.f32(c) * views[v, 2] + ti.f32(r + row0) * views[v, 3] - src
            t0, t1 = clip(src, d, lo, hi)
            acc = vec_m(0.0)
            if t1 > t0:
                ad = ti.abs(d)
                ax = 0
                if ad[1] > ad[0] and ad[1] >= ad[2]:
                    ax = 1
                elif ad[2] > ad[0] and ad[2] > ad[1]:
                    ax = 2
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
                            g_lo = bilinear(bricks, s, A, n_lo, base + ti.f32(n_lo) * slope, last, st)
                            g_hi = bilinear(bricks, s, A, n_hi, base + ti.f32(n_hi) * slope, last, st)
                            acc = 0.5 * (f0 + g_lo) * (ti.f32(n_lo) - a0) \
                                + 0.5 * (g_hi + f1) * (a1 - ti.f32(n_hi)) - 0.5 * (g_lo + g_hi)
                            for n in range(n_lo, n_hi + 1):
                                acc += bilinear(bricks, s, A, n, base + ti.f32(n) * slope, last, st)
                        acc *= dw.norm() / ti.abs(d[A]) * 0.1  # per plane -> per mm; g/cm^3 mm -> g/cm^2
            for m in ti.static(range(n_mat)):
                out[v, m, r, c] = acc[m]

    return planes
