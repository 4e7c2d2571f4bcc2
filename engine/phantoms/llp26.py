"""The LLP26 pelvis shape model (Zhang et al., J Biomech 2016; MPL-2.0): loading, triangulation, anatomical frame.

The model ships in the PyPI package ``musculoskeletal-models==0.2.4`` (a project
dependency, ``musculoskeletal/models/``); where the package is absent, a copy of its files in
``$ENGINE_DATA/llp26_pelvis_ssm/`` is used (:mod:`engine.assets`).  Its ``.pc`` files are
Python pickles: they are read with an unpickler that admits only what NumPy arrays
need, because a pickle can run arbitrary code.

Frames.  Vertex coordinates are in mm.  The *model frame* is the frame of the
model's source data: not anatomical, pelvis z about 1140-1360 mm.
:func:`pelvis_ras_transform` gives the rigid transform from it to an anatomical
RAS+ frame (+x patient right, +y anterior, +z superior) centred on the mean
pelvis; ``python -m engine.phantoms.llp26`` prints the landmark checks behind it.

Reference: J. Zhang, J. Fernandez, J. Hislop-Jambrich, T. F. Besier, "Lower limb
estimation from sparse landmarks using an articulated shape model", J Biomech
49(16):3875-3881, 2016, doi:10.1016/j.jbiomech.2016.10.021.
"""
from __future__ import annotations

import io
import json
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..assets import data_path
from ..geometry.transforms import rotation_angle
from ..mesh.mesh import signed_volume, vertex_components
from ..mesh.subdivide import subdivide  # noqa: F401 - re-exported: engine.phantoms.subdivide

N_NODES = 3225  # nodes of the whole lower-limb model
N_PELVIS = 1946  # nodes 0..1945: the pelvis (two hip bones + sacrum)
N_FACES = 3888  # triangles of the pelvis surface
FEMUR = slice(1946, 2580)  # node blocks of the (left) limb, see the data README
PATELLA = slice(2580, 2654)
MODEL_FILE = "shape_models/LLP26_rigid.pc"
MESH_FILE = "atlas_meshes/pelvis_combined_cubic_flat.mesh"
ENS_FILE = "atlas_meshes/pelvis_combined_cubic_flat.ens"
DATA_SET = "llp26_pelvis_ssm"  # the folder of a copy of the model files under $ENGINE_DATA


