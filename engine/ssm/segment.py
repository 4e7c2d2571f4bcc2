"""Several neighbouring bones as one shape model (a spine segment): each its own shape, their placements free.

A vertebra in an X-ray lies between two others of nearly the same shape, and each
neighbour puts as much bone signal into the vertebra's region of the image as the
vertebra itself.  Fitting the vertebra alone, a loss can prefer to lay the model's
edges on a neighbour's.  :func:`segment_model` makes one :class:`ShapeModel` of
``n`` parts, each an instance of a single-bone model placed by a transform:

``x = concat_j  P_j (mean + sum_k c_jk std_k modes_k)``  (linear, rotations of modes by ``P_j``)

plus, for every part but the reference one, six modes of its placement relative to
the reference: three translations (mm) along the model axes and three small
rotations about the part's centroid (linearised: ``w x (v - c_j)``; the shape grows
by ``sqrt(1 + w^2)``, 0.4 % at 5 degrees).  Their standard deviations are the
spread of the placements in the population (:func:`consecutive_placement`; along a
chain whose steps change level by level, the prediction error of a trend, :func:`placement_trend`), so the
reconstruction's prior ``c ~ N(0, I)`` covers shape and placement alike, and
:func:`engine.recon.reconstruct` fits a segment like any other model; the result's
parts are cut out with :func:`part_mesh`.

Frames: the segment model's frame is the reference part's model frame (mm);
``P_j`` maps part ``j``'s model frame into it.
"""
from __future__ import annotations

import numpy as np

from ..mesh.mesh import Mesh
from ..geometry.transforms import mean_rotation, rotation_from_vector, vector_from_rotation
from .model import ShapeModel


def _rotations_about_mean(rel) -> tuple:
    """(chordal mean rotation ``R0`` of (n, 4, 4) rigid steps, (n, 3) rotation vectors of ``R0^T R_j``)."""
    r0 = mean_rotation(rel[:, :3, :3])
    return r0, np.array([vector_from_rotation(r0.T @ r) for r in rel[:, :3, :3]])


def consecutive_placement(poses) -> tuple:
    """The mean placement of a bone relative to the one before it, and its spread.

    Parameters
    ----------
    poses : list of (n, 4, 4) rigid ``world_from_model`` of consecutive bones (one chain), or a list of
        such chains (gaps where a bone is left out)

    Returns
    -------
    placement : (4, 4) ``previous_model_from_next_model``: the chordal mean rotation and the mean translation
        of ``inv(T_j) T_{j+1}`` over the consecutive pairs
    rotation_sd : float, radians: root mean square over axes of the rotation vectors' spread about the mean
    translation_sd : float, mm: the same for the translations
    """
    first = np.asarray(poses[0], np.float64) if len(poses) else np.zeros((0,))
    chains = [np.asarray(poses, np.float64)] if first.shape == (4, 4) else \
        [np.asarray(c, np.float64).reshape(-1, 4, 4) for c in poses]
    rel = [np.linalg.inv(c[j]) @ c[j + 1] for c in chains for j in range(len(c) - 1)]
    if len(rel) < 2:
        raise ValueError(f"need at least two consecutive pairs to estimate a placement and its spread, got "
                         f"{len(rel)}")
    rel = np.array(rel)
    rot, dw = _rotations_about_mean(rel)
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, rel[:, :3, 3].mean(0)
    dt = rel[:, :3, 3] - out[:3, 3]
    return out, float(np.sqrt((dw ** 2).sum(1).mean() / 3)), float(np.sqrt((dt ** 2).sum(1).mean() / 3))


