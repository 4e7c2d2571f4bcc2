"""The LLP26 pelvis shape model (Zhang et al., J Biomech 2016; MPL-2.0): loading and triangulation.

The model ships in the PyPI package ``musculoskeletal-models==0.2.4`` (a project
dependency); ``../shared/data/llp26_pelvis_ssm`` is used when the package is
absent.  Its ``.pc`` files are Python pickles: they are read with an unpickler that
admits only what NumPy arrays need, because a pickle can run arbitrary code.

Frames: the model's coordinates are in mm in the frame of its source data (not an
anatomical frame); :func:`ras_from_model` gives the rigid transform to RAS+.
"""
from __future__ import annotations

import io
import json
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

N_NODES = 3225  # whole lower-limb model
N_PELVIS = 1946  # nodes 0..1945 are the pelvis (two hip bones + sacrum)
_SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "llp26_pelvis_ssm"

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a shape-model pickle "
                                         "(only NumPy arrays are allowed)")
        return super().find_class(module, name)


def safe_load_pickle(data: bytes):
    """Unpickle bytes that may hold only NumPy arrays, dicts, lists and scalars."""
    return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def data_file(relative: str) -> Path:
    """Path of an LLP26 file ("shape_models/..." or "atlas_meshes/...")."""
    try:
        from musculoskeletal.models import get_model_path

        p = Path(get_model_path(relative))
        if p.is_file():
            return p
    except ImportError:
        pass
    p = _SHARED / relative
    if p.is_file():
        return p
    raise FileNotFoundError(f"LLP26 file {relative} not found: install musculoskeletal-models==0.2.4 "
                            f"or provide {_SHARED}")


@lru_cache(maxsize=2)
def load_model(side: str = "left") -> dict:
    """The PCA model: ``mean`` (9675,), ``modes`` (9675, 26), ``weights`` (26,) mm^2,
    ``projectedWeights`` (26 modes, 26 subjects)."""
    name = {"left": "LLP26_rigid.pc", "right": "LLP26_right_mirrored_from_left_rigid.pc"}[side]
    d = safe_load_pickle(data_file(f"shape_models/{name}").read_bytes())
    return {k: np.asarray(v) for k, v in d.items() if v is not None}


def _nodes(vec: np.ndarray) -> np.ndarray:
    return np.asarray(vec, np.float64).reshape(3, N_NODES).T[:N_PELVIS].copy()


def mean_pelvis() -> np.ndarray:
    """(1946, 3) mean pelvis vertices, model frame, mm."""
    return _nodes(load_model()["mean"])


def subject_pelvis(i: int) -> np.ndarray:
    """(1946, 3) vertices of training subject ``i`` (0..25), regenerated exactly from its scores."""
    m = load_model()
    if not 0 <= i < m["projectedWeights"].shape[1]:
        raise ValueError(f"subject index must be in 0..{m['projectedWeights'].shape[1] - 1}, got {i}")
    return _nodes(m["mean"] + m["modes"] @ m["projectedWeights"][:, i])


@lru_cache(maxsize=1)
def pelvis_faces() -> np.ndarray:
    """(3888, 3) int triangles over the 1946 pelvis nodes, outward (counter-clockwise seen from outside).

    Built from the cubic Lagrange elements as the data README describes: element points
    are merged through the mesh connectivity, numbered in sorted (element, point) order,
    mapped to nodes by the ensemble's ``custom_map``, and each bicubic quad (4x4 nodes)
    split into 18 triangles and each cubic triangle (10 nodes) into 9.
    """
    mesh = json.loads(data_file("atlas_meshes/pelvis_combined_cubic_flat.mesh").read_text())
    ens = json.loads(data_file("atlas_meshes/pelvis_combined_cubic_flat.ens").read_text())
    conn = mesh["connectivity"]
    keys = sorted(conn, key=lambda k: tuple(int(x) for x in k.split("_")))
    parent = {k: k for k in keys}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k in keys:
        for other in conn[k].split():
            a, b = find(k), find(other)
            if a != b:
                parent[b] = a
    ids, next_id = {}, 0
    for k in keys:
        r = find(k)
        if r not in ids:
            ids[r] = next_id
            next_id += 1
    cmap = {int(k): int(v) for k, v in ens["custom_map"].items()}
    node = {k: cmap[ids[find(k)]] for k in keys}
    faces = []
    for e, desc in sorted(mesh["elements"].items(), key=lambda kv: int(kv[0])):
        kind = desc.split()[1]
        pt = lambda p: node[f"{e}_{p}"]  # noqa: E731
        if kind == "quad44":
            for r in range(3):
                for c in range(3):
                    a, b, d, f = pt(4 * r + c), pt(4 * r + c + 1), pt(4 * (r + 1) + c), pt(4 * (r + 1) + c + 1)
                    faces += [(a, b, f), (a, f, d)]
        elif kind == "tri10":
            rows = [[0, 1, 2, 3], [4, 5, 6], [7, 8], [9]]
            for r in range(3):
                lo, hi = rows[r], rows[r + 1]
                for c in range(len(hi)):
                    faces.append((pt(lo[c]), pt(lo[c + 1]), pt(hi[c])))
                    if c + 1 < len(hi):
                        faces.append((pt(lo[c + 1]), pt(hi[c + 1]), pt(hi[c])))
        else:
            raise ValueError(f"unexpected element type {kind!r} in the LLP26 mesh")
    faces = np.asarray(faces, np.int64)
    if signed_volume(mean_pelvis(), faces) < 0:
        faces = faces[:, ::-1].copy()
    faces.setflags(write=False)
    return faces


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume (mm^3) enclosed by a triangle mesh; positive when outward oriented."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def _whole_limb_mean() -> np.ndarray:
    return np.asarray(load_model()["mean"], np.float64).reshape(3, N_NODES).T