# --------------------------------------------------------------------------- safe loading
def _numpy_allowlist() -> dict:
    """The only globals a shape-model pickle may name: NumPy array reconstruction.

    Resolved here, not imported from the names in the pickle, so that the
    deprecated ``numpy.core`` alias of NumPy 2 is never imported.
    """
    try:
        from numpy._core import multiarray  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray
    allowed = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, dtypes and scalars (plus plain containers).

    Dicts, lists, tuples, strings, numbers and None need no global lookup and load
    as usual; any other class or function named by the pickle (``os.system``,
    ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError` naming it.
    """

    _ALLOWED = _numpy_allowlist()

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a shape-model pickle: only NumPy arrays are allowed") from None


def safe_load_pickle(data: bytes):
    """Unpickle ``data`` (bytes) with :class:`ArraysOnlyUnpickler`; Python 2 strings decode as latin-1.

    Arrays pickled with protocol 3 or later load (LLP26 uses 4); protocol 0-2 array
    pickles need ``_codecs.encode`` and are refused like any other global.
    """
    return ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def data_file(relative: str) -> Path:
    """Path of an LLP26 data file, e.g. ``"shape_models/LLP26_rigid.pc"`` or ``"atlas_meshes/..."``.

    Looked up first in the installed package (``musculoskeletal.models.get_model_path``),
    then in the copy ``$ENGINE_DATA/llp26_pelvis_ssm/`` (:func:`engine.assets.data_path`).

    Raises
    ------
    FileNotFoundError
        If neither place has the file; the message names both.
    """
    pkg = "package musculoskeletal-models not installed"
    try:
        import musculoskeletal.models as installed
    except ImportError:
        pass
    else:
        p = installed.get_model_path(relative)  # None when the file is absent
        if p is not None and Path(p).is_file():
            return Path(p)
        pkg = f"not in the installed musculoskeletal-models package ({Path(installed.__file__).parent})"
    try:
        p = data_path(DATA_SET) / relative
    except FileNotFoundError as e:
        copy = str(e)
    else:
        if p.is_file():
            return p
        copy = f"no copy at {p}"
    raise FileNotFoundError(f"LLP26 file {relative!r} not found: {pkg}; {copy}. "
                            "Install it with `pip install musculoskeletal-models==0.2.4`.")


@lru_cache(maxsize=4)
def _load_model_cached(path: str) -> dict:
    d = safe_load_pickle(Path(path).read_bytes())
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a dict of arrays, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        if v is None:  # "SD" and "sizes" are None in LLP26
            continue
        a = np.array(v)
        a.setflags(write=False)  # cached: shared by every caller
        out[k] = a
    for k in ("mean", "modes", "weights", "projectedWeights"):
        if k not in out:
            raise ValueError(f"{path}: not an LLP26 shape model (no {k!r} array)")
    return out


def load_llp26_model(path: str | Path | None = None) -> dict:
    """Load the LLP26 PCA shape model from its ``.pc`` pickle, safely.

    Parameters
    ----------
    path : str or Path, optional
        A ``.pc`` file.  Default: ``shape_models/LLP26_rigid.pc`` (the left-side
        model) found by :func:`data_file`.

    Returns
    -------
    dict of numpy.ndarray (read-only)
        ``mean`` (9675,) mm; ``modes`` (9675, 26), orthonormal columns;
        ``weights`` (26,) mode variances in mm^2; ``projectedWeights`` (26, 26)
        scores indexed [mode, subject].  Entries stored as None are dropped.
        A shape vector lists coordinates dimension by dimension:
        ``vec.reshape(3, 3225).T`` gives the nodes in the model frame.

    Raises
    ------
    pickle.UnpicklingError
        If the file names anything but NumPy array classes.
    """
    return _load_model_cached(str(Path(path) if path is not None else data_file(MODEL_FILE)))


def _nodes(vec: np.ndarray) -> np.ndarray:
    return np.asarray(vec, np.float64).reshape(3, N_NODES).T.copy()


def pelvis_mean_vertices() -> np.ndarray:
    """(1946, 3) float64 vertices of the mean pelvis, model frame, mm."""
    return _nodes(load_llp26_model()["mean"])[:N_PELVIS]


def pelvis_subject_vertices(i: int) -> np.ndarray:
    """(1946, 3) float64 vertices (model frame, mm) of training subject ``i`` (0..25).

    Exact: ``mean + modes @ projectedWeights[:, i]`` keeps every mode.
    """
    m = load_llp26_model()
    n = m["projectedWeights"].shape[1]
    if not 0 <= int(i) < n:
        raise ValueError(f"subject index must be in 0..{n - 1}, got {i}")
    return _nodes(m["mean"] + m["modes"] @ m["projectedWeights"][:, int(i)])[:N_PELVIS]


# --------------------------------------------------------------------------- topology
def _element_point_ids(connectivity: dict) -> dict:
    """Data README steps 1-2: number the element points ``"e_p"`` in sorted (e, p) order,
    giving every point connected to a new point the same id."""
    keys = sorted(connectivity, key=lambda k: tuple(int(x) for x in k.split("_")))
    ids: dict = {}
    for k in keys:
        if k in ids:
            continue
        ids[k] = n = len(set(ids.values()))
        for other in connectivity[k].split():
            if ids.setdefault(other, n) != n:
                raise ValueError(f"LLP26 mesh: point {other} is connected to points with different ids")
    return ids


def _element_triangles(kind: str, nodes) -> list:
    """Triangles of one element; ``nodes(p)`` is the node index of element point p."""
    tris = []
    if kind == "quad44":  # 4x4 grid, p = 4 * row + col: 9 cells, 18 triangles
        for r in range(3):
            for c in range(3):
                a, b = nodes(4 * r + c), nodes(4 * r + c + 1)
                d, f = nodes(4 * (r + 1) + c), nodes(4 * (r + 1) + c + 1)
                tris += [(a, b, f), (a, f, d)]
    elif kind == "tri10":  # rows [0,1,2,3], [4,5,6], [7,8], [9]: 9 triangles
        rows = [[0, 1, 2, 3], [4, 5, 6], [7, 8], [9]]
        for lo, hi in zip(rows[:-1], rows[1:]):
            for c in range(len(hi)):
                tris.append((nodes(lo[c]), nodes(lo[c + 1]), nodes(hi[c])))
                if c + 1 < len(hi):
                    tris.append((nodes(lo[c + 1]), nodes(hi[c + 1]), nodes(hi[c])))
    else:
        raise ValueError(f"unexpected LLP26 element type {kind!r} (expected quad44 or tri10)")
    return tris


@lru_cache(maxsize=1)
def pelvis_topology() -> np.ndarray:
    """(3888, 3) int64 triangles over the 1946 pelvis nodes, outward oriented (read-only).

    Built from the atlas ``.mesh`` (cubic Lagrange elements and their connectivity)
    and ``.ens`` (``custom_map``: point id -> node) exactly as the data README says:
    element points are numbered in sorted (element, point) order with connected
    points sharing an id, mapped to nodes by ``custom_map``; each bicubic ``quad44``
    (4x4 nodes) is split into 18 triangles and each cubic ``tri10`` into 9.  The
    winding is flipped, if needed, so that the mean pelvis has positive signed volume
    (counter-clockwise seen from outside, normals pointing out).
    """
    mesh = json.loads(data_file(MESH_FILE).read_text())
    cmap = {int(k): int(v) for k, v in json.loads(data_file(ENS_FILE).read_text())["custom_map"].items()}
    ids = _element_point_ids(mesh["connectivity"])
    faces = []
    for e, desc in sorted(mesh["elements"].items(), key=lambda kv: int(kv[0])):
        faces += _element_triangles(desc.split()[-1], lambda p, e=e: cmap[ids[f"{e}_{p}"]])
    faces = np.asarray(faces, np.int64)
    n_nodes = len(np.unique(faces))
    if faces.shape != (N_FACES, 3) or n_nodes != N_PELVIS:
        raise ValueError(f"LLP26 triangulation gave {len(faces)} triangles over {n_nodes} nodes, "
                         f"expected {N_FACES} over {N_PELVIS}")
    if signed_volume(pelvis_mean_vertices(), faces) < 0:
        faces = faces[:, ::-1].copy()
    faces.setflags(write=False)
    return faces


def volume_centroid(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(3,) centre of volume (mm, the vertices' frame) of the solid a closed, outward mesh encloses."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    vol = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])) / 6.0  # tetrahedra with the origin
    return (vol[:, None] * v.sum(1) / 4.0).sum(0) / vol.sum()


def pelvis_bodies(faces: np.ndarray | None = None) -> np.ndarray:
    """(1946,) int label (0, 1, 2) of the connected body (hip bone or sacrum) of each pelvis node."""
    return vertex_components(pelvis_topology() if faces is None else faces, N_PELVIS)


# --------------------------------------------------------------------------- anatomical frame
def _split_bodies(v: np.ndarray, body: np.ndarray, femur: np.ndarray) -> dict:
    """Which body is the sacrum and which hip bone is left, from anatomy alone (any frame).

    * The two hip bones share one mirrored element layout, so they have the same
      node count; the sacrum is the body with a different count.
    * LLP26 is a LEFT lower-limb model: its femur articulates with the left hip
      bone, so the hip bone nearer the femur is the left one.
    """
    counts = np.bincount(body)
    if len(counts) != 3:
        raise RuntimeError(f"LLP26: expected 3 pelvis bodies, found {len(counts)}")
    sacrum = [b for b in range(3) if np.sum(counts == counts[b]) == 1]
    if len(sacrum) != 1:
        raise RuntimeError(f"LLP26: cannot tell the sacrum from the hip bones (node counts {counts.tolist()})")
    hips = [b for b in range(3) if b != sacrum[0]]
    gap = [np.min(np.linalg.norm(v[body == b][:, None] - femur[None, ::4], axis=2)) for b in hips]
    left, right = (hips[0], hips[1]) if gap[0] < gap[1] else (hips[1], hips[0])
    return {"sacrum": sacrum[0], "left": left, "right": right, "femur_gap_mm": (min(gap), max(gap))}


def _hip_landmarks(v: np.ndarray) -> dict:
    """Landmarks of one hip bone's vertices ``v`` given in a RAS-like frame (mm).

    ASIS: the most anterior vertex above the bone's centroid; pubic tubercle: the
    most anterior below it; iliac crest: the highest vertex; ischial tuberosity:
    the lowest; PSIS: the most posterior vertex above the centroid.
    """
    up, low = v[v[:, 2] > v[:, 2].mean()], v[v[:, 2] <= v[:, 2].mean()]
    return {"asis": up[np.argmax(up[:, 1])], "pubic_tubercle": low[np.argmax(low[:, 1])],
            "iliac_crest": v[np.argmax(v[:, 2])], "ischial_tuberosity": v[np.argmin(v[:, 2])],
            "psis": up[np.argmin(up[:, 1])]}


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a)


def _app_rotation(v: np.ndarray, labels: dict, body: np.ndarray, rot: np.ndarray, iterations: int = 4):
    """Refine a rough RAS rotation (rows R, A, S) to the anterior pelvic plane (APP).

    The APP passes through both ASIS and the midpoint of the pubic tubercles.  New
    +x runs from the left to the right ASIS, +y is the APP normal pointing
    anterior, +z = x cross y.  Landmarks depend on the frame, so this repeats.
    """
    for _ in range(iterations):
        w = v @ rot.T
        lm = {side: _hip_landmarks(w[body == labels[side]]) for side in ("left", "right")}
        x = _unit(lm["right"]["asis"] - lm["left"]["asis"])
        up = (lm["right"]["asis"] + lm["left"]["asis"]) / 2 - (
            lm["right"]["pubic_tubercle"] + lm["left"]["pubic_tubercle"]) / 2
        y = _unit(np.cross(up, x))  # (up x right) points anterior in a right-handed RAS frame
        z = np.cross(x, y)
        rot = np.stack([x, y, z]) @ rot  # compose: rows are in the model frame again
    return rot


@lru_cache(maxsize=1)
def pelvis_ras_transform() -> np.ndarray:
    """(4, 4) rigid transform, model frame -> anatomical RAS+ mm, of the LLP26 pelvis (read-only).

    ``p_ras = T[:3, :3] @ p_model + T[:3, 3]``.  The rotation is proper (det +1): no
    mirroring.  The origin is the centre of volume of the mean pelvis (its bone).

    How the axes are decided (from anatomy only; ``python -m engine.phantoms.llp26``
    prints the checks):

    1. Right-left: the left hip bone is the one the model's LEFT femur articulates
       with (2 mm away at the hip joint, the other 76 mm); +x points from the left to
       the right hip bone's centroid.
    2. Superior: the thigh hangs below the pelvis; +z is the pelvis centroid minus
       the femur centroid, made orthogonal to x.
    3. Anterior: y = z cross x (a right-handed frame, so no mirroring).
    4. Refinement to the anterior pelvic plane (APP, both ASIS and the pubic
       tubercles; the reference plane of hip surgery and of a supine pelvis with
       neutral tilt): x through the ASIS, y normal to the APP.  It turns the rough
       frame by 7.7 degrees (4 iterations; the fourth changes it by 1e-6 degrees).

    Independent checks (not used to build the frame; asserted in the tests), RAS mm
    of the mean pelvis: the sacrum's centroid (0, -29, 23) is behind the pubic
    tubercles (+-15, 79, -69) and the ASIS (+-117, 79, 18), which are 137 mm in
    front of the PSIS (+-49, -59, 34); the iliac crests (+-90, -11, 87) are 205 mm
    above the ischial tuberosities (+-44, -1, -118); the patella is 35 mm in front
    of the distal femur; and the left and right landmarks mirror each other across
    x = 0 to within 3 mm, as a correct left-right axis makes them.  The rotation is
    10.7 degrees from a DICOM LPS -> RAS flip ``diag(-1, -1, 1)``: the source frame is
    most likely a CT's LPS patient frame (x to the patient's left, y posterior,
    z superior: table positions near 1200 mm), with the pelvis tilted a little in it.
    """
    x = _nodes(load_llp26_model()["mean"])
    v, femur = x[:N_PELVIS], x[FEMUR]
    body = pelvis_bodies()
    labels = _split_bodies(v, body, femur)  # sacrum by node count; left hip bone touches the (left) femur
    right = _unit(v[body == labels["right"]].mean(0) - v[body == labels["left"]].mean(0))
    sup = v.mean(0) - femur.mean(0)  # the thigh is below the pelvis
    sup = _unit(sup - (sup @ right) * right)
    ant = np.cross(sup, right)  # right-handed: S x R = A.  Not from the sacrum, so "sacrum posterior" is a check
    rot = _app_rotation(v, labels, body, np.stack([right, ant, sup]))  # level the ASIS, APP vertical
    if abs(np.linalg.det(rot) - 1.0) > 1e-9:
        raise RuntimeError("LLP26 orientation: the derived frame is not a proper rotation")
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = -rot @ volume_centroid(v, pelvis_topology())
    t.setflags(write=False)
    return t


def pelvis_to_ras(vertices: np.ndarray) -> np.ndarray:
    """Model-frame vertices (n, 3) mm -> anatomical RAS+ mm (mean pelvis centred on the origin)."""
    t = pelvis_ras_transform()
    return np.asarray(vertices, np.float64) @ t[:3, :3].T + t[:3, 3]


def pelvis_landmarks(vertices_ras: np.ndarray | None = None) -> dict:
    """Named landmarks (3,) in RAS+ mm of a pelvis given in RAS (default: the mean pelvis).

    Keys ``"<landmark>_<side>"`` for ``asis``, ``pubic_tubercle``, ``iliac_crest``,
    ``ischial_tuberosity``, ``psis`` on the ``left`` and ``right`` hip bones, plus
    ``sacrum_centroid``, ``left_hip_centroid``, ``right_hip_centroid`` (vertex means).
    Landmarks are extreme vertices (see :func:`_hip_landmarks`), so they are exact
    only to the 8.5 mm node spacing.
    """
    v = pelvis_to_ras(pelvis_mean_vertices()) if vertices_ras is None else np.asarray(vertices_ras, np.float64)
    body = pelvis_bodies()
    labels = _split_bodies(pelvis_mean_vertices(), body, _nodes(load_llp26_model()["mean"])[FEMUR])
    out = {}
    for side in ("left", "right"):
        for k, p in _hip_landmarks(v[body == labels[side]]).items():
            out[f"{k}_{side}"] = p
        out[f"{side}_hip_centroid"] = v[body == labels[side]].mean(0)
    out["sacrum_centroid"] = v[body == labels["sacrum"]].mean(0)
    return out


def orientation_report() -> str:
    """Text with the landmark checks behind :func:`pelvis_ras_transform` (RAS mm)."""
    t = pelvis_ras_transform()
    x = pelvis_to_ras(_nodes(load_llp26_model()["mean"]))
    femur, patella = x[FEMUR], x[PATELLA]
    v = pelvis_mean_vertices()
    labels = _split_bodies(v, pelvis_bodies(), _nodes(load_llp26_model()["mean"])[FEMUR])
    lm = pelvis_landmarks()
    lines = ["rotation (rows R, A, S in model coordinates):", np.array2string(t[:3, :3], precision=3),
             f"det {np.linalg.det(t[:3, :3]):+.6f}; angle to the LPS->RAS flip diag(-1,-1,1): "
             f"{np.degrees(rotation_angle(np.diag([-1, -1, 1.0]) @ t[:3, :3].T)):.1f} deg",
             "femur gap to left / right hip bone: {:.1f} / {:.1f} mm".format(*labels["femur_gap_mm"]),
             "landmarks (RAS mm):"]
    lines += [f"  {k:26s} {np.array2string(p, precision=1, suppress_small=True)}" for k, p in lm.items()]
    knee = femur[np.argsort(femur[:, 2])[:60]].mean(0)  # distal femur (condyles)
    lines += [f"  {'patella_centroid':26s} {np.array2string(patella.mean(0), precision=1)}",
              f"  {'distal_femur':26s} {np.array2string(knee, precision=1)}",
              f"  {'femur_centroid':26s} {np.array2string(femur.mean(0), precision=1)}"]
    return "\n".join(lines)


# earlier names, still used by tests/test_views.py
mean_pelvis = pelvis_mean_vertices
to_ras = pelvis_to_ras

if __name__ == "__main__":
    print(orientation_report())
