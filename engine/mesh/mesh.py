"""Closed triangle meshes: construction, reading and validation.

Files are read by NumPy parsers here (STL binary and ASCII, PLY ASCII and binary, OBJ, OFF) and in
:mod:`engine.mesh.vtk` (VTK PolyData, legacy ``.vtk`` and XML ``.vtp``), and by meshio for the formats it brings
(VTK unstructured grids ``.vtk`` / ``.vtu``, Gmsh ``.msh``, Abaqus ``.inp``, Medit ``.mesh``), never by a C library
that could crash on a damaged file: a file that cannot be read raises :class:`~engine.errors.InputError` naming the
file, the problem and, for the NumPy parsers, where it lies (line, vertex or face as numbered in the file).
:func:`save_mesh` writes through meshio (and :mod:`engine.mesh.vtk` for VTK PolyData).

A :class:`Mesh` holds vertices (V, 3) float64 in world mm (RAS+) and faces (F, 3)
int64, counter-clockwise seen from outside (outward normals), so that a ray's
path length inside is ``sum_i sign(d . n_i) t_i`` over its hits (docs/architecture.md).

:func:`validate` checks what the distance-map renderer relies on and raises
``ValueError`` naming the problem: NaN/inf coordinates, out-of-range indices,
degenerate triangles, edges not shared by exactly two faces (not watertight / not
edge-manifold), inconsistent winding; inward orientation is fixed (flipped) with a
warning, since it can be fixed unambiguously.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

# VTK, the format told by the content: PolyData (legacy POLYDATA, XML PolyData) read and written by
# engine.mesh.vtk; unstructured grids (legacy UNSTRUCTURED_GRID, XML UnstructuredGrid) read by meshio
VTK_SUFFIXES = (".vtk", ".vtp", ".vtu")
# read and written by meshio: suffix -> (meshio reader/writer module, name of the format in messages).  Not Gmsh
# .msh: meshio allocates an array as long as the largest node tag, so one damaged byte can cost gigabytes
MESHIO_FORMATS = {".inp": ("abaqus", "Abaqus"), ".mesh": ("medit", "Medit"), ".meshb": ("medit", "Medit binary")}
READABLE = (".stl", ".ply", ".obj", ".off") + VTK_SUFFIXES + tuple(MESHIO_FORMATS)


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
    if len(v) and not np.abs(v).max() / tol < 2.0 ** 62:  # NaN too: integer keys would wrap
        raise ValueError(f"cannot merge vertices with coordinates up to {np.abs(v).max():.3g} mm at {tol:g} mm "
                         "(NaN/inf or beyond the integer key range)")
    key = np.round(v / tol).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return v[first], inverse.reshape(-1)[np.asarray(faces)]


def _check_arrays(vertices, faces, name: str):
    """(V, 3) float64 vertices and (F, 3) int64 faces: at least a tetrahedron's worth, finite, indices in range."""
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
    out = ((f < 0) | (f >= len(v))).any(axis=1)
    if out.any():
        j = int(np.argmax(out))
        raise ValueError(f"{name}: face indices out of range 0..{len(v) - 1} (first: face {j}, {f[j].tolist()})")
    return v, f


def validate(vertices, faces, *, fix_orientation: bool = True, name: str = "mesh"):
    """Check a triangle mesh for the renderer; return (vertices, faces), faces flipped if inward.

    Raises ValueError naming the first problem found (see module doc).
    """
    v, f = _check_arrays(vertices, faces, name)
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
        v, f = merge_vertices(*_check_arrays(v, f, name))
    v, f = validate(v, f, name=name)
    v.setflags(write=False)
    f.setflags(write=False)
    return Mesh(vertices=v, faces=f)


