"""Taichi ray-marching projector: per-material line integrals of density.

For every detector pixel the ray from the source to the pixel centre is clipped
to the volume's box (voxel ``i`` fills ``[i - 1/2, i + 1/2]``) and to the
segment between source and detector; the clipped segment of length ``L`` (mm)
is cut into ``n = ceil(L / step)`` equal parts and the density, interpolated
trilinearly (clamped to the edge voxels in the outer half voxel), is sampled at
their midpoints (midpoint rule).  The result per material is
``sum(rho) * L / n`` in g/cm^3 * mm, converted to g/cm^2.

Rays are marched in voxel-index space, so rotated or oblique affines need no
resampling.  The volume is stored with ``i`` fastest and all materials of a voxel
side by side (one cache line per trilinear corner), in Taichi ndarrays: the kernel
(:mod:`engine.volume.march`) is compiled once per process, not once per projector,
and on Vulkan the volume is cut into bricks of at most 128 MiB (the buffer size
Vulkan guarantees), so a CT of any size up to 2 GiB renders there too.  Images too
large for one output buffer are rendered in chunks of views and rows.

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
from ..geometry import Camera, camera_batch
from ..geometry.rays import view_table
from .march import (BLOCK, MAX_BRICKS, VULKAN_BUFFER_BYTES, brick_slices, march_kernel, n_bricks, planes_kernel,
                    planes_vjp_kernel, upload_kernel)
from .materials import Volume
from .projection_grad import ProjectionState, pose_gradient_from_rays


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


LAUNCH_SAMPLES = 200_000_000  # ray samples per launch when rendering in pieces (~1 s on a 2-core CPU)


class VolumeProjector:
    """Renders per-material line integrals (g/cm^2) of a :class:`Volume`.

    Build once, call every frame: the volume is uploaded to the device once; the
    output buffer is allocated for the first detector/batch shape and kept while
    the shape stays the same.  The projector owns its device memory: :meth:`close`
    (or leaving a ``with`` block, or garbage collection) frees it.

    Parameters
    ----------
    volume : Volume
    sampling : {"planes", "midpoint"}, optional
        ``"planes"`` (default): each ray is sampled where it crosses the planes of voxel
        centres across its main axis (bilinear there, as in Joseph's projector) and
        integrated by the trapezoid rule: about one sample per voxel, 4 voxels read per
        sample.  ``"midpoint"``: trilinear samples at a fixed step (midpoint rule), about
        10x closer to the exact integral of the trilinear interpolant at the default step
        and ~3.5x slower (``tests/test_projector.py`` has the numbers).  Default
        ``"midpoint"`` when ``step_mm`` is given.
    step_mm : float, optional
        Sampling step along rays, mm (``sampling="midpoint"``); default half the smallest
        voxel spacing.
    storage : {"f32", "f16", "f64"}
        Storage type of the volume on the device (f16 halves memory; arithmetic
        is always float32).
    skip_empty : bool
        Empty-space skipping over uniform 8^3 blocks (exact; see module doc; midpoint
        sampling).
    max_buffer_bytes : int, optional
        Largest device buffer to allocate (bytes): the volume is split into bricks and
        images into pieces below it.  Default: 128 MiB on Vulkan (the size every Vulkan
        device guarantees), no limit on the CPU and CUDA.
    """

    def __init__(self, volume: Volume, *, step_mm: float | None = None, storage: str = "f32",
                 skip_empty: bool = True, max_buffer_bytes: int | None = None, sampling: str | None = None):
        if not isinstance(volume, Volume):
            raise TypeError(f"VolumeProjector needs an engine Volume, got {type(volume).__name__}")
        if storage not in ("f32", "f16", "f64"):
            raise ValueError(f"storage must be 'f32', 'f16' or 'f64', got {storage!r}")
        self.volume = volume
        self.materials = volume.materials
        self.storage = storage
        if sampling is None:
            sampling = "planes" if step_mm is None else "midpoint"
        if sampling not in ("planes", "midpoint"):
            raise ValueError(f"sampling must be 'planes' or 'midpoint', got {sampling!r}")
        if sampling == "planes" and step_mm is not None:
            raise ValueError("step_mm applies to sampling='midpoint' only (plane sampling takes one sample per "
                             "voxel plane)")
        self.sampling = sampling
        self.step_mm = None  # plane sampling: one sample per voxel plane across the ray's main axis
        if sampling == "midpoint":
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
        # the largest buffer the device takes: Vulkan guarantees 128 MiB; the CPU and CUDA have no such limit
        self._limit = VULKAN_BUFFER_BYTES if backend.current().arch == "vulkan" else None
        if max_buffer_bytes is not None:
            if not (int(max_buffer_bytes) == max_buffer_bytes and max_buffer_bytes > 0):
                raise ValueError(f"max_buffer_bytes must be a positive integer, got {max_buffer_bytes!r}")
            self._limit = int(max_buffer_bytes)
        elem = self._elem_bytes = {"f16": 2, "f32": 4, "f64": 8}[storage]
        # arithmetic (and output) type: float64 with storage="f64" (for gradient checks), else float32
        self.dtype = np.float64 if storage == "f64" else np.float32
        self._real = ti.f64 if storage == "f64" else ti.f32
        s = self._slices = brick_slices(nk, nj, ni, m * elem, self._limit)
        nb = n_bricks(nk, s)
        self._bricks = []
        for b in range(nb):  # brick b: slices b*s .. b*s + s (one shared with the next brick)
            k0, k1 = self._brick_range(b, nb)
            size = (k1 - k0) * nj * ni * m
            if size >= 2**31:
                raise ValueError(f"the volume ({ni} x {nj} x {nk} voxels x {m} materials) exceeds 2^31 values per "
                                 "device buffer, which the kernels index with 32-bit integers: set max_buffer_bytes "
                                 "to split it, or downsample")
            # a flat (k, j, i, material) array: see engine.volume.march
            self._bricks.append(ti.ndarray({"f16": ti.f16, "f32": ti.f32, "f64": ti.f64}[storage], (size,)))
        self._version = 0  # bumped by set_density: a forward's state names the densities it saw
        self._upload(volume.density)
        self._march = march_kernel(m, storage, nb)
        self._planes = planes_kernel(m, storage, nb)
        self._blocks = None  # the uniform-block table of midpoint sampling, made on first use
        self._gvol = None  # the density-gradient buffer of vjp, made on first use
        self._uniform_fraction = None
        self._lin = np.ascontiguousarray(volume.world_from_index[:3, :3].T, dtype=self.dtype)
        self._index_from_world = np.linalg.inv(volume.world_from_index)
        self._out = None
        self.last_seconds = float("nan")

    def _brick_range(self, b: int, nb: int):
        """Slices k0..k1 (exclusive) of brick b of nb (neighbours share one slice)."""
        s, nk = self._slices, self.volume.shape[2]
        return b * s, (min(b * s + s + 1, nk) if nb > 1 else nk)

    def _upload(self, density: np.ndarray) -> None:
        upload = upload_kernel(self.storage)
        m = density.shape[0]
        for b, brick in enumerate(self._bricks):
            k0, k1 = self._brick_range(b, len(self._bricks))
            for c in range(m):  # channel by channel: no transposed copy of the whole volume on the host
                upload(brick, m, c, np.ascontiguousarray(density[c][:, :, k0:k1], self.dtype))

    @property
    def density_version(self) -> int:
        """How many times :meth:`set_density` replaced the densities (a forward's state records it)."""
        return self._version

    def set_density(self, density) -> None:
        """Replace the volume's densities (same shape, materials and grid), uploading them in place.

        Parameters
        ----------
        density : (M, I, J, K) array_like, g/cm^3, finite and >= 0

        A :meth:`forward` state made before this call no longer matches the volume: :meth:`vjp` refuses it.
        The device gets the values in its storage type (float64 with ``storage="f64"``, for gradient checks);
        :attr:`volume` holds a float32 copy.
        """
        if self.closed:
            raise RuntimeError("this VolumeProjector is closed: its device memory was freed (make a new one)")
        d = np.asarray(density, np.float64 if self.storage == "f64" else np.float32)
        if d.shape != self.volume.density.shape:
            raise ValueError(f"density must have the volume's shape {self.volume.density.shape}, got {d.shape}")
        self.volume = Volume(density=d, materials=self.volume.materials,
                             world_from_index=self.volume.world_from_index)  # validates: finite, >= 0
        self._upload(d)
        self._blocks = None
        self._uniform_fraction = None
        self._version += 1

    def _block_table(self):
        """The uniform-block table (u8, k, j, i) on the device, computed on first use (midpoint sampling)."""
        if self._blocks is None:
            dens = self.volume.density
            if self.storage == "f16":  # uniformity must hold for the stored (rounded) values
                dens = dens.astype(np.float16)
            uni = _uniform_blocks(dens, BLOCK)
            self._uniform_fraction = float(uni.mean())
            self._blocks = self._ti.ndarray(self._ti.u8, uni.shape)
            self._blocks.from_numpy(uni)
        return self._blocks

    @property
    def uniform_fraction(self) -> float:
        """Fraction of 8^3 blocks whose densities are uniform (skipped analytically by midpoint sampling)."""
        self._block_table()
        return self._uniform_fraction

    # ------------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._bricks is None

    def close(self) -> None:
        """Free the projector's device memory (volume, blocks, output); idempotent.  Later renders raise
        ``RuntimeError``."""
        self._bricks = self._blocks = self._out = self._gvol = None

    def __enter__(self) -> "VolumeProjector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def device_bytes(self) -> int:
        """Device memory held now (bytes): volume bricks, block table, output and density-gradient buffers."""
        if self.closed:
            return 0
        m = self._elem_bytes
        vol = sum(int(b.shape[0]) for b in self._bricks) * m
        item = np.dtype(self.dtype).itemsize
        out = 0 if self._out is None else item * int(np.prod(self._out.shape))
        out += 0 if self._gvol is None else item * int(self._gvol.shape[0])
        return vol + (0 if self._blocks is None else int(np.prod(self._blocks.shape))) + out

    def describe_sampling(self) -> str:
        """How rays are sampled, in words (for logs)."""
        if self.sampling == "planes":
            return "one bilinear sample per voxel plane across each ray's main axis (trapezoid rule)"
        return f"midpoint rule, trilinear samples every {self.step_mm:.3f} mm"

    @property
    def n_bricks(self) -> int:
        """Device buffers the volume is split into (1 unless the backend limits buffer sizes: Vulkan)."""
        return len(self._bricks)

    # ------------------------------------------------------------------ rendering
    def _buffer(self, n: int, rows: int, cols: int):
        shape = (n, len(self.materials), rows, cols)
        if self._out is None or tuple(self._out.shape) != shape:
            self._out = None  # free the old one first
            self._out = self._ti.ndarray(self._real, shape)
        return self._out

    def _view_params(self, cams) -> np.ndarray:
        # the kernels' view table (engine.geometry.rays) in voxel-index coordinates
        return view_table(cams, self._index_from_world).astype(self.dtype)

    def sees_volume(self, cam: Camera) -> bool:
        """True when some part of the volume's box may project inside the detector (:meth:`Camera.may_see`)."""
        return cam.may_see(self.volume.corners())

    def _cameras(self, cameras) -> list:
        if self.closed:
            raise RuntimeError("this VolumeProjector is closed: its device memory was freed (make a new one)")
        cams = camera_batch(cameras)
        for i, c in enumerate(cams):
            if not self.sees_volume(c):
                warnings.warn(f"camera {i} sees none of the volume: its image is empty", RuntimeWarning,
                              stacklevel=3)
        return cams

    def _brick_args(self) -> list:
        """The kernels' MAX_BRICKS brick parameters: the bricks, then any array of the type for the unused."""
        b = self._bricks
        return b + [b[0]] * (MAX_BRICKS - len(b))

    def _launch(self, views: np.ndarray, out, row0: int) -> None:
        bricks = self._brick_args()
        ni, nj, nk = self.volume.shape
        if self.sampling == "planes":
            self._planes(*bricks, self._slices, ni, nj, nk, out, views, len(views), row0, self._lin)
        else:
            self._march(*bricks, self._slices, ni, nj, nk, self._block_table(), out, views, len(views), row0, self._lin,
                        self.step_mm, int(self.skip_empty))

    def _chunks(self, n: int, rows: int, cols: int):
        """(view, n_views, row0, n_rows) pieces whose output fits one device buffer."""
        row_bytes = len(self.materials) * cols * np.dtype(self.dtype).itemsize  # one detector row, all materials
        if self._limit is None or n * rows * row_bytes <= self._limit:
            return [(0, n, 0, rows)]
        if rows * row_bytes <= self._limit:
            nv = self._limit // (rows * row_bytes)
            return [(v, min(nv, n - v), 0, rows) for v in range(0, n, nv)]
        nr = max(1, self._limit // row_bytes)
        return [(v, 1, r, min(nr, rows - r)) for v in range(n) for r in range(0, rows, nr)]

    def __call__(self, cameras, *, progress=None) -> np.ndarray:
        """Render one camera or a batch.

        Parameters
        ----------
        cameras : Camera or sequence of Camera (same detector shape)
        progress : callable(done_rays, total_rays), optional
            Called after each piece of work: long renders are then launched in pieces of about
            ``LAUNCH_SAMPLES`` ray samples (~1 s on a 2-core CPU), so the callback runs often and Ctrl-C
            (KeyboardInterrupt, raised between launches) stops the render within about a second.

        Returns
        -------
        (n, M, rows, cols) float32 (float64 with ``storage="f64"``), n = 1 for one Camera (always a view axis:
        docs/conventions.md, "Return shapes"); g/cm^2 per material, in the order of ``self.materials``.
        """
        return self._render(self._cameras(cameras), progress)

    def samples_per_ray(self) -> int:
        """An upper bound of the samples one ray takes: voxel planes crossed (plane sampling) or the volume's
        diagonal over the step (midpoint sampling)."""
        if self.sampling == "planes":
            return int(max(self.volume.shape))
        corners = self.volume.corners()
        diag = float(np.linalg.norm(corners.max(axis=0) - corners.min(axis=0)))
        return int(np.ceil(diag / self.step_mm))

    def estimate(self, cameras) -> dict:
        """Work and memory of rendering ``cameras`` (without rendering): ``rays``, ``samples`` (an upper bound
        of the ray samples), ``output_bytes`` (the (n, M, rows, cols) image, once on the device and once on the
        host)."""
        cams = camera_batch(cameras)
        rays = sum(int(c.rows) * int(c.cols) for c in cams)
        item = np.dtype(self.dtype).itemsize
        return dict(rays=rays, samples=rays * self.samples_per_ray(),
                    output_bytes=2 * rays * len(self.materials) * item)

    def _render(self, cams, progress=None) -> np.ndarray:
        """(n, M, rows, cols) images of validated cameras (:meth:`_cameras`), in pieces where one buffer is
        too small, or, with ``progress``, where the work is long."""
        t = time.perf_counter()
        rows, cols = cams[0].rows, cams[0].cols
        views = self._view_params(cams)
        chunks = self._chunks(len(cams), rows, cols)
        if progress is not None:
            chunks = self._split_for_work(chunks, cols)
        if len(chunks) == 1:
            out = self._buffer(len(cams), rows, cols)
            self._launch(views, out, 0)
            img = out.to_numpy()
        else:
            img = np.empty((len(cams), len(self.materials), rows, cols), self.dtype)
            done = 0
            for v, nv, r, nr in chunks:
                out = self._buffer(nv, nr, cols)
                self._launch(np.ascontiguousarray(views[v:v + nv]), out, r)
                img[v:v + nv, :, r:r + nr] = out.to_numpy()
                done += nv * nr * cols
                if progress is not None:
                    progress(done, len(cams) * rows * cols)
        if progress is not None and len(chunks) == 1:
            progress(len(cams) * rows * cols, len(cams) * rows * cols)
        self.last_seconds = time.perf_counter() - t
        return img

    def _split_for_work(self, chunks, cols: int) -> list:
        """Pieces of at most ``LAUNCH_SAMPLES`` ray samples (whole rows; at least one row)."""
        rows_per = max(1, LAUNCH_SAMPLES // max(1, cols * self.samples_per_ray()))
        out = []
        for v, nv, r, nr in chunks:
            if nv * nr <= rows_per:
                out.append((v, nv, r, nr))
                continue
            for vv in range(v, v + nv):
                out += [(vv, 1, rr, min(rows_per, r + nr - rr)) for rr in range(r, r + nr, rows_per)]
        return out

    def batch_fits(self, n: int, rows: int, cols: int) -> bool:
        """Whether n views of rows x cols pixels fit one device buffer (:meth:`render_field` renders them)."""
        return len(self._chunks(int(n), int(rows), int(cols))) == 1

    def render_field(self, cameras):
        """Render like :meth:`__call__` but leave the image on the device.

        Returns
        -------
        The projector's own Taichi ndarray, (n, M, rows, cols) float32 g/cm^2 (n = 1 for one
        Camera), for a device consumer such as :class:`engine.physics.DeviceChain`.  It is
        overwritten by the next render; read it, do not write it.  Raises ``ValueError`` when
        the image does not fit one device buffer (Vulkan: 128 MiB); :meth:`__call__` renders
        such batches in pieces.
        """
        cams = self._cameras(cameras)
        rows, cols = cams[0].rows, cams[0].cols
        if not self.batch_fits(len(cams), rows, cols):
            raise ValueError(f"{len(cams)} views of {rows} x {cols} pixels x {len(self.materials)} materials exceed "
                             f"the device's {self._limit / 2**20:.0f} MiB buffer: render fewer views at a time")
        out = self._buffer(len(cams), rows, cols)
        self._launch(self._view_params(cams), out, 0)
        return out

    # ------------------------------------------------------------------ gradients
    def forward(self, cameras):
        """Render like :meth:`__call__` and return what :meth:`vjp` needs.

        Returns
        -------
        image : np.ndarray
            (n, M, rows, cols), as :meth:`__call__` returns it.
        state : ProjectionState
            The cameras and detector shape of this render (no device data): the explicit saved state of
            this stage, so renders and their VJPs may interleave in any order.
        """
        cams = self._cameras(cameras)  # validated (and warned about) once
        img = self._render(cams)
        return img, ProjectionState(tuple(cams), img.shape, self._version)

    def vjp(self, state: ProjectionState, grad, *, pose: bool = True, density: bool = False, center=None) -> dict:
        """Gradients of a loss, given its gradient ``grad`` with respect to the images of a :meth:`forward`.

        Parameters
        ----------
        state : ProjectionState
            From :meth:`forward`.
        grad : array_like
            dL/d image, the image's shape (n, M, rows, cols), per g/cm^2.
        pose : bool
            Return ``"pose"``: (n, 6) per view, dL/d(delta, tau) for moving the volume rigidly in the world
            frame, ``x' = exp([delta]x) (x - c) + c + tau`` (delta radians, tau mm; the convention of
            :mod:`engine.geometry.transforms`), about ``center`` (default: the volume's centre).  Moving the volume by
            ``M`` is moving the camera by ``M^-1``.
        density : bool
            Return ``"density"``: (M, I, J, K), dL/d density per g/cm^3 (the back-projection of ``grad``:
            the adjoint of this linear map), float32 (float64 with ``storage="f64"``), a view of the device
            layout; needs the volume in one device buffer (``n_bricks == 1``).

        Only plane sampling (the default) has a VJP; the derivative is exact for the forward's formula
        wherever it is differentiable (see :func:`engine.volume.march.planes_vjp_kernel`).
        """
        if self.closed:
            raise RuntimeError("this VolumeProjector is closed: its device memory was freed (make a new one)")
        if not isinstance(state, ProjectionState):
            raise TypeError("state must be the ProjectionState returned by forward()")
        if state.version != self._version:
            raise ValueError("the volume's densities changed (set_density) since this forward: its gradient would "
                             "be of other densities; render again")
        if self.sampling != "planes":
            raise NotImplementedError("gradients are implemented for plane sampling (the default), not midpoint")
        if density and self.n_bricks != 1:
            raise ValueError(f"density gradients need the volume in one device buffer; it is split into "
                             f"{self.n_bricks} (max_buffer_bytes / Vulkan's 128 MiB): downsample it")
        g = np.asarray(grad, np.float64)
        if g.shape != tuple(state.shape):
            raise ValueError(f"grad has shape {g.shape}, the forward's image {state.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError("grad contains NaN or inf")
        g = np.ascontiguousarray(g, self.dtype)
        cams = list(state.cameras)
        n, m, rows, cols = state.shape
        ti = self._ti
        kernel = planes_vjp_kernel(m, self.storage, self.n_bricks, bool(density))
        gray = ti.ndarray(self._real, (n, rows, cols, 6))
        ni, nj, nk = self.volume.shape
        size = ni * nj * nk * m if density else 1
        if self._gvol is None or self._gvol.shape[0] != size:  # kept: a volume-sized buffer per call is slow
            self._gvol = None
            self._gvol = ti.ndarray(self._real, (size,))
        gvol = self._gvol
        if density:
            gvol.fill(0)
        kernel(*self._brick_args(), self._slices, ni, nj, nk, g, self._view_params(cams), n, 0, self._lin, gray, gvol)
        out = {}
        rays = gray.to_numpy().astype(np.float64)
        if pose:
            c = self.volume.center if center is None else np.asarray(center, np.float64)
            out["pose"] = np.stack([pose_gradient_from_rays(cam, rays[i], self._index_from_world, c)
                                    for i, cam in enumerate(cams)])
        if density:
            # (M, I, J, K) view of the device layout (k, j, i, m), in the projector's float type
            out["density"] = gvol.to_numpy().reshape(nk, nj, ni, m).transpose(3, 2, 1, 0)
        return out