def pelvis_bodies(faces: np.ndarray | None = None) -> np.ndarray:
    """(1946,) label of the connected body of each pelvis node (3 bodies: two hip bones, sacrum)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = pelvis_faces() if faces is None else faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(N_PELVIS, N_PELVIS))
    return connected_components(adj, directed=False)[1]


def ras_from_model() -> np.ndarray:
    """(4, 4) rigid transform from the model frame to RAS+ mm, mean pelvis centroid at the origin.

    Derived from anatomy, not from assumptions about the source frame:

    * right-left: between the centroids of the two hip bones (the two bodies other than
      the sacrum, which is the body nearest the mid-point); the hip bone next to the
      femoral head of this LEFT-limb model is the left one;
    * a rough anterior from the distal femur to the patella (the kneecap is in front of
      the knee), orthogonal to right-left;
    * then the anterior pelvic plane (APP), the usual pelvic reference: the most
      anterior point of the upper half (anterior superior iliac spines) and of the
      lower half (pubic symphysis region) span the superior axis; anterior is normal
      to it in the sagittal plane.  A supine patient's APP is roughly coronal.
    """
    x = _whole_limb_mean()
    pelvis, femur, patella = x[:N_PELVIS], x[N_PELVIS:2580], x[2580:2654]
    body = pelvis_bodies()
    cents = np.array([pelvis[body == b].mean(0) for b in range(body.max() + 1)])
    if len(cents) != 3:
        raise RuntimeError(f"expected 3 pelvis bodies, found {len(cents)}")
    sacrum = int(np.argmin(np.linalg.norm(cents - cents.mean(0), axis=1)))
    hips = [b for b in range(3) if b != sacrum]
    knee_dir = femur.mean(0) - pelvis.mean(0)  # points down the (left) femur
    femur_head = femur[np.argsort(femur @ knee_dir)[:50]].mean(0)  # most proximal femur nodes
    left = min(hips, key=lambda b: np.linalg.norm(cents[b] - femur_head))
    right_b = hips[0] if hips[1] == left else hips[1]
    right = cents[right_b] - cents[left]
    right /= np.linalg.norm(right)
    knee = femur[np.linalg.norm(femur - patella.mean(0), axis=1) < 60.0]
    ant = patella.mean(0) - knee.mean(0)
    ant -= (ant @ right) * right
    ant /= np.linalg.norm(ant)
    sup = np.cross(right, ant)
    hs = pelvis @ sup
    upper, lower = pelvis[hs > np.median(hs)], pelvis[hs <= np.median(hs)]
    asis, pubis = upper[np.argmax(upper @ ant)], lower[np.argmax(lower @ ant)]
    sup = asis - pubis
    sup -= (sup @ right) * right
    sup /= np.linalg.norm(sup)
    ant = np.cross(sup, right)
    rot = np.stack([right, ant, sup])  # rows: R, A, S axes in model coordinates; det +1
    if np.linalg.det(rot) < 0.999:
        raise RuntimeError("LLP26 orientation: the derived frame is not a proper rotation")
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = -rot @ pelvis.mean(0)
    return out


def to_ras(vertices: np.ndarray) -> np.ndarray:
    """Model-frame vertices (mm) -> RAS+ mm with the mean pelvis centroid at the origin."""
    t = ras_from_model()
    return np.asarray(vertices, np.float64) @ t[:3, :3].T + t[:3, 3]
