"""Scatter by kernel superposition on the device, with the semantics of :class:`ScatterModel`.

Per frame, on a coarse grid of ``fr x fc``-pixel blocks (``ScatterModel.block_factors``: rows and columns per
block, different for rectangular pixels):

1. block means of ``P a(w) h_g(w)`` per thickness group g (``a(w) = w exp(-w / tau)``, ``h_g``
   the hat functions of the group centres), and block sums of P and w;
2. per group a separable Gaussian convolution (the same normalised taps as the NumPy model,
   radius ``ceil(3 sigma)``, one set along rows and one along columns, zero padding: what
   ``fftconvolve(mode="same")`` computes), summed over the groups into ``F_c``;
3. the sums: ``sum(P)``, ``sum(F)`` (F interpolated at each pixel, summed per row) and
   ``mean(w)`` over the pixels behind the object (``w >= ScatterModel.object_cm``), then ``spr`` (fixed, or ``k * mean(w)`` as :func:`typical_spr`) and the scale
   ``c = spr sum(P) / sum(F)``, left on the device;
4. the detector-side kernel (:mod:`.device_noise`) interpolates ``F_c`` bilinearly to each pixel
   (:func:`bilinear`) and adds ``c F``.

Sums run per coarse row, then over rows, in float32: no host round trip.
"""
import numpy as np

from .. import backend
from ..geometry.camera import as_pixel_spacing
from .scatter import ScatterModel, field_cm2, gaussian_1d, spr_per_water_cm, upsample_index

ti = backend.ti_module()


@ti.func
def hat(w, g, centres: ti.template()):
    """Weight of thickness group g at water thickness w (cm): hat functions over ``centres`` (cm)."""
    n = centres.shape[0]
    wc = ti.min(ti.max(w, centres[0]), centres[n - 1])
    h = 0.0
    if g > 0:
        if wc >= centres[g - 1] and wc <= centres[g]:
            h = (wc - centres[g - 1]) / (centres[g] - centres[g - 1])
    if g < n - 1:
        if wc >= centres[g] and wc < centres[g + 1]:
            h = (centres[g + 1] - wc) / (centres[g + 1] - centres[g])
    return h


@ti.kernel
def block_means(primary: ti.types.ndarray(dtype=ti.f32, ndim=2), water: ti.types.ndarray(dtype=ti.f32, ndim=2),
                centres: ti.types.ndarray(dtype=ti.f32, ndim=1), tau_cm: ti.f32, fr: ti.i32, fc: ti.i32,
                min_water_cm: ti.f32,
                coarse: ti.types.ndarray(dtype=ti.f32, ndim=3), block_sums: ti.types.ndarray(dtype=ti.f32, ndim=3),
                n_groups: ti.template()):
    """coarse (G, nr, nc): block means of P a(w) h_g(w) over blocks of fr x fc pixels; block_sums (3, nr, nc):
    block sums of P, w and 1 over the pixels with w >= min_water_cm."""
    rows, cols = primary.shape[0], primary.shape[1]
    for br, bc in ti.ndrange(coarse.shape[1], coarse.shape[2]):
        acc = ti.Vector([0.0 for _ in ti.static(range(n_groups))], dt=ti.f32)
        sp = ti.f32(0.0)
        sw = ti.f32(0.0)
        sn = ti.f32(0.0)
        r1 = ti.min(rows, br * fr + fr)
        c1 = ti.min(cols, bc * fc + fc)
        for r in range(br * fr, r1):
            for c in range(bc * fc, c1):
                p = primary[r, c]
                w = water[r, c]
                pa = p * w * ti.exp(-w / tau_cm)
                for g in ti.static(range(n_groups)):
                    acc[g] += pa * hat(w, g, centres)
                if w >= min_water_cm:
                    sp += p
                    sw += w
                    sn += 1.0
        inv = 1.0 / ti.f32((r1 - br * fr) * (c1 - bc * fc))
        for g in ti.static(range(n_groups)):
            coarse[g, br, bc] = acc[g] * inv
        block_sums[0, br, bc] = sp
        block_sums[1, br, bc] = sw
        block_sums[2, br, bc] = sn


