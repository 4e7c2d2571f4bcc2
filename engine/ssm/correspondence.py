"""Dense correspondence for meshes that are not in correspondence: rigid ICP, then non-rigid ICP of a template.

Real populations (bones segmented from CTs) come as meshes with their own vertex
counts and orderings.  A shape model needs every shape as the same template mesh
deformed onto it, vertex v of one shape matching vertex v of every other:

* :func:`rigid_icp` aligns two surfaces (rigidly or with an isotropic scale):
  iterative closest points with Umeyama's closed-form step (:func:`engine.ssm.procrustes.align`),
  started from the centroids and principal axes (every sign-ambiguous principal-axis
  candidate is tried and the best kept, so a flipped initial pose is recovered);
* :func:`nonrigid_register` deforms a template onto a target with the optimal-step
  non-rigid ICP of Amberg, Romdhani & Vetter (CVPR 2007), keeping the template's
  topology;
* :func:`correspond` does both for a list of targets.

Closest points on triangle meshes are exact (open3d's ``RaycastingScene``);
:func:`point_to_surface` (that of :mod:`engine.metrics`) gives exact point-to-surface distances, for checking fits.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..mesh import Mesh
from ..mesh.mesh import face_normals, vertex_normals
from ..mesh.topology import edges
from ..metrics import point_to_surface  # noqa: F401  (re-exported: checks of fits use it from here)
from .procrustes import Similarity, align


class _Closest:
    """Exact closest points on a triangle mesh (open3d RaycastingScene), or on a point set (k-d tree)."""

    def __init__(self, vertices, faces=None):
        v = np.asarray(vertices, np.float64)
        self.origin = v.mean(0)  # float32 queries near the origin keep their precision
        self.faces = None if faces is None else np.asarray(faces)
        if faces is None:
            from scipy.spatial import cKDTree

            self.tree, self.points = cKDTree(v), v
            return
        import open3d as o3d

        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor((v - self.origin).astype(np.float32)),
                                 o3d.core.Tensor(self.faces.astype(np.uint32)))

    def query(self, points):
        """(closest points (N, 3), unit normals there (N, 3) or None, face ids (N,) or None, barycentric (N, 3))."""
        q = np.asarray(points, np.float64)
        if self.faces is None:
            _, i = self.tree.query(q)
            return self.points[i], None, None, None
        import open3d as o3d

        r = self.scene.compute_closest_points(o3d.core.Tensor((q - self.origin).astype(np.float32)))
        pts = r["points"].numpy().astype(np.float64) + self.origin
        uv = r["primitive_uvs"].numpy().astype(np.float64)
        bary = np.column_stack([1.0 - uv.sum(1), uv])
        return pts, r["primitive_normals"].numpy().astype(np.float64), r["primitive_ids"].numpy().astype(np.int64), bary


def _points_and_faces(x):
    if isinstance(x, Mesh):
        return np.asarray(x.vertices, np.float64), np.asarray(x.faces)
    p = np.asarray(x, np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
        raise ValueError(f"expected a Mesh or (N >= 3, 3) points, got shape {p.shape}")
    return p, None


def _moments(points, faces):
    """Centroid and covariance of a surface (area-weighted, exact for triangles) or of a point set."""
    if faces is None:
        c = points.mean(0)
        return c, np.cov((points - c).T, bias=True)
    t = points[faces]
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    a = area.sum()
    c = (area @ t.mean(1)) / a
    tc = t - c
    s = tc.sum(1)
    # integral of x x^T over a triangle = A/12 (sum_i v_i v_i^T + (sum_i v_i)(sum_i v_i)^T)
    second = (np.einsum("f,fki,fkj->ij", area, tc, tc) + np.einsum("f,fi,fj->ij", area, s, s)) / 12.0
    return c, second / a


def _initial_guesses(src, src_faces, dst, dst_faces, scale: bool):
    """Centroid-aligned candidates: identity rotation and the four proper principal-axis rotations."""
    cs, covs = _moments(src, src_faces)
    cd, covd = _moments(dst, dst_faces)
    ws, us = np.linalg.eigh(covs)
    wd, ud = np.linalg.eigh(covd)
    s = float(np.sqrt(wd.sum() / ws.sum())) if scale else 1.0
    rots = [np.eye(3)]
    for signs in ((1, 1, 1), (-1, -1, 1), (-1, 1, -1), (1, -1, -1)):
        r = ud @ np.diag(signs) @ us.T
        if np.linalg.det(r) < 0:  # one of the eigenbases is left-handed: flip its smallest axis
            r = ud @ np.diag(np.array(signs) * np.array([-1, 1, 1])) @ us.T
        rots.append(r)
    return [Similarity(r, s, cd - s * r @ cs) for r in rots]


def _icp(src, src_closest, dst, dst_closest, start: Similarity, scale, symmetric, max_iter, tol):
    t = start
    prev = np.inf
    rms = np.inf
    for _ in range(max_iter):
        moved = t.apply(src)
        fwd = dst_closest.query(moved)[0]
        d2 = ((fwd - moved) ** 2).sum(1)
        pairs_src, pairs_dst = [src], [fwd]
        if symmetric:
            back = src_closest.query(t.inverse().apply(dst))[0]  # closest source points of the target's points
            d2 = np.concatenate([d2, ((t.apply(back) - dst) ** 2).sum(1)])
            pairs_src.append(back)
            pairs_dst.append(dst)
        rms = float(np.sqrt(d2.mean()))
        if prev - rms <= tol * max(rms, 1e-12):
            break
        prev = rms
        t = align(np.concatenate(pairs_src), np.concatenate(pairs_dst), scale=scale)
    return t, rms


def rigid_icp(source_points, target_mesh_or_points, *, scale: bool = False, init=None, max_iter: int = 100,
              tol: float = 1e-6, symmetric: bool | None = None):
    """Align a source surface to a target: iterative closest points with Umeyama steps.

    Each step pairs every source point with its closest point on the target (exact
    point-to-triangle when the target is a Mesh) and, with ``symmetric`` (for whole
    shapes), every target point with its closest point on the source surface, and
    solves for the best rigid (``scale=False``) or similarity
    transform in closed form (Umeyama 1991).  Without ``init`` it starts from the
    centroids aligned with (a) no rotation and (b) each of the four proper rotations
    that map the source's principal axes onto the target's (area-weighted surface
    moments for meshes; the scale from their spreads when ``scale``), and keeps the
    lowest residual, so large (even flipped) initial misalignments are recovered.

    Parameters
    ----------
    source_points : (N, 3) array or Mesh, mm
    target_mesh_or_points : Mesh or (M, 3) array, mm
    scale : bool
        Estimate an isotropic scale too.
    init : (4, 4) array, optional
        Starting transform (source -> target); then only that start is refined.
    max_iter, tol : iterations per start; stop when the RMS drops by less than ``tol`` (relative).
    symmetric : bool, optional
        Use target-to-source pairs too (guards against a shrinking scale; wrong for a
        partial source).  Default: when the source is a Mesh (closest points on a
        bare point set would be biased to its sample positions).

    Returns
    -------
    (4, 4) transform mapping source points onto the target (``scale * R x + t``), and the
    RMS (mm) of the source points' distances to the target at that transform.
    """
    src, src_faces = _points_and_faces(source_points)
    dst, dst_faces = _points_and_faces(target_mesh_or_points)
    src_closest, dst_closest = _Closest(src, src_faces), _Closest(dst, dst_faces)
    if symmetric is None:
        symmetric = src_faces is not None
    if init is None:
        starts = _initial_guesses(src, src_faces, dst, dst_faces, scale)
    else:
        m = np.asarray(init, np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"init must be a 4x4 matrix, got {m.shape}")
        s = float(np.cbrt(np.linalg.det(m[:3, :3])))
        if s <= 0:
            raise ValueError("init must not mirror (positive determinant)")
        u, _, vt = np.linalg.svd(m[:3, :3] / s)
        starts = [Similarity(u @ vt, s, m[:3, 3].copy())]
    run = lambda start, n: _icp(src, src_closest, dst, dst_closest, start, scale, symmetric, n, tol)  # noqa: E731
    if len(starts) > 1:  # a few steps from every start, then the best one to convergence
        starts = [min((run(st, min(15, max_iter)) for st in starts), key=lambda r: r[1])[0]]
    best = run(starts[0], max_iter)[0]
    moved = best.apply(src)
    rms = float(np.sqrt(((dst_closest.query(moved)[0] - moved) ** 2).sum(1).mean()))
    return best.matrix, rms


def nonrigid_register(template: Mesh, target: Mesh, *, stiffness=(50.0, 20.0, 5.0, 2.0, 0.8, 0.5, 0.35, 0.2),
                      gamma: float = 1.0, max_iter: int = 20, tol: float = 3e-3, max_dist: float | None = None,
                      max_angle: float = 60.0, symmetric: float = 1.0, untangle: int = 30) -> np.ndarray:
    """Deform a template mesh onto a target surface, keeping the template's topology (dense correspondence).

    Optimal-step non-rigid ICP: B. Amberg, S. Romdhani, T. Vetter, "Optimal Step
    Nonrigid ICP Algorithms for Surface Registration", CVPR 2007.  Every template
    vertex i carries an affine transform X_i (a 4x3 block); for each stiffness
    ``alpha`` of the decreasing schedule the energy

        sum_i w_i |X_i^T [v_i; 1] - u_i|^2  +  alpha^2 sum_{(i,j) edges} |G (X_i - X_j)|^2
        + s (V / M) sum_j w'_j |sum_k b_jk X_{f_jk}^T [v_{f_jk}; 1] - y_j|^2

    is minimised exactly (sparse normal equations, LU) with the closest points
    ``u_i`` on the target fixed, then the closest points are found again, until
    the transforms change by less than ``tol``.  ``G = diag(1, 1, 1, gamma)``
    weighs the translation against the linear part.  A pair is used (w = 1) only
    when it is closer than ``max_dist`` and the deformed vertex normal and the
    target's normal there are within ``max_angle`` degrees.  The last term (ours,
    weight ``s = symmetric``; 0 turns it off) pulls the deformed template, at the
    closest point ``sum_k b_jk (...)`` (face f_j, barycentric b_jk) of each target
    vertex y_j, onto that vertex, with the same rejection; it makes the template
    cover thin protruding parts of the target that closest points from the
    template alone never reach.  The template and target are centred and scaled
    to unit coordinate spread first, so the schedule does not depend on units.

    Large deformations (strong local compression) can leave a few triangles
    folded over, lying on the target but facing inward.  Finally (also ours), for
    up to ``untangle`` rounds, the vertices of every triangle whose normal opposes
    the target's normal at its centre's closest point move to the mean of their
    neighbours and back onto the target surface, which unfolds them (it slides
    those few vertices along the surface, by about an edge length).

    Parameters
    ----------
    template, target : Mesh (mm), roughly aligned already (e.g. by :func:`rigid_icp`).
    stiffness : decreasing stiffness weights alpha (dimensionless, see above).
    gamma : weight of the translation part in the stiffness term.
    max_iter : most iterations per stiffness; ``tol``: mean change of the deformed
        vertices (in units of the template's coordinate spread) that ends one.
    max_dist : mm; pairs farther apart are rejected (default: 10% of the template's bounding-box diagonal).
    max_angle : degrees between normals beyond which a pair is rejected.
    symmetric : weight of the target-to-template term (0 for none).
    untangle : rounds of unfolding of inward-facing triangles at the end (0 for none).

    Returns
    -------
    (V, 3) deformed template vertices in the target's frame, mm (the template's faces apply).
    """
    v0 = np.asarray(template.vertices, np.float64)
    faces = np.asarray(template.faces)
    centre = v0.mean(0)
    unit = float(np.sqrt(((v0 - centre) ** 2).mean()))
    vn = (v0 - centre) / unit
    tv = (np.asarray(target.vertices, np.float64) - centre) / unit
    tgt = _Closest(tv, target.faces)
    tgt_normals = vertex_normals(tv, np.asarray(target.faces))
    n = len(vn)
    cols = np.arange(4 * n)
    d = sp.csr_matrix((np.column_stack([vn, np.ones(n)]).ravel(), (cols // 4, cols)), shape=(n, 4 * n))
    e = edges(faces)
    g = np.array([1.0, 1.0, 1.0, gamma])
    rows = np.arange(4 * len(e))
    mg = sp.csr_matrix((np.concatenate([np.tile(g, len(e)), -np.tile(g, len(e))]),
                        (np.concatenate([rows, rows]), np.concatenate([(4 * e[:, :1] + np.arange(4)).ravel(),
                                                                       (4 * e[:, 1:] + np.arange(4)).ravel()]))),
                       shape=(4 * len(e), 4 * n))
    smooth = (mg.T @ mg).tocsc()
    x = np.tile(np.vstack([np.eye(3), np.zeros((1, 3))]), (n, 1))
    limit = (0.1 * np.linalg.norm(np.ptp(v0, axis=0)) if max_dist is None else float(max_dist)) / unit
    cos_max = np.cos(np.deg2rad(max_angle))
    sym_weight = float(symmetric) * n / len(tv)
    for alpha in stiffness:
        for _ in range(max_iter):
            cur = d @ x
            u, un, _, _ = tgt.query(cur)
            w = ((np.linalg.norm(u - cur, axis=1) < limit)
                 & ((vertex_normals(cur, faces) * un).sum(1) > cos_max)).astype(np.float64)
            a = alpha ** 2 * smooth + d.T @ sp.diags(w) @ d
            b = d.T @ (w[:, None] * u)
            if sym_weight > 0:
                p, pn, fid, bary = _Closest(cur, faces).query(tv)
                wt = sym_weight * ((np.linalg.norm(p - tv, axis=1) < limit)
                                   & ((pn * tgt_normals).sum(1) > cos_max))
                at = sp.csr_matrix((bary.ravel(), (np.repeat(np.arange(len(tv)), 3), faces[fid].ravel())),
                                   shape=(len(tv), n)) @ d
                a = a + at.T @ sp.diags(wt) @ at
                b = b + at.T @ (wt[:, None] * tv)
            x_new = splu(a.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                         options={"SymmetricMode": True}).solve(b)
            change = float(np.linalg.norm(d @ (x_new - x), axis=1).mean())
            x = x_new
            if change < tol:
                break
    return _untangle(d @ x, faces, tgt, untangle) * unit + centre


def _untangle(v, faces, target: _Closest, iterations: int) -> np.ndarray:
    """Unfold triangles facing against the target: their vertices to their neighbours' mean, then onto the target."""
    v = v.copy()
    e = edges(faces)
    adj = sp.csr_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(len(v),) * 2)
    deg = np.asarray(adj.sum(1)).ravel()[:, None]
    for _ in range(iterations):
        normals = target.query(v[faces].mean(1))[1]
        flipped = (face_normals(v, faces) * normals).sum(1) < 0
        if not flipped.any():
            break
        sel = np.unique(faces[flipped])
        v[sel] = target.query((adj[sel] @ v) / deg[sel])[0]
    return v