def placement_trend(poses, at, *, degree: int = 1) -> tuple:
    """Placements of a bone on the one before it, predicted at given pairs of a chain from a polynomial trend
    in the level: along a spine the vertebrae grow taller and the curvature turns (kyphosis to lordosis) level
    by level, so the pairs next to a level are better predictors of its placement than the chain's mean.

    Parameters
    ----------
    poses : sequence of (4, 4) rigid ``world_from_model`` per level (index = level), ``None`` where a bone is
        left out; the pairs are the consecutive levels ``(j, j + 1)`` that are both present
    at : sequence of int, the pairs ``j`` to predict (the placement of bone ``j + 1`` on bone ``j``)
    degree : int, degree of the polynomial in ``j`` (1: linear)

    Returns
    -------
    placements : (len(at), 4, 4) ``previous_model_from_next_model``: the translation fitted as a polynomial,
        the rotation as ``R0 exp(w(j))`` with ``R0`` the pairs' chordal mean rotation and ``w`` a polynomial
        rotation vector
    rotation_sd : (len(at),) radians; translation_sd : (len(at),) mm
        Prediction standard errors per axis: the residual spread of the fit (root mean square over the three
        axes, ``n - degree - 1`` degrees of freedom per axis) times ``sqrt(1 + h)``, ``h`` the leverage of the
        predicted level (grows away from the pairs used: extrapolation to an end of the chain costs more)
    """
    present = [None if t is None else np.asarray(t, np.float64) for t in poses]
    pairs = [j for j in range(len(present) - 1) if present[j] is not None and present[j + 1] is not None]
    degree = int(degree)
    if degree < 0 or len(pairs) < degree + 2:
        raise ValueError(f"a trend of degree {degree} needs at least {degree + 2} consecutive pairs (one "
                         f"degree of freedom for the spread), got {len(pairs)}")
    rel = np.array([np.linalg.inv(present[j]) @ present[j + 1] for j in pairs])
    r0, w = _rotations_about_mean(rel)
    y = np.concatenate([rel[:, :3, 3], w], axis=1)
    centre = float(np.mean(pairs))
    design = np.vander(np.asarray(pairs, np.float64) - centre, degree + 1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    res = y - design @ coef
    dof = 3 * (len(pairs) - degree - 1)
    s_t, s_r = np.sqrt((res[:, :3] ** 2).sum() / dof), np.sqrt((res[:, 3:] ** 2).sum() / dof)
    a0 = np.vander(np.asarray(at, np.float64).reshape(-1) - centre, degree + 1)
    lever = np.sqrt(1.0 + np.einsum("ij,jk,ik->i", a0, np.linalg.inv(design.T @ design), a0))
    pred = a0 @ coef
    out = np.tile(np.eye(4), (len(a0), 1, 1))
    out[:, :3, 3] = pred[:, :3]
    out[:, :3, :3] = [r0 @ rotation_from_vector(w) for w in pred[:, 3:]]
    return out, s_r * lever, s_t * lever


def segment_model(model: ShapeModel, placements, *, reference: int, rotation_sd, translation_sd,
                  names=None) -> ShapeModel:
    """One model of ``len(placements)`` parts, each an instance of ``model`` (module doc).

    Parameters
    ----------
    model : ShapeModel of one bone (model frame mm)
    placements : list of (4, 4) rigid transforms, part frame -> segment frame; the reference part's is the
        identity
    reference : int, the part whose model frame is the segment's (its placement is not free)
    rotation_sd : radians; translation_sd : mm
        Standard deviations of the placement modes of the other parts: one for all (e.g. from
        :func:`consecutive_placement`) or one per non-reference part, in part order (e.g. from
        :func:`placement_trend`).
    names : list of str, optional, one per part

    The parts are recorded in ``info["parts"]`` as ``[name, first vertex, end vertex, first face, end face]``.
    Modes: the shape modes of part 0, of part 1, ...; then the placement modes (3 translations, 3 rotations)
    of each non-reference part.  A rotation mode is ``e_a x (v - c_j)`` in mm per radian with its standard
    deviation in radians (their product is mm, as for every mode); the modes are not orthonormal, so
    :meth:`ShapeModel.project` solves least squares, as for a subdivided model.
    """
    p = [np.asarray(t, np.float64) for t in placements]
    n = len(p)
    if n < 2 or not 0 <= reference < n:
        raise ValueError(f"need two or more parts and a reference among them, got {n} parts, reference {reference}")
    if not np.allclose(p[reference], np.eye(4), atol=1e-9):
        raise ValueError("the reference part's placement must be the identity (its frame is the segment's)")
    for t in p:
        if t.shape != (4, 4) or not np.allclose(t[:3, :3].T @ t[:3, :3], np.eye(3), atol=1e-6):
            raise ValueError("placements must be rigid 4x4 transforms")
    try:
        rsd, tsd = (np.broadcast_to(np.asarray(x, np.float64), (n - 1,)) for x in (rotation_sd, translation_sd))
    except ValueError:
        raise ValueError(f"placement standard deviations: one, or one per non-reference part ({n - 1}), got "
                         f"{rotation_sd} rad, {translation_sd} mm") from None
    if not (np.all(rsd > 0) and np.all(tsd > 0)):
        raise ValueError(f"placement standard deviations must be positive, got {rotation_sd} rad, "
                         f"{translation_sd} mm")
    names = [f"part {j}" for j in range(n)] if names is None else [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} parts")
    nv, nf, k = model.n_vertices, len(model.faces), model.n_modes
    mean = np.concatenate([model.mean @ t[:3, :3].T + t[:3, 3] for t in p])
    faces = np.concatenate([model.faces + j * nv for j in range(n)])
    n_modes = n * k + 6 * (n - 1)
    modes = np.zeros((n_modes, n * nv, 3))
    std = np.zeros(n_modes)
    for j, t in enumerate(p):
        modes[j * k:(j + 1) * k, j * nv:(j + 1) * nv] = model.modes @ t[:3, :3].T
        std[j * k:(j + 1) * k] = model.std
    free = [j for j in range(n) if j != reference]
    for i, j in enumerate(free):  # six placement modes per free part: translations x, y, z, then rotations
        m, v = n * k + 6 * i, mean[j * nv:(j + 1) * nv]
        for a, e in enumerate(np.eye(3)):
            modes[m + a, j * nv:(j + 1) * nv] = e
            modes[m + 3 + a, j * nv:(j + 1) * nv] = np.cross(e, v - v.mean(0))
        std[m:m + 3], std[m + 3:m + 6] = tsd[i], rsd[i]
    parts = [[names[j], j * nv, (j + 1) * nv, j * nf, (j + 1) * nf] for j in range(n)]
    info = {**model.info, "name": "segment of " + ", ".join(names), "parts": parts, "reference_part": reference,
            "placement_rotation_sd_deg": np.rad2deg(rsd).tolist(), "placement_translation_sd_mm": tsd.tolist()}
    return ShapeModel(mean, faces, modes, std, info)


def part_mesh(model: ShapeModel, vertices, name) -> Mesh:
    """The part ``name`` (or index) of a segment model's instance: (V, 3) vertices of the whole segment, or a
    Mesh of it (a reconstruction's result)."""
    parts = model.info.get("parts")
    if not parts:
        raise ValueError("the model has no parts (not made by segment_model)")
    if isinstance(name, int):
        entry = parts[name]
    else:
        found = [q for q in parts if q[0] == name]
        if not found:
            raise KeyError(f"no part {name!r}; the parts are {[q[0] for q in parts]}")
        entry = found[0]
    _, v0, v1, f0, f1 = entry
    v = np.asarray(vertices.vertices if isinstance(vertices, Mesh) else vertices, np.float64)
    if len(v) != model.n_vertices:
        raise ValueError(f"{len(v)} vertices for a segment model of {model.n_vertices}")
    return Mesh(vertices=v[v0:v1], faces=np.asarray(model.faces[f0:f1]) - v0)