def load_mesh(path) -> Mesh:
    """Read STL (binary or ASCII), PLY (ASCII or binary), OBJ, OFF, VTK (``.vtk``, ``.vtp``, ``.vtu``: polygon data
    or the surface cells of an unstructured grid), Gmsh ``.msh``, Abaqus ``.inp`` or Medit ``.mesh``; polygons are
    fan-triangulated, duplicate vertices merged, the mesh validated.

    Raises FileNotFoundError for a missing file and :class:`~engine.errors.InputError` (a ValueError) naming the
    file for one that cannot be read or is not a closed surface; NaN/inf vertices and out-of-range face indices
    are reported as numbered in the file (and by line in text files), before duplicate vertices are merged.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mesh file not found: {p}")
    suffix = p.suffix.lower()
    if suffix not in READABLE:
        raise InputError(f"{p}: unsupported mesh format {p.suffix!r}; use one of {', '.join(READABLE)}")
    if suffix in VTK_SUFFIXES:
        from .vtk import read_vtk

        m = _FileMesh(*read_vtk(p))
    elif suffix in MESHIO_FORMATS:
        from .vtk import read_meshio

        m = _FileMesh(*read_meshio(p, *MESHIO_FORMATS[suffix]))
    else:
        m = _READERS[suffix](p.read_bytes(), p.name)
    if len(m.faces) == 0:
        raise InputError(f"{p.name}: no triangles in the file")
    m.check(p.name)
    try:
        return make_mesh(m.vertices, m.faces, merge=True, name=p.name)
    except InputError:
        raise
    except ValueError as e:  # validation: not closed, degenerate, ...
        raise InputError(str(e)) from None


# --------------------------------------------------------------------------------------------------- file formats
_MAX_COORD = 1e12  # mm: beyond this a coordinate is damage (and merge_vertices' integer keys would overflow)


@dataclass
class _FileMesh:
    """Vertices and triangles as read from a file, not yet checked, with where each came from (for messages)."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64, 0-based
    vertex_lines: np.ndarray | None = None  # (V,) line numbers (text files)
    polygons: np.ndarray | None = None  # (F,) the file's face record each triangle comes from (fan triangulation)
    polygon_lines: np.ndarray | None = None  # (P,) line numbers of the face records (text files)
    base: int = 0  # number of the file's first vertex (OBJ counts from 1)
    corners: bool = False  # STL: the vertices are the corners of the triangles, 3 each

    def vertex(self, i: int) -> str:
        """Vertex ``i`` as the file numbers it."""
        where = f"triangle {i // 3} corner {i % 3}" if self.corners else f"vertex {i + self.base}"
        return where + ("" if self.vertex_lines is None else f" (line {self.vertex_lines[i]})")

    def face(self, j: int) -> str:
        """Triangle ``j`` as the face record of the file it comes from."""
        k = j if self.polygons is None else int(self.polygons[j])
        return f"face {k}" + ("" if self.polygon_lines is None else f" (line {self.polygon_lines[k]})")

    def check(self, name: str) -> None:
        """InputError for NaN/inf or absurd coordinates and face indices out of range, named as in the file."""
        v, f = self.vertices, self.faces
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            raise InputError(f"{name}: {int(bad.sum())} vertices have NaN/inf coordinates "
                             f"(first: {self.vertex(int(np.argmax(bad)))})")
        big = np.abs(v).max(axis=1) > _MAX_COORD
        if big.any():
            i = int(np.argmax(big))
            raise InputError(f"{name}: {int(big.sum())} vertices lie beyond {_MAX_COORD:g} mm (first: "
                             f"{self.vertex(i)}, {v[i].tolist()}); damaged file?")
        out = (f < 0) | (f >= len(v))
        if out.any():
            j = int(np.argmax(out.any(axis=1)))
            k = int(f[j][out[j]][0]) + self.base
            raise InputError(f"{name}: {self.face(j)} refers to vertex {k}, but the file has {len(v)} vertices "
                             f"(numbered {self.base}..{len(v) - 1 + self.base}): face index out of range")


