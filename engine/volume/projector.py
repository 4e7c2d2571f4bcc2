"""Taichi ray-marching projector: per-material line integrals of density.

For every detector pixel the ray from the source to the pixel centre is clipped
to the volume's box (voxel ``i`` fills ``[i - 1/2, i + 1/2]``) and to the
segment between source and detector; the clipped segment of length ``L`` (mm)
is cut into ``n = ceil(L / step)`` equal parts and the density, interpolated
trilinearly (clamped to the edge voxels in the outer half voxel), is sampled at
their midpoints (midpoint rule).  The result per material is
``sum(rho) * L / n`` in g/cm^3 * mm, converted to g/cm^2.

Rays are marched in voxel-index space, so rotated or oblique affines need no
resampling.  The volume is stored once in a Taichi field with ``i`` fastest and
all materials of a voxel side by side (one cache line per trilinear corner).

Empty-space skipping: the grid is cut into blocks of 8^3 voxels; a block whose
9^3 voxels (its own plus the next layer, which trilinear samples inside it may
read) all hold the same densities is *uniform*, and the samples that fall in it
are summed analytically (count x value) instead of interpolated.  This is exact:
the result equals plain marching up to float rounding.
"""
import math
import time
import warnings

import numpy as np

from .. import backend
from ..field_group import FieldGroup
from ..geometry import Camera
from .materials import Volume

BLOCK = 8  # voxels per empty-space-skipping block edge


