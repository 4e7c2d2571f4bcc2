"""The adjoint of the device physics chain: d loss / d image -> d loss / d mass thickness, on the device.

Hand-written adjoint kernels of :mod:`.device_beer_lambert`, :mod:`.device_scatter` and the noiseless part of
:mod:`.device_noise`, in the order the forward ran them backwards (noise is not differentiated: a noisy
image's gradient is the noiseless image's, as if the noise were an independent additive term):

1. ``total_grad``: ``g_T = g`` (intensity) or ``-g / T`` (line integral, ``T = P + c F``), and, per detector row,
   ``sum g_T F`` (the scatter scale's gradient);
2. ``scale_grad`` (one thread): the gradients of ``c = spr sum(P) / sum(F)`` with respect to ``sum(P)``, ``sum(F)``
   and the SPR, and of the automatic SPR (``k mean(w)`` over the pixels behind the object) per such pixel;
3. ``upsample_adjoint``: ``g_F = c g_T (+ g_sum(F) behind the object)`` spread back onto the coarse grid (the
   transpose of the bilinear interpolation; float atomics);
4. ``convolve_each``: per thickness group, the same zero-padded separable Gaussian (symmetric: its own adjoint);
5. ``pixel_grad``: the transpose of the block means, through ``P a(w) h_g(w)``, plus the direct terms, then
   through Beer-Lambert (``dP/dL_m = -sum_E w_E mu_mE exp(-sum_m mu_mE L_m)``) and the water-equivalent
   thickness (``dw/dL_m = q_m``) to ``d loss / d L_m``.

The NumPy chain's :meth:`engine.physics.PhysicsChain.vjp` (float64) is the reference these kernels are tested
against (float32 here).
"""
from .. import backend
from .device_scatter import bilinear, hat

ti = backend.ti_module()


@ti.func
def hat_slope(w, g, centres: ti.template()):
    """d hat_g / d w (1/cm): as :meth:`ScatterModel._groups`, zero outside (centres[0], centres[-1])."""
    n = centres.shape[0]
    d = 0.0
    if w > centres[0] and w < centres[n - 1]:
        if g > 0:
            if w >= centres[g - 1] and w <= centres[g]:
                d = 1.0 / (centres[g] - centres[g - 1])
        if g < n - 1:
            if w >= centres[g] and w < centres[g + 1]:
                d = -1.0 / (centres[g + 1] - centres[g])
    return d


