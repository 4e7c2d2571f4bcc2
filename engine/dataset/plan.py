"""A dataset's sampling plan: a small YAML file, validated before any rendering, and its deterministic samples.

Layout of a plan (paths relative to the plan file; angles in degrees, distances in mm, dose in detected photons
per pixel of the open beam)::

    seed: 0                      # global seed: the same plan and seed give the same files
    images_per_ct: 8
    shard_size: 4                # images per shard (the unit of work, of resuming and of the loader)
    detector: {rows: 128, cols: 128, pixel_size: 3.0}   # or pixel_size: [row pitch, column pitch]
    carm:
      primary: {min: -30, max: 30}          # LAO(+)/RAO(-); uniform, or {dist: normal, mean: .., std: ..}
      secondary: {min: -15, max: 15}        # CRA(+)/CAU(-)
      sid: {min: 700, max: 800}
      sdd: {min: 1100, max: 1200}
      isocenter_jitter: 10                  # uniform in a cube of +- this about the CT's centre
    physics:
      kvp: {min: 70, max: 110}              # or preset: fluoro90 (fluoro60 / fluoro90 / fluoro120)
      bins: 16
      scatter: true
      noise: true
      photons: {min: 5000, max: 50000, dist: loguniform}
      output: line_integral                 # or intensity
    inputs:
      - ct: ../pelvis_phantom.nii.gz
        structures: {bone: {hu_min: 250}}   # label map from HU ranges; or
        # labels: labels.nii.gz             # a label map on the CT's grid, with
        # label_names: labels.csv           # id -> name (columns ..., structure, id), and
        # structures: [vertebrae_T1, ...]   # the labels to project (default all; at most 32)
        landmarks: pelvis                   # the LLP26 mean pelvis' named landmarks (the phantom's bone), or
                                            # "centroids" of the structures, or a JSON file {name: [x, y, z]}
        label_downsample: 1                 # label volumes at 1/n resolution (memory)
    meshes:
      - rod: {radius: 3.65, length: 60, start: [-75, -10, 20], direction: [1, 0.1, -0.15]}   # or file: x.stl
        material: titanium
        pose: {rotation: 5, translation: 5}  # a random rigid move per image (degrees about, mm along, random axes)

:func:`load_plan` raises :class:`engine.errors.InputError` naming the key and the problem (unknown key,
impossible range, missing file, unknown material or preset).  :func:`sample` draws image ``i`` of CT ``c`` from
``SeedSequence([seed, c, i])``: independent of the order and the process that renders it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

TOP = {"seed", "images_per_ct", "shard_size", "detector", "carm", "physics", "inputs", "meshes", "png"}
DETECTOR = {"rows", "cols", "pixel_size"}
CARM = {"primary", "secondary", "sid", "sdd", "isocenter_jitter"}
PHYSICS = {"kvp", "preset", "bins", "scatter", "noise", "photons", "output"}
INPUT = {"ct", "labels", "label_names", "structures", "landmarks", "label_downsample"}
MESH = {"file", "rod", "material", "pose"}
DIST = {"min", "max", "dist", "mean", "std"}
MAX_STRUCTURES = 32


@dataclass(frozen=True)
class Range:
    """A sampled number: uniform in [min, max], ``loguniform``, or ``normal`` (mean, std); a constant when
    min == max."""

    lo: float
    hi: float
    dist: str = "uniform"
    mean: float = 0.0
    std: float = 0.0

    def draw(self, rng: np.random.Generator) -> float:
        if self.dist == "normal":
            return float(rng.normal(self.mean, self.std))
        if self.dist == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.lo), np.log(self.hi))))
        return float(rng.uniform(self.lo, self.hi))


@dataclass(frozen=True)
class InputSpec:
    ct: Path
    labels: Path | None = None
    label_names: Path | None = None
    structures: object = None  # None, a list of names, or {name: {hu_min, hu_max}}
    landmarks: object = None  # None, "pelvis", "centroids" or a Path
    label_downsample: int = 1


@dataclass(frozen=True)
class MeshSpec:
    material: str
    file: Path | None = None
    rod: dict | None = None
    rotation_deg: float = 0.0
    translation_mm: float = 0.0


@dataclass(frozen=True)
class Plan:
    """A validated plan (see the module doc)."""

    seed: int
    images_per_ct: int
    shard_size: int
    rows: int
    cols: int
    pixel_size: float | tuple  # mm: one pitch, or (row pitch, column pitch)
    primary: Range
    secondary: Range
    sid: Range
    sdd: Range
    isocenter_jitter: float
    kvp: Range | None
    preset: str | None
    bins: int
    scatter: bool
    noise: bool
    photons: Range
    output: str
    inputs: tuple
    meshes: tuple = ()
    source: dict = field(default_factory=dict, compare=False)

    @property
    def n_images(self) -> int:
        return self.images_per_ct * len(self.inputs)

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)


@dataclass(frozen=True)
class Sample:
    """The sampled parameters of one image (angles deg, distances mm, kVp, photons)."""

    index: int
    ct: int
    primary: float
    secondary: float
    sid: float
    sdd: float
    isocenter_offset: tuple
    kvp: float | None
    photons: float | None
    noise_seed: int
    mesh_moves: tuple  # per mesh: (rotation vector rad (3), translation mm (3))

    def to_dict(self) -> dict:
        return {"index": self.index, "ct": self.ct, "primary_deg": self.primary, "secondary_deg": self.secondary,
                "sid_mm": self.sid, "sdd_mm": self.sdd, "isocenter_offset_mm": list(self.isocenter_offset),
                "kvp": self.kvp, "photons": self.photons, "noise_seed": self.noise_seed,
                "mesh_moves": [{"rotation_vector_rad": list(r), "translation_mm": list(t)} for r, t in self.mesh_moves]}


def _err(key: str, problem: str) -> InputError:
    return InputError(f"plan: {key}: {problem}")


def _keys(d, allowed: set, where: str) -> dict:
    if not isinstance(d, dict):
        raise _err(where, f"expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise _err(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return d


def _number(v, key: str, *, positive=False, integer=False, minimum=None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise _err(key, f"expected a number, got {v!r}")
    if integer and int(v) != v:
        raise _err(key, f"expected a whole number, got {v!r}")
    if positive and not v > 0:
        raise _err(key, f"must be positive, got {v!r}")
    if minimum is not None and v < minimum:
        raise _err(key, f"must be >= {minimum}, got {v!r}")
    return int(v) if integer else float(v)


def _pitch(v, key: str):
    """A detector pixel pitch: one number (square pixels) or ``[row pitch, column pitch]`` (mm)."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise _err(key, f"expected one pitch or [row pitch, column pitch] (mm), got {v!r}")
        return tuple(_number(x, key, positive=True) for x in v)
    return _number(v, key, positive=True)