def correspond(template: Mesh, targets, *, scale: bool = True, chain: bool = False, **register_options) -> list:
    """The template deformed onto each target: a list of (V, 3) vertex arrays, each in its target's frame (mm).

    Each target is first aligned to the template (:func:`rigid_icp`, with an
    isotropic scale when ``scale``), the template is registered onto the aligned
    target (:func:`nonrigid_register`, keyword arguments passed on), and the result
    is mapped back into the target's original frame.  All results share the
    template's faces and vertex order; they are not aligned to each other (use
    Procrustes for that).

    With ``chain``, each target is registered from the previous result instead of
    the template: for an ordered population whose neighbours are alike (vertebrae
    along the spine) every step is then a small deformation, which keeps the mesh
    from folding where the first and last shapes differ a lot.
    """
    out = []
    source = template
    for target in targets:
        m, _ = rigid_icp(target, source, scale=scale)
        s = float(np.cbrt(np.linalg.det(m[:3, :3])))
        into = Similarity(m[:3, :3] / s, s, m[:3, 3])
        aligned = Mesh(vertices=into.apply(target.vertices), faces=np.asarray(target.faces))
        out.append(into.inverse().apply(nonrigid_register(source, aligned, **register_options)))
        if chain:
            source = Mesh(vertices=out[-1], faces=np.asarray(template.faces))
    return out