@ti.kernel
def total_grad(grad: ti.types.ndarray(dtype=ti.f32, ndim=2), primary: ti.types.ndarray(dtype=ti.f32, ndim=2),
               fc: ti.types.ndarray(dtype=ti.f32, ndim=2), row_j: ti.types.ndarray(dtype=ti.i32, ndim=1),
               row_t: ti.types.ndarray(dtype=ti.f32, ndim=1), col_j: ti.types.ndarray(dtype=ti.i32, ndim=1),
               col_t: ti.types.ndarray(dtype=ti.f32, ndim=1), scalars: ti.types.ndarray(dtype=ti.f32, ndim=1),
               has_scatter: ti.i32, line_integral: ti.i32, g_total: ti.types.ndarray(dtype=ti.f32, ndim=2),
               gf_rows: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """g_total = d loss / d (P + c F); gf_rows[r] = sum over row r of g_total * F (F the unscaled scatter)."""
    rows, cols = primary.shape[0], primary.shape[1]
    for r in range(rows):
        s = ti.f32(0.0)
        for c in range(cols):
            f = ti.f32(0.0)
            if has_scatter != 0:
                f = bilinear(fc, row_j, row_t, col_j, col_t, r, c)
            total = primary[r, c] + scalars[4] * f
            g = grad[r, c]
            if line_integral != 0:
                g = -g / total if total > 1e-30 else 0.0
            g_total[r, c] = g
            s += g * f
        gf_rows[r] = s


@ti.kernel
def scale_grad(gf_rows: ti.types.ndarray(dtype=ti.f32, ndim=1), scalars: ti.types.ndarray(dtype=ti.f32, ndim=1),
               block_sums: ti.types.ndarray(dtype=ti.f32, ndim=3), spr_slope: ti.f32,
               g_scalars: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """g_scalars = (d/d sum(P), d/d sum(F), d/d w per pixel behind the object) from the scale
    ``c = spr sum(P) / sum(F)`` (scalars as :func:`engine.physics.device_scatter.scale_factor` left them)."""
    for _ in range(1):
        g_c = ti.f32(0.0)
        for r in range(gf_rows.shape[0]):
            g_c += gf_rows[r]
        sp, sf, spr, c = scalars[0], scalars[1], scalars[3], scalars[4]
        n = ti.f32(0.0)
        for b, k in ti.ndrange(block_sums.shape[1], block_sums.shape[2]):
            n += block_sums[2, b, k]
        g_sp = ti.f32(0.0)
        g_sf = ti.f32(0.0)
        g_w = ti.f32(0.0)
        if sf > 0.0:
            g_sp = g_c * spr / sf
            g_sf = -g_c * c / sf
            if spr_slope > 0.0 and spr > 0.0 and n > 0.0:  # automatic SPR = slope * mean(w) over n pixels
                g_w = g_c * sp / sf * spr_slope / n
        g_scalars[0] = g_sp
        g_scalars[1] = g_sf
        g_scalars[2] = g_w


@ti.kernel
def upsample_adjoint(g_total: ti.types.ndarray(dtype=ti.f32, ndim=2), water: ti.types.ndarray(dtype=ti.f32, ndim=2),
                     row_j: ti.types.ndarray(dtype=ti.i32, ndim=1), row_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     col_j: ti.types.ndarray(dtype=ti.i32, ndim=1), col_t: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     scalars: ti.types.ndarray(dtype=ti.f32, ndim=1), g_scalars: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     min_water_cm: ti.f32, g_fc: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """g_fc = U^T g_F with g_F = c g_total + d/d sum(F) behind the object (g_fc zeroed by the caller)."""
    nr, nc = g_fc.shape[0], g_fc.shape[1]
    for r, c in ti.ndrange(g_total.shape[0], g_total.shape[1]):
        g = scalars[4] * g_total[r, c]
        if water[r, c] >= min_water_cm:
            g += g_scalars[1]
        j0, j1 = row_j[r], ti.min(row_j[r] + 1, nr - 1)
        i0, i1 = col_j[c], ti.min(col_j[c] + 1, nc - 1)
        tr, tc = row_t[r], col_t[c]
        ti.atomic_add(g_fc[j0, i0], (1.0 - tr) * (1.0 - tc) * g)
        ti.atomic_add(g_fc[j0, i1], (1.0 - tr) * tc * g)
        ti.atomic_add(g_fc[j1, i0], tr * (1.0 - tc) * g)
        ti.atomic_add(g_fc[j1, i1], tr * tc * g)


@ti.kernel
def convolve_each(g_fc: ti.types.ndarray(dtype=ti.f32, ndim=2), taps_c: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  radii_c: ti.types.ndarray(dtype=ti.i32, ndim=1), taps_r: ti.types.ndarray(dtype=ti.f32, ndim=2),
                  radii_r: ti.types.ndarray(dtype=ti.i32, ndim=1), tmp: ti.types.ndarray(dtype=ti.f32, ndim=3),
                  out: ti.types.ndarray(dtype=ti.f32, ndim=3)):
    """out[g] = G_g * g_fc for every group g (the adjoint of :func:`engine.physics.device_scatter.convolve`; taps
    along columns and along rows as there)."""
    ng, nr, nc = out.shape[0], out.shape[1], out.shape[2]
    for g, i, j in ti.ndrange(ng, nr, nc):
        rad = radii_c[g]
        s = ti.f32(0.0)
        for k in range(ti.max(-rad, -j), ti.min(rad, nc - 1 - j) + 1):
            s += taps_c[g, k + rad] * g_fc[i, j + k]
        tmp[g, i, j] = s
    for g, i, j in ti.ndrange(ng, nr, nc):
        rad = radii_r[g]
        s = ti.f32(0.0)
        for k in range(ti.max(-rad, -i), ti.min(rad, nr - 1 - i) + 1):
            s += taps_r[g, k + rad] * tmp[g, i + k, j]
        out[g, i, j] = s


@ti.kernel
def pixel_grad(mass: ti.types.ndarray(dtype=ti.f32, ndim=3), mu: ti.types.ndarray(dtype=ti.f32, ndim=2),
               weights: ti.types.ndarray(dtype=ti.f32, ndim=1), water_per_mass: ti.types.ndarray(dtype=ti.f32, ndim=1),
               primary: ti.types.ndarray(dtype=ti.f32, ndim=2), water: ti.types.ndarray(dtype=ti.f32, ndim=2),
               g_total: ti.types.ndarray(dtype=ti.f32, ndim=2), g_coarse: ti.types.ndarray(dtype=ti.f32, ndim=3),
               g_scalars: ti.types.ndarray(dtype=ti.f32, ndim=1), centres: ti.types.ndarray(dtype=ti.f32, ndim=1),
               tau_cm: ti.f32, fr: ti.i32, fc: ti.i32, min_water_cm: ti.f32, has_scatter: ti.i32,
               g_mass: ti.types.ndarray(dtype=ti.f32, ndim=3), n_mat: ti.template(), n_groups: ti.template()):
    """g_mass (M, rows, cols) = d loss / d mass thickness (per g/cm^2) from g_total and the scatter adjoints."""
    rows, cols = primary.shape[0], primary.shape[1]
    for r, c in ti.ndrange(rows, cols):
        gp = g_total[r, c]
        gw = ti.f32(0.0)
        if has_scatter != 0:
            p = primary[r, c]
            w = water[r, c]
            if w >= min_water_cm:
                gp += g_scalars[0]
                gw += g_scalars[2]
            br, bc = r // fr, c // fc
            count = ti.f32((ti.min(rows, br * fr + fr) - br * fr) * (ti.min(cols, bc * fc + fc) - bc * fc))
            e = ti.exp(-w / tau_cm)
            a = w * e
            da = e * (1.0 - w / tau_cm)
            for g in ti.static(range(n_groups)):
                q = g_coarse[g, br, bc] / count
                gp += q * a * hat(w, g, centres)
                gw += q * p * (da * hat(w, g, centres) + a * hat_slope(w, g, centres))
        path = ti.Vector([mass[m, r, c] for m in ti.static(range(n_mat))], dt=ti.f32)
        gl = ti.Vector([0.0 for _ in ti.static(range(n_mat))], dt=ti.f32)
        for k in range(weights.shape[0]):
            s = ti.f32(0.0)
            for m in ti.static(range(n_mat)):
                s += mu[m, k] * path[m]
            t = weights[k] * ti.exp(-s)
            for m in ti.static(range(n_mat)):
                gl[m] -= gp * t * mu[m, k]
        for m in ti.static(range(n_mat)):
            g_mass[m, r, c] = gl[m] + gw * water_per_mass[m]