def _polygon_mesh(name, vertices, polygons, *, vertex_lines=None, polygon_lines=None, base=0) -> _FileMesh:
    """A :class:`_FileMesh` of polygons (lists of 0-based indices, or a (P, k) array), fan-triangulated."""
    from .vtk import fan_triangulate

    if isinstance(polygons, np.ndarray):  # all of one size
        counts, flat = np.full(len(polygons), polygons.shape[1], np.int64), polygons.astype(np.int64).ravel()
    else:
        counts = np.fromiter((len(q) for q in polygons), np.int64, len(polygons))
        flat = np.fromiter((i for q in polygons for i in q), np.int64, int(counts.sum()))
    tris = fan_triangulate(np.r_[0, np.cumsum(counts)], flat, name) if len(polygons) else np.zeros((0, 3), np.int64)
    return _FileMesh(np.asarray(vertices, np.float64).reshape(-1, 3), tris,
                     None if vertex_lines is None else np.asarray(vertex_lines),
                     np.repeat(np.arange(len(polygons)), np.maximum(counts - 2, 0)),
                     None if polygon_lines is None else np.asarray(polygon_lines), base)


def _text_lines(data: bytes, comment: str | None = None) -> list:
    """(line number, words) of the lines of a text file that hold something (after a ``comment`` character)."""
    out = []
    for n, line in enumerate(data.decode("latin-1").split("\n"), 1):
        words = (line.split(comment, 1)[0] if comment else line).split()
        if words:
            out.append((n, words))
    return out


def _numbers(words, line: int, name: str, what: str, kind=float) -> list:
    """The words as numbers (``float`` or ``int``); InputError naming the line."""
    try:
        return [kind(w) for w in words]
    except ValueError:
        raise InputError(f"{name}: line {line}: bad number in {what}: {' '.join(words)[:60]!r}") from None


def _read_stl(data: bytes, name: str) -> _FileMesh:
    """Binary STL (told by its size: 84 + 50 bytes per triangle) or ASCII STL (``solid ... endsolid``)."""
    n = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
    if n >= 0 and len(data) == 84 + 50 * n:
        rec = np.frombuffer(data, np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]), n, 84)
        return _FileMesh(rec["v"].reshape(-1, 3).astype(np.float64), np.arange(3 * n).reshape(n, 3), corners=True)
    if data.lstrip()[:5].lower() == b"solid" and b"\0" not in data[:512]:  # binary headers may start with solid
        return _read_stl_ascii(data, name)
    if n < 0:
        raise InputError(f"{name}: not an STL file ({len(data)} bytes: too short for binary STL, and no ASCII "
                         "'solid' header)")
    raise InputError(f"{name}: not a readable STL file: as binary STL its header announces {n} triangles "
                     f"({84 + 50 * n} bytes), the file has {len(data)} bytes (truncated or damaged?); no ASCII "
                     "'solid' header either")


_STL_FACET = ("outer", "vertex", "vertex", "vertex", "endloop", "endfacet")


def _read_stl_ascii(data: bytes, name: str) -> _FileMesh:
    """``solid`` / ``facet normal`` / ``outer loop`` / 3 ``vertex`` / ``endloop`` / ``endfacet`` / ``endsolid``."""
    lines = _text_lines(data)
    verts, vlines, i = [], [], 1
    while True:
        if i >= len(lines):
            raise InputError(f"{name}: the file ends before 'endsolid' (truncated ASCII STL?)")
        line, words = lines[i]
        key = words[0].lower()
        if key == "endsolid":
            if i + 1 == len(lines):
                break
            if lines[i + 1][1][0].lower() != "solid":
                raise InputError(f"{name}: line {lines[i + 1][0]}: unexpected {' '.join(lines[i + 1][1])[:40]!r} "
                                 "after 'endsolid'")
            i += 2
            continue
        if key != "facet":
            raise InputError(f"{name}: line {line}: expected 'facet' or 'endsolid', got {' '.join(words)[:40]!r}")
        for k, expected in enumerate(_STL_FACET, 1):
            if i + k >= len(lines):
                raise InputError(f"{name}: the file ends inside a facet (truncated ASCII STL?)")
            line, words = lines[i + k]
            if words[0].lower() != expected:
                raise InputError(f"{name}: line {line}: expected '{expected}', got {' '.join(words)[:40]!r}")
            if expected == "vertex":
                if len(words) != 4:
                    raise InputError(f"{name}: line {line}: a vertex needs 3 coordinates, got {len(words) - 1}")
                verts.append(_numbers(words[1:], line, name, "a vertex"))
                vlines.append(line)
        i += 1 + len(_STL_FACET)
    n = len(verts) // 3
    return _FileMesh(np.array(verts, np.float64).reshape(-1, 3), np.arange(3 * n).reshape(n, 3), np.array(vlines),
                     corners=True)


