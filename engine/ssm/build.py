"""Building a :class:`ShapeModel` from a population: Procrustes alignment, then PCA by SVD.

``build_model`` takes shapes already in correspondence (same topology, vertex v
is the same anatomical point in every shape).  ``build_from_meshes`` first gives
meshes that are not in correspondence a common topology (rigid ICP, then
non-rigid registration of a template, :mod:`engine.ssm.correspondence`).

PCA: with the aligned shapes as rows of X (N, 3V) and their mean m, the SVD
``X - m = U S W^T`` gives orthonormal modes (rows of W^T) and standard deviations
``S / sqrt(N - 1)``; modes are kept until they explain ``variance`` of the total
(or ``n_modes`` of them).  Each mode's sign is fixed so that its largest-magnitude
component is positive (deterministic output).
"""
from __future__ import annotations

import numpy as np

from .model import ShapeModel
from .procrustes import generalized_procrustes

CORRESPONDENCE = "rigid ICP + non-rigid ICP of a template"  # provenance of models built from meshes


def pca(aligned, *, variance: float | None = 0.98, n_modes: int | None = None):
    """PCA of aligned shapes (N, V, 3): mean (V, 3), modes (K, V, 3), std (K,) mm, explained fraction (K,)."""
    x = np.asarray(aligned, np.float64)
    n = len(x)
    flat = x.reshape(n, -1)
    mean = flat.mean(0)
    _, s, wt = np.linalg.svd(flat - mean, full_matrices=False)
    var = s ** 2 / max(n - 1, 1)
    total = var.sum()
    frac = var / total if total > 0 else np.zeros_like(var)
    keep = int(np.sum(var > 1e-12 * max(total, 1e-300)))  # drop the null directions (rank <= N - 1)
    if n_modes is not None:
        k = min(int(n_modes), keep)
    elif variance is not None:
        if not 0 < variance <= 1:
            raise ValueError(f"variance must be in (0, 1], got {variance}")
        k = min(int(np.searchsorted(np.cumsum(frac), variance - 1e-12) + 1), keep)
    else:
        k = keep
    wt = wt[:k]
    sign = np.sign(wt[np.arange(k), np.abs(wt).argmax(1)])
    wt = wt * sign[:, None]
    return mean.reshape(x.shape[1:]), wt.reshape(k, *x.shape[1:]), np.sqrt(var[:k]), frac[:k]


def build_model(shapes, faces, *, variance: float | None = 0.98, n_modes: int | None = None, scale: bool = False,
                align: bool = True, info: dict | None = None) -> ShapeModel:
    """A shape model from shapes in correspondence.

    Parameters
    ----------
    shapes : (N, V, 3) array or list of (V, 3) arrays, mm
    faces : (F, 3) int array, the common topology (outward)
    variance : float
        Keep the modes explaining this fraction of the total variance (ignored when ``n_modes`` is given).
    n_modes : int, optional
    scale : bool
        Procrustes with scale (size removed from the model) or rigid only (size kept as a mode).
    align : bool
        Run generalised Procrustes first (False: the shapes are already aligned).
    info : dict
        Provenance stored with the model.
    """
    s = np.asarray(shapes, np.float64)
    if s.ndim != 3 or s.shape[2] != 3 or len(s) < 2:
        raise ValueError(f"need at least two shapes (N, V, 3) in correspondence, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("shapes contain NaN or inf")
    aligned = generalized_procrustes(s, scale=scale)[0] if align else s
    mean, modes, std, frac = pca(aligned, variance=variance, n_modes=n_modes)
    meta = {"n_shapes": len(s), "scaled_procrustes": bool(scale), "explained_variance": float(frac.sum())}
    meta.update(info or {})
    return ShapeModel(mean, faces, modes, std, meta)


def build_from_meshes(meshes, *, template=None, variance: float | None = 0.98, n_modes: int | None = None,
                      scale: bool = False, chain: bool = False, info: dict | None = None) -> ShapeModel:
    """A shape model from closed meshes NOT in correspondence.

    Each mesh is rigidly pre-aligned to the template (ICP) and the template is
    registered non-rigidly onto it (:func:`engine.ssm.correspondence.correspond`),
    which gives every mesh the template's topology; then :func:`build_model`.

    Parameters
    ----------
    meshes : list of Mesh (mm)
    template : Mesh, optional
        Default: the mesh whose volume is the median of the population.
    chain : bool
        Register each mesh starting from the previous result (for populations ordered so that neighbours are
        alike, e.g. vertebrae along the spine; see :func:`engine.ssm.correspondence.correspond`).
    """
    from .correspondence import correspond

    meshes = list(meshes)
    if len(meshes) < 2:
        raise ValueError("need at least two meshes")
    if template is None:
        vols = np.array([m.volume for m in meshes])
        template = meshes[int(np.argsort(vols)[len(vols) // 2])]
    shapes = correspond(template, meshes, chain=chain)
    return build_model(np.stack(shapes), template.faces, variance=variance, n_modes=n_modes, scale=scale,
                       info={"correspondence": CORRESPONDENCE, **(info or {})})
