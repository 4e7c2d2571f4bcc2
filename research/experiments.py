"""The reconstruction experiments of the evaluation (tiers 1-3), shared by the benchmarks, the demo and the tests.

Research code: it uses the library (``engine``), which never imports it.  The settings of the X-ray tiers are
the library's own recipe, :meth:`engine.recon.ReconConfig.xray`.

- Tier 1, self-consistency: target = the mesh renderer's image of a model instance
  (known coefficients and pose); the model is the one that made it.
- Tier 2, held-out shapes: target = the mesh renderer's image of a real LLP26
  pelvis; the model is built from the other 25 subjects (leave one out).
- Tier 3b, no inverse crime: target = a simulated X-ray (CT projector,
  polychromatic spectrum, scatter, Poisson noise) of a CT phantom in which a
  held-out LLP26 pelvis is voxelised (1.5 mm cortex over cancellous bone) inside a
  soft-tissue body with bowel gas; the model is built from the other 25 subjects.
  The truth is the phantom's bone surface.  Semi-synthetic: no pelvis CT and no real
  fluoroscopy exist here.  The dose per view is set as a C-arm's automatic exposure
  control does (:func:`xray_targets`): a fixed number of quanta behind the patient.

Random initial poses: a rotation of uniform random axis and angle in [0, max_deg],
a translation of uniform random direction and length in [0, max_mm] (about the
model's centre), with the mean shape.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import engine
from engine import metrics
from engine.geometry.carm import carm
from engine.mesh.mesh import Mesh
from engine.geometry.transforms import perturb, rotation_angle
from engine.recon import ReconConfig, reconstruct
from engine.ssm.procrustes import align
from engine.ssm.segment import part_mesh
from engine.volume import Volume, VolumeProjector

VIEWS = {"AP": (0.0,), "AP+LAT": (0.0, 90.0), "+-30": (-30.0, 30.0)}


def cameras(views: str = "AP+LAT", size: int = 256, pixel_size: float = 1.6, sid: float = 700.0,
            sdd: float = 1000.0, isocenter=(0.0, 0.0, 0.0)):
    """C-arm views (primary angles of :data:`VIEWS`) around ``isocenter`` (world mm); detector ``size``^2."""
    return [carm(primary=a, sid=sid, sdd=sdd, rows=size, cols=size, pixel_size=pixel_size, isocenter=isocenter)
            for a in VIEWS[views]]


def random_offset(rng, max_deg: float = 10.0, max_mm: float = 20.0):
    """(rotation vector (rad), translation (mm)) of a random initial pose error (see module doc)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    return axis * np.deg2rad(rng.uniform(0, max_deg)), direction * rng.uniform(0, max_mm)


def true_pose(model_mean, subject_vertices) -> np.ndarray:
    """``world_from_model`` (4x4, rigid) that best puts the model's mean onto a subject in correspondence
    (least squares over the vertices): the pose a reconstruction should find, up to the shape difference.
    The random initial poses are drawn around it (an LLP26 subject's vertex centroid lies ~10 mm from
    the origin of the model frame, so the identity is no neutral start)."""
    return align(model_mean, subject_vertices).matrix


def offset_size(offset) -> tuple:
    """(degrees, mm) of a :func:`random_offset`."""
    return float(np.rad2deg(np.linalg.norm(offset[0]))), float(np.linalg.norm(offset[1]))


def offset_pose(world_from_model, center_model, rotvec, translation) -> np.ndarray:
    """``world_from_model`` changed by a rotation about the model centre's world position and a translation."""
    t = np.asarray(world_from_model, np.float64)
    return perturb(t, rotvec, translation, center=t[:3, :3] @ center_model + t[:3, 3])


def rotation_angle_deg(a, b) -> float:
    """Angle (degrees) of the rotation between the rotation parts of two 4x4 transforms."""
    r = a[:3, :3] @ np.linalg.inv(b[:3, :3])
    r /= np.cbrt(np.linalg.det(r))
    return float(np.rad2deg(rotation_angle(r)))