def _range(v, key: str, *, positive=False, lo_limit=None, hi_limit=None) -> Range:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = {"min": v, "max": v}
    d = _keys(v, DIST, key)
    dist = d.get("dist", "uniform")
    if dist not in ("uniform", "loguniform", "normal"):
        raise _err(f"{key}.dist", f"unknown distribution {dist!r} (uniform, loguniform, normal)")
    if dist == "normal":
        r = Range(-np.inf, np.inf, "normal", _number(d.get("mean"), f"{key}.mean"),
                  _number(d.get("std"), f"{key}.std", minimum=0))
        return r
    if "min" not in d or "max" not in d:
        raise _err(key, "needs min and max")
    lo, hi = _number(d["min"], f"{key}.min"), _number(d["max"], f"{key}.max")
    if lo > hi:
        raise _err(key, f"impossible range: min {lo:g} > max {hi:g}")
    if (positive or dist == "loguniform") and lo <= 0:
        raise _err(key, f"must be positive, got min {lo:g}")
    if lo_limit is not None and lo < lo_limit or hi_limit is not None and hi > hi_limit:
        raise _err(key, f"outside [{lo_limit}, {hi_limit}]: [{lo:g}, {hi:g}]")
    return Range(lo, hi, dist)


def _file(base: Path, v, key: str) -> Path:
    if not isinstance(v, str) or not v:
        raise _err(key, f"expected a file path, got {v!r}")
    p = (base / v).resolve() if not Path(v).is_absolute() else Path(v)
    if not p.exists():
        raise _err(key, f"file not found: {p}")
    return p