# OBJ statements other than v and f: ignored (texture, normals, groups, materials, free-form geometry)
_OBJ_IGNORED = {"vt", "vn", "vp", "l", "p", "o", "g", "s", "usemtl", "mtllib", "cstype", "deg", "bmat", "step",
                "curv", "curv2", "surf", "parm", "trim", "hole", "scrv", "sp", "end", "con", "mg", "bevel",
                "c_interp", "d_interp", "lod", "maplib", "usemap", "shadow_obj", "trace_obj", "ctech", "stech",
                "call", "csh"}


def _read_obj(data: bytes, name: str) -> _FileMesh:
    """Wavefront OBJ: ``v x y z`` and ``f i j k ...`` (``i/t/n`` forms, negative = relative); vertices count from 1."""
    verts, vlines, polys, plines = [], [], [], []
    for line, words in _text_lines(data, "#"):
        key = words[0]
        if key == "v":
            xyz = _numbers(words[1:], line, name, "a vertex")
            if len(xyz) not in (3, 4, 6, 7):
                raise InputError(f"{name}: line {line}: a vertex needs 3 coordinates (and optionally w or a colour), "
                                 f"got {len(xyz)} numbers")
            verts.append(xyz[:3])
            vlines.append(line)
        elif key == "f":
            refs = _numbers([w.split("/", 1)[0] for w in words[1:]], line, name, "a face", int)
            if len(refs) < 3:
                raise InputError(f"{name}: line {line}: a face needs at least 3 vertices, got {len(refs)}")
            idx = [r - 1 if r > 0 else len(verts) + r if r < 0 else -1 for r in refs]  # negative: relative
            if min(idx) < 0 and min(refs) < 0:
                raise InputError(f"{name}: line {line}: relative vertex reference {min(refs)} lies before the first "
                                 "vertex")
            polys.append(idx)
            plines.append(line)
        elif key not in _OBJ_IGNORED:
            raise InputError(f"{name}: line {line}: unknown OBJ statement {key[:20]!r} (not an OBJ file, or damaged)")
    return _polygon_mesh(name, verts, polys, vertex_lines=vlines, polygon_lines=plines, base=1)