def xray_targets(volume, cams, *, quanta: float | None = 1000.0, seed: int = 0, spectrum: str = "fluoro90",
                 scatter: bool = True, aec_field: float = 0.5) -> np.ndarray:
    """Line-integral images ``-log(I / I0)`` (n, rows, cols) of a volume: polychromatic, scatter, Poisson noise.

    Automatic exposure control: each view's dose is chosen so that the median pixel of
    the AEC's measuring field (the central ``aec_field`` of the detector's width and height,
    centred on the isocentre, where the anatomy of interest is) receives ``quanta`` effective
    quanta; the lateral view of a pelvis gets more dose than the AP one, as on a C-arm.  A field
    much wider than the anatomy exposes for what lies around it: centred on a thoracic vertebra,
    the central half of a 20 cm field is mostly lung, and the spine behind the mediastinum then
    receives almost no quanta (clipped, no signal).
    With the fluoro90 spectrum (about 2.6e4 photons / mm^2 / uGy, spekpy) 1000 quanta
    in a 1.6 mm pixel is about 15 nGy at the detector: a low-dose fluoroscopy frame.
    Pixels without a single quantum are floored at half a quantum before the log (as ``simulate`` does).
    ``quanta=None``: no noise (an ideal detector; for experiments that take the noise out).
    """
    if not 0 < aec_field <= 1:
        raise ValueError(f"aec_field is a fraction of the detector side in (0, 1], got {aec_field}")

    proj = VolumeProjector(volume) if isinstance(volume, Volume) else volume  # uploaded once for all calls
    config = engine.XrayConfig(spectrum=spectrum, scatter=scatter, output="line_integral")
    if quanta is None:
        return engine.simulate(proj, cams, config=config)
    out = []
    for k, cam in enumerate(cams):  # each view its own dose
        clean = engine.simulate(proj, cam, config=config.replace(output="intensity"))[0]
        r, c = clean.shape
        hr, hc = max(int(round(r * aec_field / 2)), 1), max(int(round(c * aec_field / 2)), 1)
        median = float(np.median(clean[r // 2 - hr:r // 2 + hr, c // 2 - hc:c // 2 + hc]))
        photons = float(quanta) / max(median, 1e-12)
        out.append(engine.simulate(proj, cam, config=config.replace(noise=photons), seed=seed + k)[0])
    return np.stack(out)


@dataclass
class Trial:
    """One reconstruction of an experiment and its errors against the truth (mm, degrees, s)."""

    tier: str
    views: str
    case: str
    init_deg: float
    init_mm: float
    hd: float
    hd95: float
    assd: float
    time_s: float
    iterations: int
    pose_deg: float = float("nan")
    pose_mm: float = float("nan")
    init_assd: float = float("nan")

    def row(self) -> dict:
        return dict(self.__dict__)


def run_trial(tier, views, case, targets, cams, model, truth: Mesh, init, *, truth_pose=None, part=None,
              config: ReconConfig | None = None, **changes) -> tuple:
    """Reconstruct and measure; returns (Trial, ReconResult).  ``part``: for a segment model
    (:mod:`engine.ssm.segment`), the part compared with the truth (the others are nuisance bones); the pose
    errors are then those of that part's centre, in the segment's frame (the reference part's).  ``config``
    (default ``ReconConfig()``) with ``changes`` to its fields."""
    t0 = time.perf_counter()
    res = reconstruct(targets, cams, model, init, (config or ReconConfig()).replace(**changes))
    elapsed = time.perf_counter() - t0
    result, start, mean = res.mesh, res.initial_mesh, model.mean
    if part is not None:
        result, start = (part_mesh(model, x, part) for x in (res.mesh, res.initial_mesh))
        mean = part_mesh(model, model.mean, part).vertices
    m = metrics.surface_metrics(result, truth, n=8000)
    m0 = metrics.surface_metrics(start, truth, n=4000)
    c = mean.mean(0)
    init = init.get("pose") if isinstance(init, dict) else init  # reconstruct's {"pose", "coeffs"} form
    init = np.eye(4) if init is None else np.asarray(init, np.float64)
    trial = Trial(tier, views, case, rotation_angle_deg(init, truth_pose if truth_pose is not None else init),
                  float(np.linalg.norm((init[:3, :3] @ c + init[:3, 3]) - (truth_pose[:3, :3] @ c + truth_pose[:3, 3])))
                  if truth_pose is not None else float("nan"),
                  m["hd"], m["hd95"], m["assd"], elapsed, res.iterations, init_assd=m0["assd"])
    if truth_pose is not None:
        trial.pose_deg = rotation_angle_deg(res.world_from_model, truth_pose)
        trial.pose_mm = float(np.linalg.norm(res.world_from_model[:3, :3] @ c + res.world_from_model[:3, 3]
                                             - (truth_pose[:3, :3] @ c + truth_pose[:3, 3])))
    return trial, res


def summarise(trials, success) -> list:
    """Per (tier, views): n, success rate, median and 90th percentile of HD, HD95, ASSD, median time."""
    out = []
    keys = sorted({(t.tier, t.views) for t in trials}, key=lambda k: (k[0], len(k[1])))
    for key in keys:
        ts = [t for t in trials if (t.tier, t.views) == key]
        arr = {k: np.array([getattr(t, k) for t in ts]) for k in ("hd", "hd95", "assd", "time_s")}
        ok = [bool(success(t)) for t in ts]
        row = {"tier": key[0], "views": key[1], "n": len(ts), "success": float(np.mean(ok))}
        for k in ("hd", "hd95", "assd"):
            row[f"{k}_median"] = float(np.median(arr[k]))
            row[f"{k}_p90"] = float(np.percentile(arr[k], 90))
            row[f"{k}_mean"] = float(np.mean(arr[k]))
        row["time_median_s"] = float(np.median(arr["time_s"]))
        out.append(row)
    return out


def table(rows) -> str:
    """Plain-text table of :func:`summarise` rows."""
    head = (f"{'tier':<22} {'views':<7} {'n':>3} {'success':>7}  {'HD mean/med/p90 mm':>20}  "
            f"{'HD95 med/p90':>13}  {'ASSD med/p90':>13}  {'time s':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['tier']:<22} {r['views']:<7} {r['n']:3d} {100 * r['success']:6.0f}%  "
                     f"{r['hd_mean']:6.1f}/{r['hd_median']:5.1f}/{r['hd_p90']:5.1f}  "
                     f"{r['hd95_median']:6.2f}/{r['hd95_p90']:5.2f}  {r['assd_median']:6.2f}/{r['assd_p90']:5.2f}  "
                     f"{r['time_median_s']:6.1f}")
    return "\n".join(lines)