def load_plan(path) -> Plan:
    """Read and validate a plan YAML file (see the module doc)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"plan file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a readable YAML plan ({e})") from None
    return parse_plan(raw, base=p.parent)


def parse_plan(raw: dict, base=".") -> Plan:
    """Validate a plan given as a mapping (paths relative to ``base``)."""
    from ..physics import get_material
    from ..physics.spectrum import PRESETS

    base = Path(base)
    d = _keys(raw, TOP, "plan")
    det = _keys(d.get("detector", {}), DETECTOR, "detector")
    rows = _number(det.get("rows", 128), "detector.rows", positive=True, integer=True)
    cols = _number(det.get("cols", 128), "detector.cols", positive=True, integer=True)
    pixel = _pitch(det.get("pixel_size", 3.0), "detector.pixel_size")
    carm = _keys(d.get("carm", {}), CARM, "carm")
    primary = _range(carm.get("primary", 0), "carm.primary", lo_limit=-180, hi_limit=180)
    secondary = _range(carm.get("secondary", 0), "carm.secondary", lo_limit=-90, hi_limit=90)
    sid = _range(carm.get("sid", 750), "carm.sid", positive=True)
    sdd = _range(carm.get("sdd", 1150), "carm.sdd", positive=True)
    if sdd.dist == "uniform" and sid.dist == "uniform" and sdd.lo <= sid.hi:
        raise _err("carm.sdd", f"must exceed carm.sid everywhere (sdd min {sdd.lo:g} <= sid max {sid.hi:g})")
    jitter = _number(carm.get("isocenter_jitter", 0), "carm.isocenter_jitter", minimum=0)
    ph = _keys(d.get("physics", {}), PHYSICS, "physics")
    preset = ph.get("preset")
    if preset is not None and preset not in PRESETS:
        raise _err("physics.preset", f"unknown preset {preset!r}; one of {sorted(PRESETS)}")
    if preset is not None and "kvp" in ph:
        raise _err("physics", "give kvp or preset, not both")
    kvp = None if preset is not None else _range(ph.get("kvp", 90), "physics.kvp", lo_limit=30, hi_limit=150)
    bins = _number(ph.get("bins", 16), "physics.bins", positive=True, integer=True)
    for k in ("scatter", "noise"):
        if not isinstance(ph.get(k, False), bool):
            raise _err(f"physics.{k}", f"expected true or false, got {ph[k]!r}")
    photons = _range(ph.get("photons", 2e4), "physics.photons", positive=True)
    output = ph.get("output", "line_integral")
    if output not in ("line_integral", "intensity"):
        raise _err("physics.output", f"expected line_integral or intensity, got {output!r}")
    ins = d.get("inputs")
    if not isinstance(ins, list) or not ins:
        raise _err("inputs", "needs a list of at least one CT")
    inputs = tuple(_input(base, x, f"inputs[{i}]") for i, x in enumerate(ins))
    meshes = []
    for i, m in enumerate(d.get("meshes", []) or []):
        key = f"meshes[{i}]"
        m = _keys(m, MESH, key)
        material = m.get("material", "titanium")
        try:
            get_material(material)
        except (KeyError, ValueError) as e:
            raise _err(f"{key}.material", f"unknown material {material!r} ({e})") from None
        if ("file" in m) == ("rod" in m):
            raise _err(key, "give either file or rod")
        pose = _keys(m.get("pose", {}), {"rotation", "translation"}, f"{key}.pose")
        rod = None
        if "rod" in m:
            rod = _keys(m["rod"], {"radius", "length", "start", "direction"}, f"{key}.rod")
            _number(rod.get("radius"), f"{key}.rod.radius", positive=True)
            _number(rod.get("length"), f"{key}.rod.length", positive=True)
            for k in ("start", "direction"):
                v = rod.get(k)
                if not (isinstance(v, list) and len(v) == 3):
                    raise _err(f"{key}.rod.{k}", f"expected [x, y, z] in mm, got {v!r}")
                [_number(x, f"{key}.rod.{k}") for x in v]
        meshes.append(MeshSpec(material=material, file=_file(base, m["file"], f"{key}.file") if "file" in m else None,
                               rod=rod, rotation_deg=_number(pose.get("rotation", 0), f"{key}.pose.rotation", minimum=0),
                               translation_mm=_number(pose.get("translation", 0), f"{key}.pose.translation",
                                                      minimum=0)))
    png = d.get("png")
    if png is not None:
        raise _err("png", "no options yet (16-bit PNGs are windowed per image; the window is in the metadata)")
    return Plan(seed=_number(d.get("seed", 0), "seed", integer=True, minimum=0),
                images_per_ct=_number(d.get("images_per_ct", 8), "images_per_ct", positive=True, integer=True),
                shard_size=_number(d.get("shard_size", 8), "shard_size", positive=True, integer=True),
                rows=rows, cols=cols, pixel_size=pixel, primary=primary, secondary=secondary, sid=sid, sdd=sdd,
                isocenter_jitter=jitter, kvp=kvp, preset=preset, bins=bins, scatter=ph.get("scatter", False),
                noise=ph.get("noise", False), photons=photons, output=output, inputs=inputs, meshes=tuple(meshes),
                source=json.loads(json.dumps(raw, default=str)))


def _input(base: Path, x, key: str) -> InputSpec:
    x = _keys(x, INPUT, key)
    if "ct" not in x:
        raise _err(key, "needs ct (a NIfTI file or a DICOM folder)")
    ct = _file(base, x["ct"], f"{key}.ct")
    labels = _file(base, x["labels"], f"{key}.labels") if "labels" in x else None
    names = _file(base, x["label_names"], f"{key}.label_names") if "label_names" in x else None
    structures = x.get("structures")
    if isinstance(structures, dict):
        if labels is not None:
            raise _err(f"{key}.structures", "HU ranges ({name: {hu_min, hu_max}}) are for CTs without labels")
        for name, r in structures.items():
            r = _keys(r, {"hu_min", "hu_max"}, f"{key}.structures.{name}")
            lo, hi = _number(r.get("hu_min", -1e9), f"{key}.structures.{name}.hu_min"), \
                _number(r.get("hu_max", 1e9), f"{key}.structures.{name}.hu_max")
            if lo >= hi:
                raise _err(f"{key}.structures.{name}", f"impossible HU range [{lo:g}, {hi:g}]")
    elif structures is not None:
        if labels is None:
            raise _err(f"{key}.structures", "a list of label names needs labels and label_names")
        if not (isinstance(structures, list) and all(isinstance(s, str) for s in structures)):
            raise _err(f"{key}.structures", "expected a list of structure names")
    if labels is not None and names is None:
        raise _err(key, "labels need label_names (a CSV with columns ..., structure, id)")
    if isinstance(structures, (list, dict)) and len(structures) > MAX_STRUCTURES:
        raise _err(f"{key}.structures", f"at most {MAX_STRUCTURES} structures per CT, got {len(structures)}")
    lm = x.get("landmarks")
    if lm not in (None, "pelvis", "centroids"):
        lm = _file(base, lm, f"{key}.landmarks")
    if lm == "centroids" and structures is None and labels is None:
        raise _err(f"{key}.landmarks", "centroids need structures")
    ds = _number(x.get("label_downsample", 1), f"{key}.label_downsample", positive=True, integer=True)
    return InputSpec(ct=ct, labels=labels, label_names=names, structures=structures, landmarks=lm,
                     label_downsample=ds)


def sample(plan: Plan, index: int) -> Sample:
    """Image ``index`` (0 .. n_images - 1; CT ``index // images_per_ct``) of the plan, from
    ``SeedSequence([seed, index])``."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, int(index)]))
    ct = index // plan.images_per_ct
    primary, secondary = plan.primary.draw(rng), plan.secondary.draw(rng)
    sid, sdd = plan.sid.draw(rng), plan.sdd.draw(rng)
    if sdd <= sid:
        sdd = sid + 100.0  # normal distributions may cross; keep the detector beyond the isocentre
    off = tuple(float(x) for x in rng.uniform(-plan.isocenter_jitter, plan.isocenter_jitter, 3))
    kvp = None if plan.kvp is None else plan.kvp.draw(rng)
    photons = plan.photons.draw(rng) if plan.noise else None
    noise_seed = int(rng.integers(0, 2**32))
    moves = []
    for m in plan.meshes:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(-m.rotation_deg, m.rotation_deg))
        t = rng.uniform(-m.translation_mm, m.translation_mm, 3)
        moves.append((tuple(float(a) for a in axis * angle), tuple(float(v) for v in t)))
    return Sample(index=int(index), ct=int(ct), primary=primary, secondary=secondary, sid=sid, sdd=sdd,
                  isocenter_offset=off, kvp=kvp, photons=photons, noise_seed=noise_seed, mesh_moves=tuple(moves))
