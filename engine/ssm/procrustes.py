"""Procrustes alignment of point sets in correspondence: one pair (Umeyama) and a population (generalised).

All point sets are (V, 3) arrays in mm with row v of one matching row v of the
other.  A similarity transform maps ``x -> s R x + t`` (R proper rotation, s > 0).

References: S. Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", IEEE TPAMI 13(4), 1991; J. C. Gower, "Generalized
Procrustes analysis", Psychometrika 40, 1975.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * rotation @ x + translation`` (rotation (3, 3), scale > 0, translation (3,) mm)."""

    rotation: np.ndarray
    scale: float
    translation: np.ndarray

    def apply(self, points) -> np.ndarray:
        """Transform (..., 3) points (mm)."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> "Similarity":
        """The inverse transform."""
        r = self.rotation.T
        return Similarity(r, 1.0 / self.scale, -(r @ self.translation) / self.scale)


def align(source, target, *, scale: bool = False, weights=None) -> Similarity:
    """The similarity (or rigid, ``scale=False``) transform minimising ``sum_v w_v |T(source_v) - target_v|^2``.

    Umeyama's closed form (SVD of the cross-covariance, with the reflection fix).

    Parameters
    ----------
    source, target : (V, 3) arrays, mm, in correspondence
    scale : bool
        Estimate an isotropic scale too.
    weights : (V,) array, optional
        Non-negative weights (default uniform).
    """
    x = np.asarray(source, np.float64)
    y = np.asarray(target, np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"source and target must be (V, 3) arrays of equal shape, got {x.shape} and {y.shape}")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(x),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be (V,) non-negative with a positive sum")
    w = w / w.sum()
    mx, my = w @ x, w @ y
    xc, yc = x - mx, y - my
    cov = (yc * w[:, None]).T @ xc
    u, d, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ fix @ vt
    s = 1.0
    if scale:
        var = float(w @ (xc ** 2).sum(1))
        if var <= 0:
            raise ValueError("source points are all the same: scale is undefined")
        s = float(np.trace(np.diag(d) @ fix)) / var
    return Similarity(rot, s, my - s * rot @ mx)


def generalized_procrustes(shapes, *, scale: bool = False, reference=None, tol: float = 1e-7,
                           max_iter: int = 100):
    """Align a population of shapes in correspondence to their common mean (Gower's GPA).

    Each shape is moved to the current mean (rigidly, or with scale); the mean is
    re-estimated; repeat until it moves less than ``tol`` (relative RMS).  The frame
    is fixed by the first mean: the reference (default shape 0), centred; with
    ``scale=True`` the mean is also kept at the reference's centroid size.

    Parameters
    ----------
    shapes : (N, V, 3) array, mm
    scale : bool
        Remove isotropic scale too (shape analysis in the strict sense); without it
        the model keeps size variation.

    Returns
    -------
    aligned : (N, V, 3) array, mm, in the mean's frame
    mean : (V, 3) array, mm
    transforms : list of Similarity, shape i -> aligned i
    """
    s = np.asarray(shapes, np.float64)
    if s.ndim != 3 or s.shape[2] != 3 or len(s) < 2:
        raise ValueError(f"shapes must be (N >= 2, V, 3), got {s.shape}")
    ref = s[0] if reference is None else np.asarray(reference, np.float64)
    mean = ref - ref.mean(0)
    size = np.sqrt((mean ** 2).sum())
    for _ in range(max_iter):
        transforms = [align(x, mean, scale=scale) for x in s]
        aligned = np.stack([t.apply(x) for t, x in zip(transforms, s)])
        new = aligned.mean(0)
        new -= new.mean(0)
        fit = align(new, mean, scale=False)  # keep the mean in the reference's orientation
        new = fit.apply(new)
        if scale:
            new *= size / np.sqrt((new ** 2).sum())
        change = np.sqrt(((new - mean) ** 2).sum() / (mean ** 2).sum())
        mean = new
        if change < tol:
            break
    transforms = [align(x, mean, scale=scale) for x in s]
    aligned = np.stack([t.apply(x) for t, x in zip(transforms, s)])
    return aligned, mean, transforms
