"""The statistical shape model: a mean shape, a triangle topology and linear modes of variation.

A shape is ``mean + sum_k c_k * std_k * modes_k`` with the coefficients ``c`` in
units of standard deviations (so the prior is ``c ~ N(0, I)``).  Vertices are
(V, 3) in mm in the *model frame* (the frame the population was aligned in; for
the shipped pelvis model, the anatomical RAS+ frame of the LLP26 mean pelvis).

``modes`` are orthonormal (as flattened (3V,) vectors) for a model built by
:func:`engine.ssm.build_model`; :meth:`ShapeModel.subdivided` keeps the same
shape distribution on a finer mesh (Loop subdivision is linear in the vertex
positions), where they are no longer orthonormal, so :meth:`project` solves a
least-squares problem rather than taking dot products.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..mesh.mesh import Mesh
from .procrustes import align

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class ShapeModel:
    """A linear statistical shape model (see module doc).

    Attributes
    ----------
    mean : (V, 3) float64, mm
    faces : (F, 3) int64, outward (counter-clockwise seen from outside)
    modes : (K, V, 3) float64, dimensionless directions
    std : (K,) float64, mm: the standard deviation of the population along each mode
    info : dict of str -> str/number, provenance (name, source, n_shapes, scaled, ...)
    """

    mean: np.ndarray = field(repr=False)
    faces: np.ndarray = field(repr=False)
    modes: np.ndarray = field(repr=False)
    std: np.ndarray = field(repr=False)
    info: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        mean = np.asarray(self.mean, np.float64)
        faces = np.asarray(self.faces, np.int64)
        modes = np.asarray(self.modes, np.float64)
        std = np.asarray(self.std, np.float64).reshape(-1)
        if mean.ndim != 2 or mean.shape[1] != 3:
            raise ValueError(f"mean must be (V, 3), got {mean.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= len(mean):
            raise ValueError("faces must be (F, 3) indices into the mean's vertices")
        if modes.ndim == 2 and modes.shape[0] == 0:
            modes = modes.reshape(0, *mean.shape)
        if modes.shape[1:] != mean.shape or len(std) != len(modes):
            raise ValueError(f"modes must be (K, V, 3) with K = len(std); got {modes.shape}, {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(modes)) and np.all(std >= 0)):
            raise ValueError("model contains NaN/inf or negative standard deviations")
        for name, v in (("mean", mean), ("faces", faces), ("modes", modes), ("std", std)):
            v.setflags(write=False)
            object.__setattr__(self, name, v)
        object.__setattr__(self, "info", dict(self.info))

    # ------------------------------------------------------------------ shapes
    @property
    def n_modes(self) -> int:
        return len(self.std)

    @property
    def n_vertices(self) -> int:
        return len(self.mean)

    @property
    def basis(self) -> np.ndarray:
        """(3V, K): column k is ``std_k * modes_k`` flattened (mm per unit coefficient)."""
        return (self.modes * self.std[:, None, None]).reshape(self.n_modes, self.mean.size).T

    def _coeffs(self, coeffs) -> np.ndarray:
        c = np.zeros(self.n_modes) if coeffs is None else np.asarray(coeffs, np.float64).reshape(-1)
        if len(c) > self.n_modes:
            raise ValueError(f"{len(c)} coefficients for a model of {self.n_modes} modes")
        if not np.all(np.isfinite(c)):
            raise ValueError("coefficients contain NaN or inf")
        return c

    def instance(self, coeffs=None) -> np.ndarray:
        """(V, 3) vertices (mm, model frame) for coefficients in standard deviations (missing ones are 0)."""
        c = self._coeffs(coeffs)
        k = len(c)
        return self.mean + np.tensordot(c * self.std[:k], self.modes[:k], axes=1)

    def mesh(self, coeffs=None, world_from_model=None) -> Mesh:
        """The instance as a :class:`Mesh`, optionally moved by a 4x4 (rigid or similarity) transform."""
        v = self.instance(coeffs)
        if world_from_model is not None:
            t = np.asarray(world_from_model, np.float64)
            v = v @ t[:3, :3].T + t[:3, 3]
        return Mesh(vertices=v, faces=self.faces)

    def sample(self, n: int, seed=None, *, n_modes: int | None = None, limit: float | None = None):
        """``n`` random shapes of the model's distribution.

        Parameters
        ----------
        n : int
        seed : int or numpy Generator
        n_modes : int, optional
            Use only the first modes (default all).
        limit : float, optional
            Clip each coefficient to [-limit, limit] standard deviations.

        Returns
        -------
        vertices : (n, V, 3) array, mm, model frame
        coeffs : (n, K) array, standard deviations
        """
        rng = np.random.default_rng(seed)
        k = self.n_modes if n_modes is None else int(n_modes)
        c = np.zeros((int(n), self.n_modes))
        c[:, :k] = rng.standard_normal((int(n), k))
        if limit is not None:
            c = np.clip(c, -limit, limit)
        return np.stack([self.instance(ci) for ci in c]), c

    def project(self, shape, *, n_modes: int | None = None, align_to_mean: bool = True, scale: bool = False):
        """Best coefficients (least squares, standard deviations) for a shape in correspondence with the model.

        Parameters
        ----------
        shape : Mesh or (V, 3) array, mm
        n_modes : int, optional
            Fit only the first modes; the others are 0.
        align_to_mean : bool
            First remove the pose (and with ``scale`` the size) by Procrustes
            alignment onto the mean, then fit; the alignment is refined once with
            the fitted shape.

        Returns
        -------
        coeffs : (K,) array
        transform : Similarity mapping ``shape`` into the model frame
        """
        v = np.asarray(shape.vertices if isinstance(shape, Mesh) else shape, np.float64)
        if v.shape != self.mean.shape:
            raise ValueError(f"shape has {v.shape} vertices, the model {self.mean.shape}: not in correspondence")
        k = self.n_modes if n_modes is None else int(n_modes)
        b = self.basis[:, :k]
        target = self.mean
        t = align(v, v)  # identity
        c = np.zeros(self.n_modes)
        for _ in range(3 if align_to_mean else 1):
            if align_to_mean:
                t = align(v, target, scale=scale)
            resid = (t.apply(v) - self.mean).reshape(-1)
            c[:k] = np.linalg.lstsq(b, resid, rcond=None)[0] if k else []
            target = self.instance(c)
        return c, t

    # ------------------------------------------------------------------ variants
    def truncated(self, n_modes: int) -> "ShapeModel":
        """The model with its first ``n_modes`` modes."""
        k = int(n_modes)
        return ShapeModel(self.mean, self.faces, self.modes[:k], self.std[:k], {**self.info, "n_modes": k})

    def subdivided(self, levels: int) -> "ShapeModel":
        """The same model on a Loop-subdivided mesh (``levels`` times), modes subdivided alike (exact: linear)."""
        from ..mesh.subdivide import subdivide

        if self.info.get("parts"):
            raise ValueError("a segment model's parts would lose their vertex ranges: subdivide the one-bone "
                             "model, then make the segment (engine.ssm.segment.segment_model)")
        mean, faces = subdivide(self.mean, self.faces, levels)
        modes = np.stack([subdivide(m, self.faces, levels)[0] for m in self.modes]) if self.n_modes else \
            np.zeros((0, *mean.shape))
        return ShapeModel(mean, faces, modes, self.std, {**self.info, "subdivisions":
                                                          int(self.info.get("subdivisions", 0)) + int(levels)})

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write one ``.npz`` (float32 geometry, float64 std) with a format version and the provenance."""
        import json

        p = Path(path)
        if p.suffix != ".npz":
            raise ValueError(f"{p}: a shape model is saved as .npz")
        np.savez_compressed(p, version=np.int64(FORMAT_VERSION), mean=self.mean.astype(np.float32),
                            faces=self.faces.astype(np.int32), modes=self.modes.astype(np.float32), std=self.std,
                            info=np.array(json.dumps(self.info)))
        return p

    @classmethod
    def load(cls, path) -> "ShapeModel":
        """Read a model written by :meth:`save`.

        Raises FileNotFoundError for a missing file and :class:`~engine.errors.InputError` naming the file for
        anything else: not a ``.npz`` archive, a damaged one, other contents, another format version.  Pickled
        objects are never loaded.
        """
        import json

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"shape model not found: {p}")
        d = _read_npz(p)
        missing = {"version", "mean", "faces", "modes", "std"} - set(d)
        if missing:
            raise InputError(f"{p}: not a shape model .npz (missing {sorted(missing)})")
        for key, kinds in (("version", "iu"), ("mean", "iuf"), ("faces", "iu"), ("modes", "iuf"), ("std", "iuf")):
            if d[key].dtype.kind not in kinds:
                raise InputError(f"{p}: not a shape model .npz ('{key}' holds {d[key].dtype} values)")
        if d["version"].shape != () or int(d["version"]) != FORMAT_VERSION:
            raise InputError(f"{p}: shape model format version {d['version'].tolist()}, this engine reads "
                             f"{FORMAT_VERSION}")
        try:
            info = json.loads(str(d["info"])) if "info" in d else {}
        except ValueError as e:
            raise InputError(f"{p}: the model's info is not JSON ({e})") from None
        if not isinstance(info, dict) or d.get("info", np.array("")).shape != ():
            raise InputError(f"{p}: the model's info is not a JSON object")
        if d["faces"].size == 0:
            raise InputError(f"{p}: the model has no faces")
        try:
            return cls(d["mean"].astype(np.float64), d["faces"].astype(np.int64), d["modes"].astype(np.float64),
                       d["std"].astype(np.float64), info)
        except ValueError as e:  # the constructor's checks: shapes, face indices, NaN/inf
            raise InputError(f"{p}: not a valid shape model ({e})") from None

    def __repr__(self) -> str:
        name = self.info.get("name", "ShapeModel")
        return f"ShapeModel({name!r}: {self.n_vertices} vertices, {len(self.faces)} faces, {self.n_modes} modes)"


def _read_npz(p: Path) -> dict:
    """The arrays of a ``.npz`` archive; InputError naming the file when it is not one or is damaged."""
    with open(p, "rb") as f:
        head = f.read(512)
    if head[:2] != b"PK":
        text = all(32 <= c < 127 or c in b"\t\r\n" for c in head)
        kind = ("an empty file" if not head else "a NumPy .npy array" if head.startswith(b"\x93NUMPY")
                else "a text file" if text else "no zip signature")
        raise InputError(f"{p}: not a shape model .npz (not a zip archive: {kind}); shape models are written by "
                         "ShapeModel.save")
    try:
        with np.load(p, allow_pickle=False) as z:  # never unpickle
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, zlib and numpy raise many types (BadZipFile, zlib.error, ValueError, ...)
        raise InputError(f"{p}: not a readable shape model .npz (damaged archive? {type(e).__name__}: {e})") \
            from None
