"""Polychromatic Beer-Lambert on the device: mass thickness per material -> primary transmission.

The same formula as :class:`engine.physics.BeerLambert`, per pixel:
``T = sum_E w_E exp(-sum_m mu_mE L_m)`` with the detector's normalised weights ``w_E``
(energy-integrating or photon-counting), mass attenuation ``mu_mE`` (cm^2/g) and mass
thickness ``L_m`` (g/cm^2); also the water-equivalent thickness ``sum_m q_m L_m`` (cm) that
the scatter model needs.  Arithmetic in float32.
"""
from .. import backend

ti = backend.ti_module()


@ti.kernel
def primary_and_water(mass: ti.types.ndarray(dtype=ti.f32, ndim=3), mu: ti.types.ndarray(dtype=ti.f32, ndim=2),
                      weights: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      water_per_mass: ti.types.ndarray(dtype=ti.f32, ndim=1),
                      primary: ti.types.ndarray(dtype=ti.f32, ndim=2), water: ti.types.ndarray(dtype=ti.f32, ndim=2),
                      n_mat: ti.template()):
    """mass (M, rows, cols) g/cm^2, mu (M, E) cm^2/g, weights (E,) summing to 1, water_per_mass (M,) cm per
    g/cm^2 -> primary (rows, cols) I/I0 and water (rows, cols) cm."""
    for r, c in ti.ndrange(primary.shape[0], primary.shape[1]):
        path = ti.Vector([mass[m, r, c] for m in ti.static(range(n_mat))], dt=ti.f32)
        t = ti.f32(0.0)
        for e in range(weights.shape[0]):
            s = ti.f32(0.0)
            for m in ti.static(range(n_mat)):
                s += mu[m, e] * path[m]
            t += weights[e] * ti.exp(-s)
        wc = ti.f32(0.0)
        for m in ti.static(range(n_mat)):
            wc += water_per_mass[m] * path[m]
        primary[r, c] = t
        water[r, c] = wc


@ti.kernel
def add_channel(dst: ti.types.ndarray(dtype=ti.f32, ndim=3), dst_channel: ti.i32, src: ti.types.ndarray(ndim=4), view: ti.i32,
                src_channel: ti.i32, scale: ti.f32):
    """dst[dst_channel] += scale * src[view, src_channel] for a projector's (n, M, rows, cols) device array."""
    for r, c in ti.ndrange(dst.shape[1], dst.shape[2]):
        dst[dst_channel, r, c] += scale * ti.cast(src[view, src_channel, r, c], ti.f32)


@ti.kernel
def add_array(dst: ti.types.ndarray(dtype=ti.f32, ndim=3), dst_channel: ti.i32,
              src: ti.types.ndarray(dtype=ti.f32, ndim=3), src_channel: ti.i32, scale: ti.f32):
    """dst[dst_channel] += scale * src[src_channel] for a (M, rows, cols) device array."""
    for r, c in ti.ndrange(dst.shape[1], dst.shape[2]):
        dst[dst_channel, r, c] += scale * src[src_channel, r, c]


@ti.kernel
def add_flat(dst: ti.types.ndarray(dtype=ti.f32, ndim=3), dst_channel: ti.i32, src: ti.types.ndarray(ndim=1),
             offset: ti.i32, scale: ti.f32):
    """dst[dst_channel] += scale * the (rows, cols) image at ``offset`` of a flat device array (any float type),
    e.g. one view and material of a mesh projector's ``render_field``."""
    cols = dst.shape[2]
    for r, c in ti.ndrange(dst.shape[1], cols):
        dst[dst_channel, r, c] += scale * ti.cast(src[offset + r * cols + c], ti.f32)


@ti.kernel
def copy_view(dst: ti.types.ndarray(dtype=ti.f32, ndim=3), view: ti.i32, src: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    """dst[view] = src (a frame into a batch of images)."""
    for r, c in ti.ndrange(src.shape[0], src.shape[1]):
        dst[view, r, c] = src[r, c]