def _read_off(data: bytes, name: str) -> _FileMesh:
    """Object File Format: ``OFF``, ``nv nf ne``, nv lines ``x y z``, nf lines ``n i0 .. in-1 [colour]``."""
    lines = _text_lines(data, "#")
    head = lines[0][1] if lines else []
    if not head or not re.fullmatch(r"(ST)?C?N?OFF", head[0].upper()):
        raise InputError(f"{name}: not an OFF file (no 'OFF' header{'' if head else ', empty'}; 4OFF/nOFF are not "
                         "read)")
    i = 1
    counts = head[1:]
    if not counts and len(lines) > 1:
        counts, i = lines[1][1], 2
    line = lines[i - 1][0]
    nums = _numbers(counts, line, name, "the counts", int)
    if len(nums) not in (2, 3) or min(nums) < 0:
        raise InputError(f"{name}: line {line}: expected the counts 'vertices faces [edges]', got "
                         f"{' '.join(counts)[:40]!r}")
    nv, nf = nums[:2]
    if len(lines) < i + nv + nf:
        raise InputError(f"{name}: the header announces {nv} vertices and {nf} faces, the file ends after "
                         f"{len(lines) - i} lines of them (truncated?)")
    plain = head[0].upper() == "OFF"
    verts = []
    for line, words in lines[i:i + nv]:
        if len(words) < 3 or (plain and len(words) != 3):
            raise InputError(f"{name}: line {line}: a vertex needs 3 coordinates, got {len(words)} numbers")
        verts.append(_numbers(words[:3], line, name, "a vertex"))
    polys = []
    for line, words in lines[i + nv:i + nv + nf]:
        nums = _numbers(words[:1], line, name, "a face", int)
        k = nums[0]
        if k < 3 or len(words) < 1 + k or len(words) > 5 + k:
            raise InputError(f"{name}: line {line}: a face is 'n i0 .. i(n-1) [colour]' with n >= 3, got "
                             f"{' '.join(words)[:40]!r}")
        polys.append(_numbers(words[1:1 + k], line, name, "a face", int))
        _numbers(words[1 + k:], line, name, "a face colour")
    if len(lines) > i + nv + nf:
        raise InputError(f"{name}: line {lines[i + nv + nf][0]}: data after the {nv} vertices and {nf} faces the "
                         "header announces (damaged file?)")
    return _polygon_mesh(name, verts, polys, vertex_lines=[ln for ln, _ in lines[i:i + nv]],
                         polygon_lines=[ln for ln, _ in lines[i + nv:i + nv + nf]])


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f", "f8": "d"}


@dataclass
class _PlyElement:
    name: str
    count: int
    props: list  # (name, count code or None for a scalar, value code)


