"""The ray-marching kernel of :class:`engine.volume.VolumeProjector`, compiled once per process.

Kernels take Taichi ndarrays, whose template key is their dtype and dimension, not their
identity (a field passed as ``ti.template()`` compiles a new kernel for every new field),
so a second projector of the same kind reuses the compiled kernel: :func:`march_kernel`
is cached by what changes the code (materials, storage type, number of bricks).

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

Sampling (see :mod:`engine.volume.projector`): midpoint rule, trilinear interpolation
clamped to the edge voxels, empty-space skipping over uniform 8^3 blocks (exact).
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
def march_kernel(n_mat: int, storage: str, nb: int):
    """The marching kernel for ``n_mat`` materials stored as ``storage`` ("f32"/"f16") in ``nb`` bricks.

    ``march(b0, ..., b15, s, nk, blocks, out, views, n_views, row0, lin, step_mm, skip)``: bricks are
    (K', J, I, M) arrays (materials fastest; scalar ndarrays, because Taichi 1.7.4 never frees vector
    ndarrays), those beyond ``nb`` placeholders (any array of the type); ``s`` slices per brick step, ``nk``
    slices in all; ``blocks`` the uniform-block table (u8, k, j, i); ``out`` (n, M, rows, cols) float32
    g/cm^2 for detector rows ``row0 .. row0 + rows - 1``; ``views`` (n, 4, 3) and ``lin`` (3, 3) as
    documented in the kernel.
    """
    ti = backend.ti_module()
    if not 1 <= nb <= MAX_BRICKS:
        raise ValueError(f"nb must be in 1..{MAX_BRICKS}, got {nb}")
    vec_m = ti.types.vector(n_mat, ti.f32)
    vol_t = ti.types.ndarray(dtype=ti.f16 if storage == "f16" else ti.f32, ndim=4)

    @ti.func
    def load(brick: ti.template(), k, j, i):
        return vec_m([ti.cast(brick[k, j, i, m], ti.f32) for m in ti.static(range(n_mat))])

    @ti.func
    def get(bricks: ti.template(), kb, k, j, i):
        # voxel (k, j, i) of brick kb (k local to the brick), all materials
        v = vec_m(0.0)
        if ti.static(nb == 1):
            v = load(bricks[0], k, j, i)
        else:
            for q in ti.static(range(nb)):
                if kb == q:
                    v = load(bricks[q], k, j, i)
        return v

    @ti.kernel
    def march(b0: vol_t, b1: vol_t, b2: vol_t, b3: vol_t, b4: vol_t, b5: vol_t, b6: vol_t, b7: vol_t,
              b8: vol_t, b9: vol_t, b10: vol_t, b11: vol_t, b12: vol_t, b13: vol_t, b14: vol_t, b15: vol_t,
              s: ti.i32, nk: ti.i32, blocks: ti.types.ndarray(dtype=ti.u8, ndim=3),
              out: ti.types.ndarray(dtype=ti.f32, ndim=4), views: ti.types.ndarray(dtype=ti.math.vec3, ndim=2),
              n_views: ti.i32, row0: ti.i32, lin: ti.types.ndarray(dtype=ti.math.vec3, ndim=1), step_mm: ti.f32,
              skip: ti.i32):
        # views[v] = (source, pixel(0,0), d/dcol, d/drow) in voxel-index coordinates
        # lin = the three columns of world_from_index's linear part (mm per index unit)
        bricks = ti.static([b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15])
        nj, ni = b0.shape[1], b0.shape[2]
        rows, cols = out.shape[2], out.shape[3]
        hi = ti.math.vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = ti.math.vec3(-0.5, -0.5, -0.5)
        top = ti.math.vec3(ni - 1.0, nj - 1.0, nk - 1.0)
        last = ti.math.ivec3(ni - 1, nj - 1, nk - 1)
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src = views[v, 0]
            d = views[v, 1] + ti.f32(c) * views[v, 2] + ti.f32(r + row0) * views[v, 3] - src
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
                        kb = ti.min(i0[2] // s, nb - 1)
                        acc += ti.f32(cnt) * get(bricks, kb, i0[2] - kb * s, i0[1], i0[0])
                        k += cnt
                    else:
                        i0 = ti.max(ti.min(ti.cast(p, ti.i32), last - 1), 0)
                        if i0[0] != cell[0] or i0[1] != cell[1] or i0[2] != cell[2]:
                            # consecutive samples (half a voxel apart) mostly share a cell: load on change only
                            i1 = ti.min(i0 + 1, last)
                            kb = ti.min(i0[2] // s, nb - 1)
                            k0, k1 = i0[2] - kb * s, i1[2] - kb * s
                            v000 = get(bricks, kb, k0, i0[1], i0[0])
                            v001 = get(bricks, kb, k0, i0[1], i1[0])
                            v010 = get(bricks, kb, k0, i1[1], i0[0])
                            v011 = get(bricks, kb, k0, i1[1], i1[0])
                            v100 = get(bricks, kb, k1, i0[1], i0[0])
                            v101 = get(bricks, kb, k1, i0[1], i1[0])
                            v110 = get(bricks, kb, k1, i1[1], i0[0])
                            v111 = get(bricks, kb, k1, i1[1], i1[0])
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
def upload_kernel(n_mat: int, storage: str):
    """``upload(brick, m, slab)``: brick[k, j, i, m] = slab[i, j, k] (slab (I, J, K') float32, K' = the brick's
    slices; the brick (K', J, I, M) in the storage type)."""
    ti = backend.ti_module()
    elem = ti.f16 if storage == "f16" else ti.f32

    @ti.kernel
    def upload(brick: ti.types.ndarray(dtype=elem, ndim=4), m: ti.i32, slab: ti.types.ndarray(dtype=ti.f32, ndim=3)):
        for k, j, i in ti.ndrange(brick.shape[0], brick.shape[1], brick.shape[2]):
            brick[k, j, i, m] = ti.cast(slab[i, j, k], elem)

    return upload
