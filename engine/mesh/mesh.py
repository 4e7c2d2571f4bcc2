"""Closed triangle meshes: construction, reading (open3d; VTK in :mod:`engine.mesh.vtk`) and validation.

A :class:`Mesh` holds vertices (V, 3) float64 in world mm (RAS+) and faces (F, 3)
int64, counter-clockwise seen from outside (outward normals), so that a ray's
path length inside is ``sum_i sign(d . n_i) t_i`` over its hits (DESIGN.md).

:func:`validate` checks what the distance-map renderer relies on and raises
``ValueError`` naming the problem: NaN/inf coordinates, out-of-range indices,
degenerate triangles, edges not shared by exactly two faces (not watertight / not
edge-manifold), inconsistent winding; inward orientation is fixed (flipped) with a
warning, since it can be fixed unambiguously.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VTK_SUFFIXES = (".vtk", ".vtp")  # legacy POLYDATA, XML PolyData: read and written by engine.mesh.vtk
READABLE = (".stl", ".ply", ".obj", ".off") + VTK_SUFFIXES


def _open3d():
    """``import open3d``, naming the missing system library when its shared objects cannot be loaded.

    open3d's wheel links ``libusb-1.0.so.0``, which minimal systems (containers, CI runners) lack; its own
    ImportError/OSError then names only the file.
    """
    try:
        import open3d as o3d
    except ModuleNotFoundError as e:
        if e.name == "open3d":
            raise ModuleNotFoundError(f"open3d is not installed (pip install open3d): {e}", name=e.name) from e
        raise
    except (ImportError, OSError) as e:
        if "libusb" in str(e):
            raise ImportError("open3d needs the system library libusb-1.0 (Debian/Ubuntu: apt-get install "
                              f"libusb-1.0-0); importing it failed with: {type(e).__name__}: {e}") from e
        raise ImportError(f"open3d could not be loaded (a system library it needs may be missing): "
                          f"{type(e).__name__}: {e}") from e
    return o3d


@dataclass(frozen=True, kw_only=True, eq=False)
class Mesh:
    """A closed, outward-oriented triangle mesh (world mm).  Build with :func:`make_mesh` or :func:`load_mesh`."""

    vertices: np.ndarray = field(repr=False)  # (V, 3) float64, mm
    faces: np.ndarray = field(repr=False)  # (F, 3) int64

    @property
    def volume(self) -> float:
        """Enclosed volume, mm^3 (positive for outward orientation)."""
        return signed_volume(self.vertices, self.faces)

    def transformed(self, world_from_mesh) -> "Mesh":
        """The mesh moved by a rigid 4x4 transform."""
        t = np.asarray(world_from_mesh, np.float64)
        return Mesh(vertices=self.vertices @ t[:3, :3].T + t[:3, 3], faces=self.faces)

    def __repr__(self) -> str:
        return f"Mesh({len(self.vertices)} vertices, {len(self.faces)} faces, volume {self.volume / 1000:.1f} cm^3)"


def signed_volume(vertices, faces) -> float:
    """Signed volume (mm^3) enclosed by a triangle mesh; positive when outward oriented."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def face_normals(vertices, faces) -> np.ndarray:
    """(F, 3) face normals scaled by twice the face areas (mm^2), outward for an outward mesh."""
    t = np.asarray(vertices, np.float64)[np.asarray(faces)]
    return np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])


def vertex_normal_sums(vertices, faces) -> np.ndarray:
    """(V, 3) sum of the adjacent faces' :func:`face_normals` (area-weighted, not unit)."""
    f = np.asarray(faces)
    fn = face_normals(vertices, f)
    n = np.zeros((len(vertices), 3))
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n


def vertex_normals(vertices, faces) -> np.ndarray:
    """(V, 3) unit vertex normals: the area-weighted mean of the adjacent face normals."""
    n = vertex_normal_sums(vertices, faces)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def merge_vertices(vertices, faces, tol: float = 1e-6):
    """Merge vertices closer than ``tol`` mm (STL stores each triangle's corners separately)."""
    v = np.asarray(vertices, np.float64)
    key = np.round(v / tol).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return v[first], inverse.reshape(-1)[np.asarray(faces)]


