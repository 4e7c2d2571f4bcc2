"""Counter-based random numbers on the device: uniform, normal and Poisson draws per pixel.

There is no generator state: draw ``d`` of pixel ``p`` for seed ``s`` is a pure function
``hash(s, p, d)`` (PCG's RXS-M-XS output permutation, O'Neill 2014, applied as a hash as
in Jarzynski & Olano, JCGT 9(3), 2020).  So an image is the same for the same seed on any
backend and any thread schedule, and pixels are independent.

Uniforms have 24 random bits and lie in the open interval (0, 1).

Poisson sampling (``poisson``), by mean ``mu``:

* ``mu < 10``: inversion by sequential search over the CDF (one uniform; expected
  ``mu + 1`` steps).  The float32 CDF is summed until the next term can no longer change
  it, so the tail beyond that point (probability below about 1e-7) is folded onto it.
* ``mu >= 10``: Hörmann's transformed rejection with squeeze, PTRS (Insurance: Math. Econ.
  12, 1993; the algorithm NumPy uses for the same range); exact up to float32 arithmetic.
  The log-pmf in the acceptance test is evaluated as ``-mu * phi((k - mu) / mu) -
  log(2 pi k) / 2 - stirling(k)``, ``phi(x) = (1 + x) log(1 + x) - x``, which has no
  cancellation in float32 even for mu ~ 1e6 (``k log mu - lgamma(k + 1)`` would).
  Counts above 2^24 (mean photons per pixel beyond about 1.6e7) are rounded to float32.

Normal draws: Box-Muller from two uniforms.
"""
import math

from .. import backend

ti = backend.ti_module()

GAUSS_DRAW = 0x7FFFFF00  # draw index of the two uniforms of a pixel's normal deviate (Poisson uses 0, 1, 2, ...)


@ti.func
def pcg(v):
    """u32 -> u32 bijective hash (PCG RXS-M-XS)."""
    state = ti.cast(v, ti.u32) * ti.u32(747796405) + ti.u32(2891336453)
    word = ((state >> ((state >> ti.u32(28)) + ti.u32(4))) ^ state) * ti.u32(277803737)
    return (word >> ti.u32(22)) ^ word


@ti.func
def pixel_key(seed, pixel):
    """Key of one pixel (u32) for a u32 seed and an integer pixel index; distinct pixels, distinct keys."""
    return pcg(pcg(seed) ^ ti.cast(pixel, ti.u32))


@ti.func
def uniform(key, draw):
    """Draw number ``draw`` (int) of a pixel's stream, float32 in (0, 1)."""
    h = pcg(key ^ pcg(ti.cast(draw, ti.u32) + ti.u32(0x9E3779B9)))
    return ti.cast(h >> ti.u32(8), ti.f32) * (1.0 / 16777216.0) + (0.5 / 16777216.0)


@ti.func
def normal(key):
    """A standard normal deviate of a pixel (Box-Muller)."""
    u1 = uniform(key, GAUSS_DRAW)
    u2 = uniform(key, GAUSS_DRAW + 1)
    return ti.sqrt(-2.0 * ti.log(u1)) * ti.cos(2.0 * math.pi * u2)


@ti.func
def _phi(x):
    """(1 + x) log(1 + x) - x, accurate near 0 (series for |x| < 1/4)."""
    r = 0.0
    if ti.abs(x) < 0.25:
        xn = x * x
        for n in ti.static(range(2, 16)):
            r += (1.0 if n % 2 == 0 else -1.0) * xn / (n * (n - 1))
            xn *= x
    else:
        r = (1.0 + x) * ti.log(1.0 + x) - x
    return r


@ti.func
def poisson_log_pmf(k, mu):
    """log P(K = k) for K ~ Poisson(mu), k >= 0 an integer-valued float, mu >= 10 (see module doc)."""
    r = 0.0
    if k < 0.5:
        r = -mu
    elif k < 10.0:
        lf = 0.0  # log k!
        j = 2.0
        while j <= k + 0.5:
            lf += ti.log(j)
            j += 1.0
        r = k * ti.log(mu) - mu - lf
    else:
        stirling = 1.0 / (12.0 * k) - 1.0 / (360.0 * k * k * k) + 1.0 / (1260.0 * k * k * k * k * k)
        r = -mu * _phi((k - mu) / mu) - 0.5 * ti.log(2.0 * math.pi * k) - stirling
    return r


@ti.func
def poisson(mu, key):
    """A Poisson(mu) count as float32 (mu >= 0, float32) from a pixel's stream (draws 0, 1, 2, ...)."""
    k = 0.0
    if mu <= 0.0:
        k = 0.0
    elif mu < 10.0:  # inversion
        u = uniform(key, 0)
        p = ti.exp(-mu)
        cdf = p
        n = 0.0
        while u > cdf and p > 1e-7 * cdf:
            n += 1.0
            p *= mu / n
            cdf += p
        k = n
    else:  # PTRS
        b = 0.931 + 2.53 * ti.sqrt(mu)
        a = -0.059 + 0.02483 * b
        log_inv_alpha = ti.log(1.1239 + 1.1328 / (b - 3.4))
        vr = 0.9277 - 3.6224 / (b - 2.0)
        draw = 0
        done = 0
        while done == 0:
            u = uniform(key, draw) - 0.5
            v = uniform(key, draw + 1)
            draw += 2
            us = 0.5 - ti.abs(u)
            k = ti.floor((2.0 * a / us + b) * u + mu + 0.43)
            if us >= 0.07 and v <= vr:
                done = 1
            elif k >= 0.0 and not (us < 0.013 and v > us):
                if ti.log(v) + log_inv_alpha - ti.log(a / (us * us) + b) <= poisson_log_pmf(k, mu):
                    done = 1
    return k


@ti.kernel
def sample_poisson(means: ti.types.ndarray(dtype=ti.f32, ndim=1), out: ti.types.ndarray(dtype=ti.f32, ndim=1),
                   seed: ti.u32):
    """One Poisson draw per entry of ``means`` (entry i uses pixel index i): for testing the sampler."""
    for i in range(means.shape[0]):
        out[i] = poisson(means[i], pixel_key(seed, i))


@ti.kernel
def sample_normal(out: ti.types.ndarray(dtype=ti.f32, ndim=1), seed: ti.u32):
    """One standard normal draw per entry (entry i uses pixel index i): for testing."""
    for i in range(out.shape[0]):
        out[i] = normal(pixel_key(seed, i))


def seed_u32(seed) -> int:
    """A 32-bit device seed from None (fresh entropy), an int, or a NumPy Generator (one draw from it)."""
    import numpy as np

    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2 ** 32))
    return int(np.random.SeedSequence(seed).generate_state(1)[0])