def _block_range(a: np.ndarray, axis: int, block: int, fn) -> np.ndarray:
    """Reduce ``a`` along ``axis`` over the stencils ``[b*block, b*block + block]`` (clamped), b = 0..nb-1."""
    n = a.shape[axis]
    nb = -(-n // block)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, nb * block - n)
    body = np.pad(a, pad, mode="edge")
    shape = list(body.shape)
    shape[axis:axis + 1] = [nb, block]
    red = fn.reduce(body.reshape(shape), axis=axis + 1)  # own voxels of each block
    nxt = np.take(a, np.minimum(np.arange(1, nb + 1) * block, n - 1), axis=axis)  # first voxel of the next
    return fn(red, nxt)


def _uniform_blocks(dens: np.ndarray, block: int) -> np.ndarray:
    """(nb_k, nb_j, nb_i) uint8: 1 where every material is constant over the block's stencil.

    ``dens`` is (M, I, J, K).  Block b along an axis covers voxel indices
    ``[b*block, b*block + block]`` (clamped to the grid): the corners that trilinear
    samples inside the block may read.  Max and min over a box are separable, so they
    are reduced axis by axis without large temporaries.
    """
    uni = None
    for c in range(dens.shape[0]):
        hi = lo = dens[c]
        for ax in range(3):
            hi = _block_range(hi, ax, block, np.maximum)
            lo = _block_range(lo, ax, block, np.minimum)
        u = hi == lo
        uni = u if uni is None else uni & u
    return np.ascontiguousarray(uni.transpose(2, 1, 0)).astype(np.uint8)


def _make_kernels(ti, n_mat: int, storage):
    """Build the marching kernel for ``n_mat`` materials (compiled once per projector)."""
    vec_m = ti.types.vector(n_mat, ti.f32)

    @ti.func
    def fetch(vol, k, j, i):
        return ti.cast(vol[k, j, i], ti.f32)

    @ti.kernel
    def upload(vol: ti.template(), m: ti.i32, channel: ti.types.ndarray(dtype=ti.f32, ndim=3)):
        # channel is (I, J, K) as stored by Volume; the field is (K, J, I) with i fastest
        for k, j, i in vol:
            vol[k, j, i][m] = ti.cast(channel[i, j, k], vol.dtype)

    @ti.kernel
    def march(vol: ti.template(), blocks: ti.template(), out: ti.template(),
              views: ti.types.ndarray(dtype=ti.math.vec3, ndim=2), n_views: ti.i32,
              lin: ti.types.ndarray(dtype=ti.math.vec3, ndim=1), step_mm: ti.f32, skip: ti.i32):
        # views[v] = (source, pixel(0,0), d/dcol, d/drow), voxel-index coordinates
        # lin = the three columns of world_from_index's linear part (mm per index unit)
        nk, nj, ni = vol.shape
        rows, cols = out.shape[2], out.shape[3]
        hi = ti.math.vec3(ni - 0.5, nj - 0.5, nk - 0.5)
        lo = ti.math.vec3(-0.5, -0.5, -0.5)
        top = ti.math.vec3(ni - 1.0, nj - 1.0, nk - 1.0)
        for v, r, c in ti.ndrange(n_views, rows, cols):
            src = views[v, 0]
            d = views[v, 1] + ti.f32(c) * views[v, 2] + ti.f32(r) * views[v, 3] - src
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
                        i0 = ti.min(b * BLOCK, ti.math.ivec3(ni - 1, nj - 1, nk - 1))
                        acc += ti.f32(cnt) * fetch(vol, i0[2], i0[1], i0[0])
                        k += cnt
                    else:
                        i0 = ti.min(ti.cast(p, ti.i32), ti.math.ivec3(ni - 2, nj - 2, nk - 2))
                        i0 = ti.max(i0, 0)
                        if i0[0] != cell[0] or i0[1] != cell[1] or i0[2] != cell[2]:
                            # consecutive samples (half a voxel apart) mostly share a cell: load on change only
                            i1 = ti.min(i0 + 1, ti.math.ivec3(ni - 1, nj - 1, nk - 1))
                            v000 = fetch(vol, i0[2], i0[1], i0[0])
                            v001 = fetch(vol, i0[2], i0[1], i1[0])
                            v010 = fetch(vol, i0[2], i1[1], i0[0])
                            v011 = fetch(vol, i0[2], i1[1], i1[0])
                            v100 = fetch(vol, i1[2], i0[1], i0[0])
                            v101 = fetch(vol, i1[2], i0[1], i1[0])
                            v110 = fetch(vol, i1[2], i1[1], i0[0])
                            v111 = fetch(vol, i1[2], i1[1], i1[0])
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

    return march, upload


class VolumeProjector:
    """Renders per-material line integrals (g/cm^2) of a :class:`Volume`.

    Build once, call every frame: the volume is uploaded to the device once; the
    output buffer is allocated for the first detector/batch shape and kept while
    the shape stays the same.

    Parameters
    ----------
    volume : Volume
    step_mm : float, optional
        Sampling step along rays, mm; default half the smallest voxel spacing.
    storage : {"f32", "f16"}
        Storage type of the volume on the device (f16 halves memory; arithmetic
        is always float32).
    skip_empty : bool
        Empty-space skipping over uniform 8^3 blocks (exact; see module doc).
    """

    def __init__(self, volume: Volume, *, step_mm: float | None = None, storage: str = "f32",
                 skip_empty: bool = True):
        if not isinstance(volume, Volume):
            raise TypeError(f"VolumeProjector needs an engine Volume, got {type(volume).__name__}")
        if storage not in ("f32", "f16"):
            raise ValueError(f"storage must be 'f32' or 'f16', got {storage!r}")
        self.volume = volume
        self.materials = volume.materials
        self.step_mm = float(step_mm) if step_mm is not None else float(volume.spacing.min()) / 2.0
        if not (math.isfinite(self.step_mm) and self.step_mm > 0):
            raise ValueError(f"step_mm must be a positive length in mm, got {step_mm!r}")
        self.skip_empty = bool(skip_empty)
        ti = backend.ti_module()
        self._ti = ti
        m = len(volume.materials)
        ni, nj, nk = volume.shape
        if min(ni, nj, nk) < 2:
            raise ValueError(f"the volume needs at least 2 voxels along each axis, got {volume.shape}")
        dtype = ti.f16 if storage == "f16" else ti.f32
        self._fields = FieldGroup(ti)  # freed with the projector (plain fields never are)
        self._vol = self._fields.field(dtype, (nk, nj, ni), n=m)
        self._march, upload = _make_kernels(ti, m, dtype)
        dens = volume.density
        if storage == "f16":  # uniformity must hold for the stored (rounded) values
            dens = dens.astype(np.float16)
        uni = _uniform_blocks(dens, BLOCK)
        self.uniform_fraction = float(uni.mean())
        self._blocks = self._fields.field(ti.u8, uni.shape)
        self._fields.finalize()
        for c in range(m):  # channel by channel: no transposed copy of the whole volume on the host
            upload(self._vol, c, np.ascontiguousarray(volume.density[c]))
        self._blocks.from_numpy(uni)
        self._lin = np.ascontiguousarray(volume.world_from_index[:3, :3].T, dtype=np.float32)
        self._index_from_world = np.linalg.inv(volume.world_from_index)
        self._out = None
        self.last_seconds = float("nan")

    def _buffer(self, n: int, rows: int, cols: int):
        shape = (n, len(self.materials), rows, cols)
        if self._out is None or self._out.shape != shape:
            if self._out is not None:
                self._out_group.release()
            self._out_group = FieldGroup(self._ti)
            self._out = self._out_group.field(self._ti.f32, shape)
            self._out_group.finalize()
        return self._out

    def _view_params(self, cams) -> np.ndarray:
        a = self._index_from_world
        out = np.empty((len(cams), 4, 3), np.float32)
        for i, cam in enumerate(cams):
            src, p00, du, dv = cam.pixel_grid()
            out[i] = (a[:3, :3] @ src + a[:3, 3], a[:3, :3] @ p00 + a[:3, 3], a[:3, :3] @ du, a[:3, :3] @ dv)
        return out

    def sees_volume(self, cam: Camera) -> bool:
        """True when some part of the volume's box projects inside the detector."""
        corners = self.volume.corners()
        z = (corners - cam.source) @ cam.principal_axis
        if np.all(z <= 0):
            return False
        # clip the box's corners to in front of the source: project the visible hull conservatively
        uv = cam.project_points(corners[z > 0])
        if np.any(z <= 0):  # box straddles the source plane: assume it may be seen
            return True
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        return bool(hi[0] >= -0.5 and lo[0] <= cam.cols - 0.5 and hi[1] >= -0.5 and lo[1] <= cam.rows - 0.5)

    def __call__(self, cameras) -> np.ndarray:
        """Render one camera or a batch.

        Parameters
        ----------
        cameras : Camera or sequence of Camera (same detector shape)

        Returns
        -------
        (M, rows, cols) float32 for one camera, (n, M, rows, cols) for a sequence;
        g/cm^2 per material, in the order of ``self.materials``.
        """
        single = isinstance(cameras, Camera)
        t = time.perf_counter()
        out = self.render_field(cameras)
        img = out.to_numpy()
        self.last_seconds = time.perf_counter() - t
        return img[0] if single else img

    def render_field(self, cameras):
        """Render like :meth:`__call__` but leave the image on the device.

        Returns
        -------
        The projector's own Taichi field, (n, M, rows, cols) float32 g/cm^2 (n = 1 for one
        Camera), for a device consumer such as :class:`engine.physics.DeviceChain`.  It is
        overwritten by the next render; read it, do not write it.
        """
        single = isinstance(cameras, Camera)
        cams = [cameras] if single else list(cameras)
        if not cams:
            raise ValueError("no cameras given")
        for c in cams:
            if not isinstance(c, Camera):
                raise TypeError(f"expected engine Camera, got {type(c).__name__}")
        rows, cols = cams[0].rows, cams[0].cols
        if any((c.rows, c.cols) != (rows, cols) for c in cams):
            raise ValueError("all cameras of a batch must share the detector shape")
        for i, c in enumerate(cams):
            if not self.sees_volume(c):
                warnings.warn(f"camera {i} sees none of the volume: its image is empty", RuntimeWarning,
                              stacklevel=2)
        out = self._buffer(len(cams), rows, cols)
        self._march(self._vol, self._blocks, out, self._view_params(cams), len(cams), self._lin,
                    self.step_mm, int(self.skip_empty))
        return out