def validate(vertices, faces, *, fix_orientation: bool = True, name: str = "mesh"):
    """Check a triangle mesh for the renderer; return (vertices, faces), faces flipped if inward.

    Raises ValueError naming the first problem found (see module doc).
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
        raise ValueError(f"{name}: vertices must be (V >= 4, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) < 4:
        raise ValueError(f"{name}: faces must be (F >= 4, 3) triangles, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{name}: faces must be integer vertex indices")
    f = f.astype(np.int64)
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} vertices have NaN/inf coordinates (first: {int(np.argmax(bad))})")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"{name}: face indices out of range 0..{len(v) - 1}")
    tri = v[f]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    scale = max(np.ptp(v, axis=0).max(), 1e-12)
    degenerate = area2 <= 1e-12 * scale ** 2
    if degenerate.any():
        raise ValueError(f"{name}: {int(degenerate.sum())} degenerate (zero-area) triangles "
                         f"(first: face {int(np.argmax(degenerate))})")
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    if np.any(counts == 1):
        raise ValueError(f"{name}: not watertight: {int((counts == 1).sum())} boundary edges "
                         f"(e.g. between vertices {undirected[counts == 1][0].tolist()})")
    if np.any(counts > 2):
        raise ValueError(f"{name}: not edge-manifold: {int((counts > 2).sum())} edges shared by more than two faces")
    _, dcounts = np.unique(directed, axis=0, return_counts=True)
    if np.any(dcounts > 1):
        raise ValueError(f"{name}: inconsistent winding: {int((dcounts > 1).sum())} edges are traversed in the same "
                         "direction by both of their faces (fix the orientation, e.g. open3d "
                         "orient_triangles())")
    vol = signed_volume(v, f)
    if vol < 0:
        if not fix_orientation:
            raise ValueError(f"{name}: faces are oriented inward (signed volume {vol:.3g} mm^3)")
        warnings.warn(f"{name}: faces were oriented inward; flipped them", RuntimeWarning, stacklevel=3)
        f = f[:, ::-1].copy()
    return v, f


def make_mesh(vertices, faces, *, merge: bool = False, name: str = "mesh") -> Mesh:
    """A validated :class:`Mesh` from arrays (copied; the caller's arrays are not changed)."""
    v, f = np.array(vertices, np.float64), np.array(faces)
    if merge:
        v, f = merge_vertices(v, f)
    v, f = validate(v, f, name=name)
    v.setflags(write=False)
    f.setflags(write=False)
    return Mesh(vertices=v, faces=f)


def load_mesh(path) -> Mesh:
    """Read STL, PLY, OBJ or OFF (through open3d) or VTK ``.vtk`` / ``.vtp`` polygon data (:mod:`engine.mesh.vtk`,
    polygons fan-triangulated); duplicate vertices are merged; validated."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mesh file not found: {p}")
    if p.suffix.lower() not in READABLE:
        raise ValueError(f"{p}: unsupported mesh format {p.suffix!r}; use one of {', '.join(READABLE)}")
    if p.suffix.lower() in VTK_SUFFIXES:
        from .vtk import read_vtk

        return make_mesh(*read_vtk(p), merge=True, name=p.name)
    o3d = _open3d()

    m = o3d.io.read_triangle_mesh(str(p))
    if len(m.triangles) == 0:
        raise ValueError(f"{p}: no triangles could be read (empty or not a {p.suffix[1:].upper()} mesh)")
    return make_mesh(np.asarray(m.vertices), np.asarray(m.triangles), merge=True, name=p.name)


def save_mesh(path, mesh: Mesh) -> Path:
    """Write a mesh: STL, PLY, OBJ, OFF through open3d; ``.vtk`` (legacy) and ``.vtp`` (XML) as ASCII."""
    p = Path(path)
    if p.suffix.lower() not in READABLE:
        raise ValueError(f"{p}: unsupported mesh format {p.suffix!r}")
    if p.suffix.lower() in VTK_SUFFIXES:
        from .vtk import write_vtk_legacy, write_vtp

        return (write_vtp if p.suffix.lower() == ".vtp" else write_vtk_legacy)(p, mesh.vertices, mesh.faces)
    o3d = _open3d()

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.array(mesh.vertices)),
                                  o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
    m.compute_triangle_normals()
    if not o3d.io.write_triangle_mesh(str(p), m):
        raise OSError(f"could not write {p}")
    return p


def icosphere(radius: float = 1.0, subdivisions: int = 3, center=(0.0, 0.0, 0.0)) -> Mesh:
    """A sphere mesh: an icosahedron subdivided ``subdivisions`` times, vertices on the sphere (mm)."""
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = v[uniq].mean(axis=1)
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = inv.reshape(3, -1).T + len(v)  # midpoints of edges (01, 12, 20) of each face
        v = np.concatenate([v, mid])
        a, b, c = f.T
        ab, bc, ca = m.T
        f = np.concatenate([np.stack([a, ab, ca], 1), np.stack([b, bc, ab], 1), np.stack([c, ca, bc], 1),
                            np.stack([ab, bc, ca], 1)])
    return make_mesh(v * radius + np.asarray(center, np.float64), f)


def from_labels(labels, label, world_from_index, *, decimate_to: int | None = None, name: str | None = None) -> Mesh:
    """A watertight surface of ``labels == label`` by marching cubes (scikit-image), in world mm.

    The mask is padded by one voxel so the surface closes at the volume's border; the
    largest connected surface is kept; optional quadric decimation (open3d) to about
    ``decimate_to`` triangles.  Vertices are mapped through ``world_from_index``.
    """
    from skimage.measure import marching_cubes

    lab = np.asarray(labels)
    mask = lab == label
    if not mask.any():
        raise ValueError(f"label {label} is absent from the label map")
    pad = np.pad(mask.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(pad, level=0.5)
    verts -= 1.0  # undo the padding: index coordinates of the original grid
    verts, faces = merge_vertices(verts, faces)
    faces = _largest_component(faces)
    used = np.unique(faces)
    remap = np.full(len(verts), -1)
    remap[used] = np.arange(len(used))
    verts, faces = verts[used], remap[faces]
    a = np.asarray(world_from_index, np.float64)
    world = verts @ a[:3, :3].T + a[:3, 3]
    if decimate_to is not None and len(faces) > decimate_to:
        o3d = _open3d()

        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(world), o3d.utility.Vector3iVector(faces))
        m = m.simplify_quadric_decimation(int(decimate_to))
        m.remove_degenerate_triangles()
        m.remove_unreferenced_vertices()
        world, faces = np.asarray(m.vertices), np.asarray(m.triangles)
    if np.linalg.det(a[:3, :3]) < 0:  # a mirroring affine flips the winding
        faces = faces[:, ::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # marching cubes' winding is fixed silently here
        return make_mesh(world, faces, name=name or f"label {label}")


def vertex_components(faces, n_vertices: int | None = None) -> np.ndarray:
    """(n_vertices,) label of the connected surface (through shared edges) each vertex belongs to."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces)
    n = int(f.max()) + 1 if n_vertices is None else int(n_vertices)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)), directed=False)[1]


def _largest_component(faces: np.ndarray) -> np.ndarray:
    face_comp = vertex_components(faces)[faces[:, 0]]
    return faces[face_comp == np.bincount(face_comp).argmax()]
