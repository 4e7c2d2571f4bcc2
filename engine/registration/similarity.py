"""Image similarity for 2D/3D registration, with gradients.

``ncc(a, b)``: normalised cross-correlation of two images (1 = equal up to gain and offset), invariant to
the affine intensity changes between a DRR and an X-ray (units, exposure, a monotone but unknown physics
approximated to first order).  ``ncc_grad(a, b)`` returns it with ``d ncc / d a``.
"""
import numpy as np


def ncc_grad(a, b, mask=None):
    """``(ncc, d ncc / d a)`` of images ``a`` and ``b`` (same shape), over ``mask`` (default all pixels).

    With ``a' = a - mean(a)``, ``b' = b - mean(b)``: ``ncc = <a', b'> / (|a'| |b'|)`` and
    ``d ncc / d a = b' / (|a'| |b'|) - ncc a' / |a'|^2`` (zero outside the mask; constant images have no
    correlation: ncc 0 and gradient 0).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    m = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    grad = np.zeros_like(a)
    x, y = a[m] - a[m].mean(), b[m] - b[m].mean()
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return 0.0, grad
    c = float(x @ y / (nx * ny))
    grad[m] = y / (nx * ny) - c * x / nx ** 2
    return c, grad


def ncc(a, b, mask=None) -> float:
    """Normalised cross-correlation of two images (see :func:`ncc_grad`)."""
    return ncc_grad(a, b, mask)[0]


def gradient_ncc_grad(a, b):
    """``(gncc, d gncc / d a)``: the mean NCC of the images' differences along rows and along columns
    (Penney et al. 1998's gradient correlation).  Blind to smooth intensity changes (scatter, heel effect,
    beam hardening's slow trends) that bias plain NCC."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    grad = np.zeros_like(a)
    total = 0.0
    for axis in (0, 1):
        c, g = ncc_grad(np.diff(a, axis=axis), np.diff(b, axis=axis))
        total += 0.5 * c
        # adjoint of the difference operator: d/da of sum g * diff(a)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (1, 0)
        lo = np.pad(g, pad)
        pad[axis] = (0, 1)
        hi = np.pad(g, pad)
        grad += 0.5 * (lo - hi)
    return total, grad
