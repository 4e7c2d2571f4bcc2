"""Finishing a mesh distance map on the device: supersampling's block mean and the soft-edge blur.

The mesh kernels write one path length per (sub-pixel) ray into a flat ``(n, M, rows * s, cols * s)``
array.  :class:`Finisher` turns it into the ``(n, M, rows, cols)`` image on the device:

* block mean over ``s x s`` sub-pixels (anti-aliasing, ``MeshProjector(supersample=s)``);
* a Gaussian blur of ``sigma`` pixels (soft edges), separable, zero padding, taps normalised and cut at
  ``int(4 sigma + 0.5)`` pixels: the operator of ``scipy.ndimage.gaussian_filter(mode="constant",
  truncate=4.0)``.

and applies the adjoint to an image gradient: the blur is symmetric with zero padding, hence its own
adjoint; the block mean's adjoint gives each sub-pixel its pixel's gradient divided by ``s^2``.
"""
import functools

import numpy as np
from scipy import ndimage

from .. import backend


def gaussian_taps(sigma_px: float) -> np.ndarray:
    """Normalised taps of scipy's ``gaussian_filter1d(truncate=4.0)`` for ``sigma_px`` > 0 pixels."""
    radius = int(4.0 * sigma_px + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma_px) ** 2)
    return w / w.sum()


def soft_blur(images, sigma_px: float) -> np.ndarray:
    """The soft-edge blur on the host: the Gaussian of ``sigma_px`` pixels over the last two axes (zero padding,
    ``truncate=4.0``), the operator the device applies (targets get it to match a soft render); float64;
    ``sigma_px = 0``: the images as they are."""
    a = np.asarray(images, np.float64)
    if not sigma_px > 0:
        return a
    return ndimage.gaussian_filter(a, (0.0,) * (a.ndim - 2) + (float(sigma_px),) * 2, mode="constant", truncate=4.0)


@functools.cache
def finish_kernels(bits: int):
    """``(bin_mean, unbin, blur, copy)`` over flat arrays of float``bits``, compiled once per process."""
    ti = backend.ti_module()
    real = ti.f64 if bits == 64 else ti.f32
    arr = ti.types.ndarray(dtype=real, ndim=1)

    @ti.kernel
    def bin_mean(src: arr, dst: arr, planes: ti.i32, rows: ti.i32, cols: ti.i32, s: ti.i32):
        """dst (planes, rows, cols) = block means of src (planes, rows * s, cols * s)."""
        for p, r, c in ti.ndrange(planes, rows, cols):
            acc = ti.cast(0.0, real)
            for a, b in ti.ndrange(s, s):
                acc += src[(p * rows * s + r * s + a) * cols * s + c * s + b]
            dst[(p * rows + r) * cols + c] = acc / ti.cast(s * s, real)

    @ti.kernel
    def unbin(src: arr, dst: arr, planes: ti.i32, rows: ti.i32, cols: ti.i32, s: ti.i32):
        """dst (planes, rows * s, cols * s) = src (planes, rows, cols) / s^2 on every sub-pixel."""
        for p, r, c in ti.ndrange(planes, rows * s, cols * s):
            dst[(p * rows * s + r) * cols * s + c] = src[(p * rows + r // s) * cols + c // s] / ti.cast(s * s, real)

    @ti.kernel
    def blur(src: arr, dst: arr, planes: ti.i32, rows: ti.i32, cols: ti.i32, taps: arr, radius: ti.i32,
             along_rows: ti.i32):
        """dst = src convolved with ``taps`` (length 2 radius + 1) along rows (1) or columns (0), zero padding."""
        for p, r, c in ti.ndrange(planes, rows, cols):
            acc = ti.cast(0.0, real)
            for k in range(-radius, radius + 1):
                rr, cc = r, c + k
                if along_rows != 0:
                    rr, cc = r + k, c
                if 0 <= rr < rows and 0 <= cc < cols:
                    acc += taps[k + radius] * src[(p * rows + rr) * cols + cc]
            dst[(p * rows + r) * cols + c] = acc

    @ti.kernel
    def copy(src: arr, dst: arr, n: ti.i32):
        for i in range(n):
            dst[i] = src[i]

    return bin_mean, unbin, blur, copy


class Finisher:
    """Device buffers and taps of one projector's finishing steps.

    Parameters
    ----------
    supersample : int, sub-pixels per pixel along each axis (1: none)
    sigma_px : float, soft-edge blur in pixels (0: none)
    bits : 32 or 64, the float type of the projector's arrays
    mem : the projector's :class:`engine.mesh.bvh_device.DeviceArrays` (buffers are kept there, one owner)
    """

    def __init__(self, supersample: int, sigma_px: float, bits: int, mem):
        ti = backend.ti_module()
        self.s = int(supersample)
        self.sigma = float(sigma_px)
        self.real = ti.f64 if bits == 64 else ti.f32
        self._np = np.float64 if bits == 64 else np.float32
        self._mem = mem
        self._bin, self._unbin, self._blur, self._copy = finish_kernels(bits)
        self.radius = 0
        if self.sigma > 0:
            taps = gaussian_taps(self.sigma).astype(self._np)
            self.radius = taps.size // 2
            mem.new("taps", self.real, taps.size).from_numpy(taps)

    @property
    def identity(self) -> bool:
        """True when there is nothing to do (no supersampling, no blur)."""
        return self.s == 1 and self.sigma == 0

    def _buf(self, name: str, size: int):
        if self._mem.size(name) < size:
            self._mem.new(name, self.real, size)
        return self._mem[name]

    def _blur2(self, a, planes: int, rows: int, cols: int):
        """Blur the flat (planes, rows, cols) array ``a`` in place (through a scratch buffer)."""
        tmp = self._buf("finish_tmp", planes * rows * cols)
        taps = self._mem["taps"]
        self._blur(a, tmp, planes, rows, cols, taps, self.radius, 0)
        self._blur(tmp, a, planes, rows, cols, taps, self.radius, 1)

    def forward(self, raw, planes: int, rows: int, cols: int):
        """The finished flat (planes, rows, cols) image of ``raw`` (planes, rows * s, cols * s): ``raw`` itself
        when there is nothing to do, else the finisher's buffer (overwritten by the next call)."""
        if self.identity:
            return raw
        out = self._buf("finish_out", planes * rows * cols)
        if self.s > 1:
            self._bin(raw, out, planes, rows, cols, self.s)
        else:
            self._copy(raw, out, planes * rows * cols)
        if self.sigma > 0:
            self._blur2(out, planes, rows, cols)
        return out

    def adjoint(self, grad, planes: int, rows: int, cols: int):
        """The gradient with respect to the raw sub-pixel array (flat, planes x rows s x cols s) of a gradient
        ``grad`` (flat device array, planes x rows x cols; blurred in place when sigma > 0)."""
        if self.sigma > 0:
            self._blur2(grad, planes, rows, cols)
        if self.s == 1:
            return grad
        out = self._buf("finish_grad", planes * rows * cols * self.s ** 2)
        self._unbin(grad, out, planes, rows, cols, self.s)
        return out
