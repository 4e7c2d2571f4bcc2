"""Image similarity for 2D/3D registration, with gradients.

``ncc(a, b)``: normalised cross-correlation of two images (1 = equal up to gain and offset), invariant to
the affine intensity changes between a DRR and an X-ray (units, exposure, a monotone but unknown physics
approximated to first order).  ``ncc_grad(a, b)`` returns it with ``d ncc / d a``.  Variants, each with its
exact gradient: :func:`gradient_ncc_grad` (NCC of image differences), :func:`patch_ncc_grad` (mean NCC over
tiles: local gain and offset), :func:`multiscale_ncc_grad` (mean NCC over block-averaged scales).
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


def patch_ncc_grad(a, b, patch: int = 8):
    """``(patch ncc, d / d a)``: the mean NCC over non-overlapping ``patch x patch`` tiles (pixels; the last
    row and column of tiles take what is left, at least half a tile, else they join their neighbour).

    Local correlation: each tile has its own gain and offset, so a DRR matches an X-ray whose intensity
    relation drifts across the image (scatter, the heel effect, a different beam hardening), and a strong edge
    in one place cannot outweigh the rest.  Tiles of constant content contribute 0 (as :func:`ncc_grad`).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D images of one shape, got {a.shape} and {b.shape}")
    if int(patch) != patch or patch < 2:
        raise ValueError(f"patch must be an integer >= 2 pixels, got {patch!r}")
    grad = np.zeros_like(a)
    edges = [_tile_edges(n, int(patch)) for n in a.shape]
    total, count = 0.0, 0
    for r0, r1 in zip(edges[0][:-1], edges[0][1:]):
        for c0, c1 in zip(edges[1][:-1], edges[1][1:]):
            c, g = ncc_grad(a[r0:r1, c0:c1], b[r0:r1, c0:c1])
            total += c
            grad[r0:r1, c0:c1] = g
            count += 1
    return total / count, grad / count


def _tile_edges(n: int, patch: int) -> list:
    """Tile boundaries along an axis of n pixels: tiles of ``patch``, a remainder under half a tile merged."""
    edges = list(range(0, n, patch)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < patch / 2:
        del edges[-2]
    return edges


def multiscale_ncc_grad(a, b, scales=(1, 2, 4)):
    """``(multi-scale ncc, d / d a)``: the mean NCC of the images block-averaged by each factor in ``scales``
    (pixels; the edge remainder is cropped).  Coarse scales widen the basin of attraction, the finest keeps
    the optimum where the images agree."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D images of one shape, got {a.shape} and {b.shape}")
    scales = [int(s) for s in scales]
    if not scales or min(scales) < 1 or any(min(a.shape) // s < 2 for s in scales):
        raise ValueError(f"scales must be integers >= 1 leaving at least 2 x 2 pixels of {a.shape}, got {scales}")
    grad = np.zeros_like(a)
    total = 0.0
    for s in scales:
        r, c = a.shape[0] // s * s, a.shape[1] // s * s

        def down(x):
            return x[:r, :c].reshape(r // s, s, c // s, s).mean(axis=(1, 3))

        v, g = ncc_grad(down(a), down(b))
        total += v / len(scales)
        grad[:r, :c] += np.repeat(np.repeat(g, s, 0), s, 1) / (s * s) / len(scales)  # the block mean's adjoint
    return total, grad
