"""Surface and volume agreement between a reconstructed mesh and the truth (mesh or label volume).

Surface distances are exact point-to-triangle distances (open3d's
``RaycastingScene.compute_distance``) from points spread uniformly by area over
one surface (plus its vertices) to the other surface, in both directions:

- Hausdorff distance ``HD = max(max d(A->B), max d(B->A))`` (mm)
- 95th-percentile Hausdorff ``HD95 = max(P95 d(A->B), P95 d(B->A))`` (mm)
- average symmetric surface distance ``ASSD = (sum d(A->B) + sum d(B->A)) / (n_A + n_B)`` (mm)

Dice ``2 |A n B| / (|A| + |B|)`` of the volumes enclosed, on a voxel grid (mesh
against mesh) or on the label volume's own grid (mesh against labels).
"""
from __future__ import annotations

import numpy as np

from .mesh.mesh import Mesh


def _scene(mesh: Mesh):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene


def surface_points(mesh: Mesh, n: int = 20000, seed: int = 0) -> np.ndarray:
    """(V + n, 3) points on the surface: the vertices and ``n`` area-uniform random points (mm)."""
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(f), size=int(n), p=area / area.sum())
    r1, r2 = rng.random(int(n)), rng.random(int(n))
    s = np.sqrt(r1)
    pts = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
    return np.concatenate([v, pts])


def point_to_surface(points, mesh: Mesh) -> np.ndarray:
    """Unsigned distance (mm) from each of (n, 3) points to the closest point of the mesh's triangles.

    Coordinates are taken relative to the mesh's centroid before open3d's float32 arithmetic, so
    far-from-origin frames (CT scanner coordinates) lose no precision.
    """
    import open3d as o3d

    origin = np.asarray(mesh.vertices, np.float64).mean(axis=0)
    local = Mesh(vertices=np.asarray(mesh.vertices, np.float64) - origin, faces=mesh.faces)
    q = o3d.core.Tensor((np.asarray(points, np.float64).reshape(-1, 3) - origin).astype(np.float32))
    return _scene(local).compute_distance(q).numpy().astype(np.float64)


def surface_distances(a: Mesh, b: Mesh, n: int = 20000, seed: int = 0):
    """(d(A->B), d(B->A)): distances (mm) from points on each surface to the other."""
    return point_to_surface(surface_points(a, n, seed), b), point_to_surface(surface_points(b, n, seed + 1), a)


def surface_metrics(a: Mesh, b: Mesh, n: int = 20000, seed: int = 0) -> dict:
    """``{"hd", "hd95", "assd", "mean_ab", "mean_ba"}`` in mm between meshes ``a`` and ``b`` (see module doc)."""
    ab, ba = surface_distances(a, b, n, seed)
    return {"hd": float(max(ab.max(), ba.max())),
            "hd95": float(max(np.percentile(ab, 95), np.percentile(ba, 95))),
            "assd": float((ab.sum() + ba.sum()) / (len(ab) + len(ba))),
            "mean_ab": float(ab.mean()), "mean_ba": float(ba.mean())}


def hausdorff(a: Mesh, b: Mesh, **kw) -> float:
    """Symmetric Hausdorff distance, mm."""
    return surface_metrics(a, b, **kw)["hd"]


def hausdorff95(a: Mesh, b: Mesh, **kw) -> float:
    """95th-percentile symmetric Hausdorff distance, mm."""
    return surface_metrics(a, b, **kw)["hd95"]


def assd(a: Mesh, b: Mesh, **kw) -> float:
    """Average symmetric surface distance, mm."""
    return surface_metrics(a, b, **kw)["assd"]


def inside(mesh: Mesh, points) -> np.ndarray:
    """Boolean (n,): which points lie inside the closed mesh (open3d occupancy by ray parity)."""
    import open3d as o3d

    q = o3d.core.Tensor(np.asarray(points, np.float32).reshape(-1, 3))
    return _scene(mesh).compute_occupancy(q, nsamples=3).numpy() > 0.5


def dice(a: Mesh, b: Mesh, voxel: float = 1.0) -> float:
    """Dice coefficient of the volumes inside two closed meshes, voxelised at ``voxel`` mm on their joint box."""
    lo = np.minimum(a.vertices.min(0), b.vertices.min(0)) - voxel
    hi = np.maximum(a.vertices.max(0), b.vertices.max(0)) + voxel
    axes = [np.arange(l + voxel / 2, h, voxel) for l, h in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    ia, ib = inside(a, pts), inside(b, pts)
    den = ia.sum() + ib.sum()
    return float(2 * (ia & ib).sum() / den) if den else 1.0


def dice_labels(mesh: Mesh, labels, world_from_index, label=None) -> float:
    """Dice of the mesh's interior against a label volume (``labels == label``, or ``labels > 0``), on its grid.

    Parameters
    ----------
    labels : (I, J, K) int array
    world_from_index : (4, 4) array, voxel index -> world mm (the NIfTI affine)
    """
    lab = np.asarray(labels)
    mask = lab > 0 if label is None else lab == label
    a = np.asarray(world_from_index, np.float64)
    # only voxels in the joint bounding box can differ from "outside both"
    inv = np.linalg.inv(a)
    lo_w, hi_w = mesh.vertices.min(0), mesh.vertices.max(0)
    corners = np.array([[x, y, z, 1.0] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1])
                        for z in (lo_w[2], hi_w[2])])
    idx = (corners @ inv.T)[:, :3]
    lo = np.clip(np.floor(idx.min(0)).astype(int) - 1, 0, np.array(lab.shape) - 1)
    hi = np.clip(np.ceil(idx.max(0)).astype(int) + 2, 0, np.array(lab.shape))
    grid = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    world = grid @ a[:3, :3].T + a[:3, 3]
    im = np.zeros(lab.shape, bool)
    im[tuple(grid.T)] = inside(mesh, world)
    den = im.sum() + mask.sum()
    return float(2 * (im & mask).sum() / den) if den else 1.0
