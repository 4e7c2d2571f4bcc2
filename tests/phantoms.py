"""Analytic test phantoms: voxelised with partial volume, with closed-form line integrals (mm)."""
import numpy as np

from engine.volume import Volume


def grid_volume(density, spacing=1.0, origin=None, materials=("m",)):
    """A Volume from (I, J, K) or (M, I, J, K) densities, axis-aligned, centred on the origin by default."""
    d = np.asarray(density, np.float32)
    if d.ndim == 3:
        d = d[None]
    sp = np.broadcast_to(np.asarray(spacing, float), (3,))
    a = np.diag([*sp, 1.0])
    a[:3, 3] = -(np.array(d.shape[1:]) - 1) / 2 * sp if origin is None else origin
    return Volume(density=d, materials=materials, world_from_index=a)


def voxel_centres(shape, spacing=1.0):
    sp = np.broadcast_to(np.asarray(spacing, float), (3,))
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, sp)]
    return np.meshgrid(*axes, indexing="ij")


def partial_volume(sdf, shape, h, sub=8):
    """Fraction of each cubic voxel (side h mm) inside ``sdf(x, y, z) < 0``.

    Voxels far from the surface are 0 or 1; those the surface may cross are
    supersampled on a ``sub^3`` grid (error in the fraction ~ 1/sub^2 of a voxel).
    """
    x, y, z = voxel_centres(shape, h)
    d = sdf(x, y, z)
    frac = (d < 0).astype(np.float64)
    near = np.abs(d) < 0.9 * h
    xs, ys, zs = x[near], y[near], z[near]
    off = (np.arange(sub) + 0.5) / sub - 0.5
    acc = np.zeros(xs.shape)
    for ox in off:
        for oy in off:
            for oz in off:
                acc += sdf(xs + ox * h, ys + oy * h, zs + oz * h) < 0
    frac[near] = acc / sub ** 3
    return frac


def sphere_volume(n=96, radius=40.0, spacing=1.0):
    sdf = lambda x, y, z: np.sqrt(x * x + y * y + z * z) - radius  # noqa: E731
    return grid_volume(partial_volume(sdf, (n, n, n), spacing), spacing)


def cylinder_volume(n=96, nz=48, radius=40.0, spacing=1.0):
    """Cylinder along z through the whole grid."""
    sdf = lambda x, y, z: np.sqrt(x * x + y * y) - radius  # noqa: E731
    return grid_volume(partial_volume(sdf, (n, n, nz), spacing), spacing)


def sphere_chord(src, dst, radius):
    """Exact length (mm) of the segment src->dst inside a sphere at the origin; arrays (..., 3)."""
    d = dst - src
    a = np.sum(d * d, -1)
    b = 2 * np.sum(src * d, -1)
    c = np.sum(src * src, -1) - radius ** 2
    disc = np.maximum(b * b - 4 * a * c, 0)
    t0 = np.clip((-b - np.sqrt(disc)) / (2 * a), 0, 1)
    t1 = np.clip((-b + np.sqrt(disc)) / (2 * a), 0, 1)
    return (t1 - t0) * np.sqrt(a)


def box_chord(src, dst, lo, hi):
    """Exact length (mm) of the segment src->dst inside the axis-aligned box [lo, hi]."""
    d = dst - src
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (lo - src) / d
        tb = (hi - src) / d
    t0 = np.clip(np.max(np.minimum(ta, tb), -1), 0, 1)
    t1 = np.clip(np.min(np.maximum(ta, tb), -1), 0, 1)
    return np.maximum(t1 - t0, 0) * np.linalg.norm(d, axis=-1)


def cylinder_chord(src, dst, radius, zlo, zhi):
    """Exact length inside the z-cylinder of ``radius`` between zlo and zhi."""
    d = dst - src
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (src[..., 0] * d[..., 0] + src[..., 1] * d[..., 1])
    c = src[..., 0] ** 2 + src[..., 1] ** 2 - radius ** 2
    disc = np.maximum(b * b - 4 * a * c, 0)
    t0 = (-b - np.sqrt(disc)) / (2 * a)
    t1 = (-b + np.sqrt(disc)) / (2 * a)
    with np.errstate(divide="ignore", invalid="ignore"):
        za, zb = (zlo - src[..., 2]) / d[..., 2], (zhi - src[..., 2]) / d[..., 2]
    t0 = np.clip(np.maximum(t0, np.minimum(za, zb)), 0, 1)
    t1 = np.clip(np.minimum(t1, np.maximum(za, zb)), 0, 1)
    return np.maximum(t1 - t0, 0) * np.linalg.norm(d, axis=-1)


def paraboloid_sphere_volume(n=96, radius=40.0, spacing=1.0):
    """Density 1 - r^2/R^2 inside the sphere (smooth, so trilinear sampling is accurate)."""
    x, y, z = voxel_centres((n, n, n), spacing)
    return grid_volume(np.maximum(0.0, 1.0 - (x * x + y * y + z * z) / radius ** 2), spacing)


def paraboloid_sphere_integral(src, dst, radius):
    """Closed form of the line integral (mm x density) of 1 - r^2/R^2: (4/3) c^3 / R^2, c the half chord."""
    c = sphere_chord(src, dst, radius) / 2
    return 4.0 / 3.0 * c ** 3 / radius ** 2