@ti.kernel
def convolve(coarse: ti.types.ndarray(dtype=ti.f32, ndim=3), taps_c: ti.types.ndarray(dtype=ti.f32, ndim=2),
             radii_c: ti.types.ndarray(dtype=ti.i32, ndim=1), taps_r: ti.types.ndarray(dtype=ti.f32, ndim=2),
             radii_r: ti.types.ndarray(dtype=ti.i32, ndim=1), tmp: ti.types.ndarray(dtype=ti.f32, ndim=3),
             out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """out = sum_g G_g * coarse[g] (2-D Gaussian, zero padding), done along columns then along rows.
    taps_c, taps_r (G, K): group g's 1-D taps along columns / rows, centred at index radii_c[g] / radii_r[g]."""
    ng, nr, nc = coarse.shape[0], coarse.shape[1], coarse.shape[2]
    for g, i, j in ti.ndrange(ng, nr, nc):  # along columns
        rad = radii_c[g]
        s = ti.f32(0.0)
        for k in range(ti.max(-rad, -j), ti.min(rad, nc - 1 - j) + 1):
            s += taps_c[g, k + rad] * coarse[g, i, j + k]
        tmp[g, i, j] = s
    for i, j in ti.ndrange(nr, nc):  # along rows, summed over the groups
        s = ti.f32(0.0)
        for g in range(ng):
            rad = radii_r[g]
            for k in range(ti.max(-rad, -i), ti.min(rad, nr - 1 - i) + 1):
                s += taps_r[g, k + rad] * tmp[g, i + k, j]
        out[i, j] = s


@ti.func
def bilinear(fc: ti.template(), row_j: ti.template(), row_t: ti.template(), col_j: ti.template(),
             col_t: ti.template(), r, c):
    """The coarse field fc (nr, nc) interpolated at detector pixel (r, c) (tables of ``upsample_index``)."""
    nr, nc = fc.shape[0], fc.shape[1]
    j0, j1 = row_j[r], ti.min(row_j[r] + 1, nr - 1)
    i0, i1 = col_j[c], ti.min(col_j[c] + 1, nc - 1)
    tr, tc = row_t[r], col_t[c]
    top = (1.0 - tc) * fc[j0, i0] + tc * fc[j0, i1]
    bottom = (1.0 - tc) * fc[j1, i0] + tc * fc[j1, i1]
    return (1.0 - tr) * top + tr * bottom


@ti.kernel
def scale_factor(water: ti.types.ndarray(dtype=ti.f32, ndim=2), block_sums: ti.types.ndarray(dtype=ti.f32, ndim=3),
                 fc: ti.types.ndarray(dtype=ti.f32, ndim=2), row_j: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 row_t: ti.types.ndarray(dtype=ti.f32, ndim=1), col_j: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 col_t: ti.types.ndarray(dtype=ti.f32, ndim=1), min_water_cm: ti.f32,
                 f_rows: ti.types.ndarray(dtype=ti.f32, ndim=1), row_sums: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 scalars: ti.types.ndarray(dtype=ti.f32, ndim=1), spr_fixed: ti.f32, spr_slope: ti.f32):
    """scalars = (sum P, sum F, mean w (cm), spr, c = spr sum(P) / sum(F)) over the pixels with
    w >= min_water_cm; spr_slope > 0: automatic SPR ``max(spr_slope * mean w, 0)``, else spr_fixed."""
    nr, nc = block_sums.shape[1], block_sums.shape[2]
    for r in range(water.shape[0]):  # sum of F, row by row
        s = ti.f32(0.0)
        for c in range(water.shape[1]):
            if water[r, c] >= min_water_cm:
                s += bilinear(fc, row_j, row_t, col_j, col_t, r, c)
        f_rows[r] = s
    for b in range(nr):
        for q in ti.static(range(3)):
            s = ti.f32(0.0)
            for c in range(nc):
                s += block_sums[q, b, c]
            row_sums[q, b] = s
    for _ in range(1):
        tot = ti.Vector([0.0, 0.0, 0.0], dt=ti.f32)
        for b in range(nr):
            for q in ti.static(range(3)):
                tot[q] += row_sums[q, b]
        sf = ti.f32(0.0)
        for r in range(water.shape[0]):
            sf += f_rows[r]
        mean_w = ti.f32(0.0)
        if tot[2] > 0.0:
            mean_w = tot[1] / tot[2]
        spr = spr_fixed
        if spr_slope > 0.0:
            spr = ti.max(spr_slope * mean_w, 0.0)
        c = ti.f32(0.0)
        if sf > 0.0:
            c = spr * tot[0] / sf
        scalars[0] = tot[0]
        scalars[1] = sf
        scalars[2] = mean_w
        scalars[3] = spr
        scalars[4] = c


class DeviceScatter:
    """Device buffers and tables of one :class:`ScatterModel` for one detector shape.

    Parameters
    ----------
    model : ScatterModel
    shape : (rows, cols) of the detector, pixels
    pixel_spacing : detector pixel pitch, mm: one number or ``(row pitch, column pitch)``
    kvp : tube voltage (kV), for the automatic SPR
    """

    def __init__(self, model: ScatterModel, shape, pixel_spacing, kvp: float):
        ti_ = backend.ti_module()
        rows, cols = shape
        spacing = as_pixel_spacing(pixel_spacing, "pixel_spacing")
        self.model = model
        self.f = fr, fc = model.block_factors(spacing)  # pixels per block along rows, columns
        nr, nc = -(-rows // fr), -(-cols // fc)
        g = len(model.group_centres_cm)
        self.n_groups = g
        self.centres = self._upload(ti_, np.asarray(model.group_centres_cm, np.float32))
        self.taps = []  # (taps, radii) along columns, then along rows: the arguments of convolve
        for mm in reversed(model.coarse_spacing(spacing)):
            taps = [gaussian_1d(s) for s in model.sigmas_px(mm)]
            table = np.zeros((g, max(t.size for t in taps)), np.float32)
            for i, t in enumerate(taps):
                table[i, :t.size] = t
            self.taps += [self._upload(ti_, table), self._upload(ti_, np.array([t.size // 2 for t in taps], np.int32))]
        self.up = []  # (j, t) interpolation tables for rows and columns
        for n, f in ((rows, fr), (cols, fc)):
            j, t = upsample_index(n, f)
            self.up += [self._upload(ti_, j), self._upload(ti_, t.astype(np.float32))]
        self.min_water_cm = float(model.object_cm)  # pixels behind the object enter the SPR's sums
        self.coarse = ti_.ndarray(ti_.f32, (g, nr, nc))
        self.tmp = ti_.ndarray(ti_.f32, (g, nr, nc))
        self.fc = ti_.ndarray(ti_.f32, (nr, nc))
        self.block_sums = ti_.ndarray(ti_.f32, (3, nr, nc))
        self.row_sums = ti_.ndarray(ti_.f32, (3, nr))
        self.f_rows = ti_.ndarray(ti_.f32, (rows,))
        self.scalars = ti_.ndarray(ti_.f32, (5,))
        self.spr_fixed = 0.0 if model.spr is None else float(model.spr)
        self.spr_slope = spr_per_water_cm(kvp, field_cm2(shape, spacing), model.grid) if model.spr is None else 0.0
        if model.spr is None and self.spr_slope <= 0:
            self.spr_fixed = 0.0  # typical_spr clips at 0

    @staticmethod
    def _upload(ti_, a):
        dt = ti_.i32 if a.dtype == np.int32 else ti_.f32
        out = ti_.ndarray(dt, a.shape)
        out.from_numpy(a)
        return out

    def run(self, primary, water):
        """Fill the coarse scatter field and the scalars from the primary and water-thickness arrays."""
        block_means(primary, water, self.centres, float(self.model.tau_cm), *self.f, self.min_water_cm, self.coarse,
                    self.block_sums, self.n_groups)
        convolve(self.coarse, *self.taps, self.tmp, self.fc)
        scale_factor(water, self.block_sums, self.fc, *self.up, self.min_water_cm, self.f_rows, self.row_sums,
                     self.scalars, self.spr_fixed, self.spr_slope)

    def spr(self) -> float:
        """The SPR of the last run (copies one number to the host)."""
        return float(self.scalars.to_numpy()[3])
