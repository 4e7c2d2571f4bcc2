"""The detector value on the device: primary + scatter, quantum and electronic noise, output units.

Per pixel, with the semantics of :class:`NoiseModel` and :func:`engine.simulate`:

* ``clean = P + c F`` (flat-field-normalised, 1 = unattenuated beam), F interpolated
  bilinearly from the coarse scatter grid (:mod:`.device_scatter`), c its scale;
* with noise: ``(Poisson(N_eff clean) + sigma_e z) / N_eff``, ``N_eff`` the effective quanta
  per pixel of the unattenuated beam, ``sigma_e`` the electronic noise in quanta, ``z`` standard
  normal; draws from the counter-based generator of :mod:`.device_rng` (same seed, same image);
* output ``intensity`` (as is) or ``line_integral``: ``-ln max(image, floor)``, the floor half a
  quantum (``0.5 / N_eff``) with noise and 1e-12 without.
"""
from .. import backend
from .device_rng import normal, pixel_key, poisson
from .device_scatter import bilinear

ti = backend.ti_module()


@ti.kernel
def detect(primary: ti.types.ndarray(dtype=ti.f32, ndim=2), fc: ti.types.ndarray(dtype=ti.f32, ndim=2),
           row_j: ti.types.ndarray(dtype=ti.i32, ndim=1), row_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
           col_j: ti.types.ndarray(dtype=ti.i32, ndim=1), col_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
           scalars: ti.types.ndarray(dtype=ti.f32, ndim=1), has_scatter: ti.i32,
           quanta: ti.f32, electronic_std: ti.f32, seed: ti.u32, line_integral: ti.i32,
           scatter: ti.types.ndarray(dtype=ti.f32, ndim=2), clean: ti.types.ndarray(dtype=ti.f32, ndim=2),
           image: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """primary (rows, cols) I/I0 -> scatter, clean (noiseless, output units) and image (rows, cols).
    quanta <= 0: no noise."""
    rows, cols = primary.shape[0], primary.shape[1]
    for r, c in ti.ndrange(rows, cols):
        s = ti.f32(0.0)
        if has_scatter != 0:
            s = scalars[4] * bilinear(fc, row_j, row_t, col_j, col_t, r, c)
        total = primary[r, c] + s
        value = total
        floor = ti.f32(1e-12)
        if quanta > 0.0:
            key = pixel_key(seed, r * cols + c)
            counts = poisson(total * quanta, key)
            if electronic_std > 0.0:
                counts += electronic_std * normal(key)
            value = counts / quanta
            floor = 0.5 / quanta
        if line_integral != 0:
            value = -ti.log(ti.max(value, floor))
            total = -ti.log(ti.max(total, 1e-30))
        scatter[r, c] = s
        clean[r, c] = total
        image[r, c] = value