def _ply_header(data: bytes, name: str):
    """(format, elements, offset of the body, number of header lines) of a PLY file."""
    if not data.startswith((b"ply\n", b"ply\r\n")):
        raise InputError(f"{name}: not a PLY file (no 'ply' first line)")
    end = re.search(rb"\nend_header[ \t]*\r?\n", data)
    if end is None:
        raise InputError(f"{name}: the PLY header has no 'end_header' line (truncated or damaged?)")
    lines = data[:end.end()].decode("latin-1").split("\n")[:-1]
    fmt, elements = None, []
    for n, text in enumerate(lines[1:-1], 2):
        words = text.split()
        bad = InputError(f"{name}: line {n}: unreadable PLY header line {text.strip()[:60]!r}")
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) != 3 or words[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise bad
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not re.fullmatch("[0-9]+", words[2]):
                raise bad
            elements.append(_PlyElement(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].props.append((words[2], None, _PLY_TYPES[words[1]]))
            elif len(words) == 5 and words[1] == "list" and words[2] in _PLY_TYPES and words[3] in _PLY_TYPES \
                    and _PLY_TYPES[words[2]][0] in "iu":
                elements[-1].props.append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
            else:
                raise bad
        else:
            raise bad
    if fmt is None:
        raise InputError(f"{name}: the PLY header has no 'format' line")
    empty = [el.name for el in elements if el.count and not el.props]
    if empty:
        raise InputError(f"{name}: PLY element '{empty[0]}' has no properties")
    names = [el.name for el in elements]
    if len(set(names)) < len(names):
        raise InputError(f"{name}: PLY elements {names} are not all different")
    return fmt, elements, end.end(), len(lines)


def _ply_mesh_properties(elements: list, name: str) -> str:
    """Check that the header declares scalar vertex x, y, z and an integer face list; return that list's name."""
    props = {el.name: {p: (c, v) for p, c, v in el.props} for el in elements}
    vertex, face = props.get("vertex", {}), props.get("face", {})
    if not all(k in vertex and vertex[k][0] is None for k in "xyz"):
        raise InputError(f"{name}: no 'vertex' element with x, y, z properties")
    key = next((k for k in ("vertex_indices", "vertex_index") if k in face and face[k][0] is not None), None)
    if key is None:
        raise InputError(f"{name}: no 'face' element with a 'vertex_indices' list (a point cloud?)")
    if face[key][1][0] == "f":
        raise InputError(f"{name}: the face list '{key}' holds floating-point numbers, not vertex indices")
    return key


def _read_ply(data: bytes, name: str) -> _FileMesh:
    """PLY, ASCII or binary: ``vertex`` (x, y, z) and ``face`` (a list ``vertex_indices``); other elements skipped."""
    fmt, elements, start, nhead = _ply_header(data, name)
    key = _ply_mesh_properties(elements, name)
    if fmt == "ascii":
        rows = [(n + nhead, w) for n, w in _text_lines(data[start:])]
        read = _PlyAscii(rows, name)
    else:
        read = _PlyBinary(data, start, "<" if fmt == "binary_little_endian" else ">", name)
    values, lines = {}, {}
    for el in elements:
        values[el.name], lines[el.name] = read.element(el)
    read.finish()
    verts = np.stack([np.asarray(values["vertex"][k], np.float64) for k in "xyz"], 1)
    return _polygon_mesh(name, verts, values["face"][key], vertex_lines=lines["vertex"], polygon_lines=lines["face"])


class _PlyBinary:
    """Reads the elements of a binary PLY body in order."""

    def __init__(self, data: bytes, pos: int, endian: str, name: str):
        self.data, self.pos, self.endian, self.name = data, pos, endian, name

    def truncated(self, el):
        return InputError(f"{self.name}: the file ends inside the data of element '{el.name}' ({el.count} "
                          "announced; truncated or damaged?)")

    def element(self, el: _PlyElement):
        """{property: values} of an element (a list property: a list of arrays) and None (no line numbers)."""
        if all(c is None for _, c, _ in el.props):
            try:
                dt = np.dtype([(p, self.endian + code) for p, _, code in el.props])
            except ValueError:
                raise InputError(f"{self.name}: element '{el.name}' has repeated property names") from None
            if self.pos + el.count * dt.itemsize > len(self.data):
                raise self.truncated(el)
            arr = np.frombuffer(self.data, dt, el.count, self.pos)
            self.pos += el.count * dt.itemsize
            return {p: arr[p] for p, _, _ in el.props}, None
        if len(el.props) == 1:  # one list property, e.g. faces: all of one length is one frombuffer
            got = self._uniform_list(el)
            if got is not None:
                return got, None
        return self._rows(el), None

    def _uniform_list(self, el):
        prop, ccode, vcode = el.props[0]
        csize = int(ccode[1])
        if self.pos + csize > len(self.data) or el.count == 0:
            return None
        k = int(np.frombuffer(self.data, self.endian + ccode, 1, self.pos)[0])
        dt = np.dtype([("n", self.endian + ccode), ("i", self.endian + vcode, (k,))])
        if self.pos + el.count * dt.itemsize > len(self.data):
            return None
        arr = np.frombuffer(self.data, dt, el.count, self.pos)
        if not np.all(arr["n"] == k):
            return None
        self.pos += el.count * dt.itemsize
        return {prop: arr["i"].reshape(el.count, k)}

    def _rows(self, el):
        import struct

        out = {p: [] for p, _, _ in el.props}
        e = self.endian
        try:
            for _ in range(el.count):
                for p, ccode, vcode in el.props:
                    if ccode is None:
                        out[p].append(struct.unpack_from(e + _STRUCT[vcode], self.data, self.pos)[0])
                        self.pos += int(vcode[1])
                        continue
                    (k,) = struct.unpack_from(e + _STRUCT[ccode], self.data, self.pos)
                    self.pos += int(ccode[1])
                    if k < 0:
                        raise InputError(f"{self.name}: a negative list length in element '{el.name}'")
                    out[p].append(struct.unpack_from(f"{e}{k}{_STRUCT[vcode]}", self.data, self.pos))
                    self.pos += k * int(vcode[1])
        except struct.error:
            raise self.truncated(el) from None
        return out

    def finish(self):
        rest = self.data[self.pos:]
        if rest.strip():
            raise InputError(f"{self.name}: {len(rest)} bytes after the data of the elements the header announces "
                             "(damaged file?)")


class _PlyAscii:
    """Reads the elements of an ASCII PLY body in order: one line per element."""

    def __init__(self, rows: list, name: str):
        self.rows, self.i, self.name = rows, 0, name

    def element(self, el: _PlyElement):
        """{property: values} of an element and the line number of each row."""
        rows = self.rows[self.i:self.i + el.count]
        if len(rows) < el.count:
            raise InputError(f"{self.name}: the file ends after {len(rows)} of the {el.count} '{el.name}' lines "
                             "(truncated?)")
        self.i += el.count
        out = {p: [] for p, _, _ in el.props}
        for line, words in rows:
            j = 0
            for p, ccode, vcode in el.props:
                if ccode is not None:
                    k = _numbers(words[j:j + 1], line, self.name, f"the length of list '{p}'", int)
                    if len(k) != 1 or k[0] < 0:
                        raise InputError(f"{self.name}: line {line}: bad list length in element '{el.name}'")
                    j += 1
                    take = k[0]
                else:
                    take = 1
                vals = _numbers(words[j:j + take], line, self.name, f"'{p}'", float if vcode[0] == "f" else int)
                if len(vals) != take:
                    raise InputError(f"{self.name}: line {line}: too few values for element '{el.name}'")
                out[p].append(vals if ccode is not None else vals[0])
                j += take
            if j != len(words):
                raise InputError(f"{self.name}: line {line}: {len(words) - j} values more than element '{el.name}' "
                                 "has properties")
        return out, np.array([line for line, _ in rows], np.int64)

    def finish(self):
        if self.i < len(self.rows):
            raise InputError(f"{self.name}: line {self.rows[self.i][0]}: data after the elements the header "
                             "announces (damaged file?)")


_READERS = {".stl": _read_stl, ".ply": _read_ply, ".obj": _read_obj, ".off": _read_off}


# save_mesh through meshio: suffix -> (meshio format, keyword arguments of its writer)
_MESHIO_WRITERS = {".stl": ("stl", {"binary": True}), ".ply": ("ply", {"binary": True}), ".obj": ("obj", {}),
                   ".off": ("off", {}), ".vtu": ("vtu", {}), ".inp": ("abaqus", {}), ".mesh": ("medit", {}),
                   ".meshb": ("medit", {})}


def save_mesh(path, mesh: Mesh) -> Path:
    """Write a mesh in the format its suffix names: ``.vtk`` (legacy POLYDATA) and ``.vtp`` (XML PolyData) as ASCII
    by :mod:`engine.mesh.vtk`; STL (binary), PLY (binary), OBJ, OFF, ``.vtu`` (zlib), Abaqus ``.inp`` and Medit
    ``.mesh`` / ``.meshb`` by meshio.  Every file it writes :func:`load_mesh` reads back."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in READABLE:
        raise ValueError(f"{p}: unsupported mesh format {p.suffix!r}; use one of {', '.join(READABLE)}")
    if suffix in (".vtk", ".vtp"):
        from .vtk import write_vtk_legacy, write_vtp

        return (write_vtp if suffix == ".vtp" else write_vtk_legacy)(p, mesh.vertices, mesh.faces)
    import meshio

    fmt, kwargs = _MESHIO_WRITERS[suffix]
    meshio.write(p, meshio.Mesh(np.asarray(mesh.vertices, np.float64), [("triangle", np.asarray(mesh.faces))]),
                 file_format=fmt, **kwargs)
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
