"""DRR speed: the Taichi projector against a vectorised NumPy reference (and DiffDRR when available).

Geometry: DiffDRR's example AP view (source 850 mm from the volume centre, sdd 1020 mm),
256 x 256 detector of 2.0 mm and 512 x 512 of 1.0 mm; default step (half the smallest
voxel spacing); one image, and a batch of 8 nearby poses in one launch.  Times are
medians after a warm-up call (Taichi compiles on first use) and include the copy of
the image to NumPy.  ``samples`` is the exact number of density samples the kernel
takes, sum over rays of ceil(clipped length / step), computed in NumPy.

The NumPy reference samples the same points (same clip, midpoint rule, trilinear
interpolation with scipy.ndimage.map_coordinates) and sums the materials; "max rel
diff" is max |engine - reference| / max(reference) over the pixels it rendered.  At
512 x 512 (and in --quick mode) the reference renders only some rows, evenly spread
over the detector, and its time is scaled to the full image (the table says so).

DiffDRR 0.6.1 runs in a separate environment (``DIFFDRR_PYTHON`` or
``--diffdrr-python``) through ``diffdrr_reference.py``; its images use its own HU to
density conversion, so only their correlation with the engine's image is reported.

    python benchmarks/drr.py [--quick] [--out benchmarks/results/drr.json]
    DIFFDRR_PYTHON=/tmp/diffdrr-venv/bin/python python benchmarks/drr.py
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import engine  # noqa: E402
from _common import clip_rays, median_time  # noqa: E402
from engine.geometry import carm_rotation  # noqa: E402
from engine.volume import Volume, VolumeProjector, load_ct  # noqa: E402

CASES = {"chest_ct": ROOT.parent / "shared" / "data" / "chest_ct" / "ct.nii.gz",
         "pelvis_phantom": ROOT / "assets" / "pelvis_phantom.nii.gz"}
DETECTORS = ((256, 2.0), (512, 1.0))  # (pixels per side, pixel size mm)
BATCH = 8
ENGINE = "engine (Taichi)"
NUMPY = "NumPy reference"


def parse_args(argv=None):
    """Parse the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments; default ``sys.argv[1:]``.

    Returns
    -------
    argparse.Namespace
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (< 1 min): 256x256 only, fewer repeats, NumPy on 32 rows, DiffDRR trilinear on one volume")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "drr.json"), help="JSON results")
    ap.add_argument("--diffdrr-python", default=os.environ.get("DIFFDRR_PYTHON"),
                    help="Python of an environment with diffdrr 0.6.1 (default $DIFFDRR_PYTHON)")
    return ap.parse_args(argv)


def camera(ct, size, pixel):
    """DiffDRR's example AP view of ``ct``.

    Parameters
    ----------
    ct : engine.CT
    size : int
        Detector rows = columns.
    pixel : float
        Pixel size, mm.

    Returns
    -------
    engine.Camera
        Source 850 mm from the centre of the volume, detector 1020 mm from the source.
    """
    return engine.carm(sid=850.0, sdd=1020.0, rows=size, cols=size, pixel_size=pixel, isocenter=ct.center)


def batch_cameras(cam, centre, n=BATCH):
    """``n`` poses a few degrees apart about ``centre``; the first is ``cam`` itself.

    Parameters
    ----------
    cam : engine.Camera
    centre : (3,) array
        Centre of rotation, world mm.
    n : int

    Returns
    -------
    list of engine.Camera
    """
    cams = []
    for i in range(n):
        t = np.eye(4)
        t[:3, :3] = carm_rotation(2.0 * i, 1.0 * (i % 3))
        t[:3, 3] = centre - t[:3, :3] @ centre
        cams.append(cam.moved(t))
    return cams


def sample_count(vol, cam, step):
    """Number of samples the kernel takes and number of rays that meet the volume.

    Parameters
    ----------
    vol : engine.Volume
    cam : engine.Camera
    step : float
        Sampling step, mm.

    Returns
    -------
    samples : int
        Sum over rays of ceil(clipped length / step) (at least 1 for a ray that meets the box).
    rays_hitting : int
    """
    length = clip_rays(vol, cam)[-1]
    hit = length > 0
    return int(np.maximum(np.ceil(length[hit] / step - 1e-4), 1).sum()), int(hit.sum())


def numpy_reference(density, vol, cam, step, rows=slice(None), chunk=2048):
    """Vectorised NumPy DRR of a single density channel, sampled as the kernel samples.

    Parameters
    ----------
    density : (I, J, K) float64 array
        g/cm^3 on the grid of ``vol``.
    vol : engine.Volume
        Gives the grid (shape and world_from_index).
    cam : engine.Camera
    step : float
        Sampling step, mm.
    rows : slice
        Detector rows to render.
    chunk : int
        Rays per vectorised chunk (bounds memory).

    Returns
    -------
    (n_rows, cols) float64 array
        Line integrals, g/cm^2: same clip, same midpoint samples, trilinear
        interpolation (``scipy.ndimage.map_coordinates``, order 1, clamped at the edges).
    """
    from scipy.ndimage import map_coordinates

    s, d, t0, t1, length = clip_rays(vol, cam, rows)
    shape = cam.rays()[1][rows].shape[:2]
    count = np.where(length > 0, np.maximum(np.ceil(length / step - 1e-4), 1), 0).astype(int)
    out = np.zeros(len(d))
    hit = np.flatnonzero(count)
    for c0 in range(0, len(hit), chunk):
        idx = hit[c0:c0 + chunk]
        k = np.arange(count[idx].max())
        valid = k[None] < count[idx, None]
        tt = t0[idx, None] + (k[None] + 0.5) * ((t1[idx] - t0[idx]) / count[idx])[:, None]
        p = s + tt[..., None] * d[idx, None]
        acc = np.zeros(valid.shape)
        acc[valid] = map_coordinates(density, p[valid].T, order=1, mode="nearest")
        out[idx] = acc.sum(1) * length[idx] / count[idx] * 0.1  # g/cm^3 * mm -> g/cm^2
    return out.reshape(shape)


def spread_rows(size, n):
    """A slice of ``n`` detector rows evenly spread over ``size`` rows (all rows if ``n >= size``)."""
    stride = max(1, size // n)
    return slice(stride // 2, size, stride)


def n_rows(band, size):
    """Number of rows a slice selects from ``size`` rows."""
    return len(range(*band.indices(size)))


def max_rel_diff(img, ref):
    """max |img - ref| / max(ref)."""
    return float(np.abs(img - ref).max() / np.abs(ref).max())


def time_engine(proj, cam, cams, repeats):
    """Time the projector on one camera and on a batch of cameras in one launch.

    Parameters
    ----------
    proj : engine.VolumeProjector
    cam : engine.Camera
    cams : list of engine.Camera
        The batch; ``cams[0]`` is ``cam``.
    repeats : int

    Returns
    -------
    dict
        ``single`` and ``batch`` (seconds per image), ``image`` (total density of the
        single view, (rows, cols)) and ``batch_image`` (that of the batch's first pose,
        which is ``cam``).
    """
    single = median_time(lambda: proj(cam), repeats)
    image = proj(cam).sum(0)
    batch = median_time(lambda: proj(cams), max(1, repeats // 2)) / len(cams)
    batch_image = proj(cams)[0].sum(0)
    return dict(single=single, batch=batch, image=image, batch_image=batch_image)


def time_numpy(vol, cam, step, band):
    """Time the NumPy reference on the rows ``band``, scaled to the whole detector.

    Parameters
    ----------
    vol : engine.Volume
    cam : engine.Camera
    step : float
        mm.
    band : slice
        Detector rows rendered.

    Returns
    -------
    seconds : float
        Estimated time for the whole image.
    image : (n_rows, cols) array
    """
    total = np.ascontiguousarray(vol.density.sum(0), dtype=np.float64)
    t = time.perf_counter()
    image = numpy_reference(total, vol, cam, step, rows=band)
    seconds = (time.perf_counter() - t) * cam.rows / n_rows(band, cam.rows)
    return seconds, image


def run_diffdrr(python, ct_path, detectors, methods, repeats, save_dir):
    """Run ``diffdrr_reference.py`` with another environment's Python.

    Parameters
    ----------
    python : str
        That environment's Python.
    ct_path : Path
    detectors : sequence of (int, float)
        (size, pixel mm).
    methods : sequence of str
        DiffDRR renderers ("siddon", "trilinear").
    repeats : int
    save_dir : str
        Where DiffDRR's images are written.

    Returns
    -------
    dict or None
        Its parsed JSON output; None (with a message) when it failed.
    """
    cmd = [python, str(ROOT / "benchmarks" / "diffdrr_reference.py"), str(ct_path),
           "--detectors", *[f"{s}:{p}" for s, p in detectors], "--methods", *methods,
           "--repeats", str(repeats), "--save-dir", save_dir]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  DiffDRR could not run: {e}")
        return None
    if res.returncode != 0:
        print(f"  DiffDRR failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_row(case, renderer, batch, seconds, samples, t_numpy, diff=float("nan"), note=""):
    """One table row (a dict) from a time per image and the case's fixed facts."""
    rays = case["size"] ** 2
    return dict(renderer=renderer, volume=case["volume"], shape=case["shape"],
                detector=f"{case['size']}x{case['size']}", pixel_mm=case["pixel_mm"], step_mm=case["step_mm"],
                batch=batch, ms_per_image=seconds * 1e3, rays=rays, rays_hitting=case["rays_hitting"],
                samples=samples, rays_per_s=rays / seconds,
                samples_per_s=samples / seconds if samples else float("nan"),
                speedup_vs_numpy=t_numpy / seconds, max_rel_diff_vs_numpy=diff, note=note)


def bench_detector(name, ct, vol, proj, size, pixel, args):
    """Engine (single and batch) and NumPy rows for one volume and detector.

    Returns
    -------
    rows : list of dict
    case : dict
        The facts shared by the rows, plus the engine's image and the NumPy time
        (for the DiffDRR rows).
    """
    cam = camera(ct, size, pixel)
    samples, hit = sample_count(vol, cam, proj.step_mm)
    case = dict(volume=name, shape=list(ct.shape), size=size, pixel_mm=pixel, step_mm=proj.step_mm,
                rays_hitting=hit)
    cams = batch_cameras(cam, ct.center)
    batch_samples = sum(sample_count(vol, c, proj.step_mm)[0] for c in cams) // len(cams)  # per image
    eng = time_engine(proj, cam, cams, 3 if args.quick else 7)
    band = spread_rows(size, 32 if args.quick else min(size, 128 if size > 256 else 256))
    t_numpy, ref = time_numpy(vol, cam, proj.step_mm, band)
    rendered = n_rows(band, size)
    note = "" if rendered == size else f"timed on {rendered} rows spread over the image, scaled"
    rows = [make_row(case, ENGINE, 1, eng["single"], samples, t_numpy, max_rel_diff(eng["image"][band], ref)),
            make_row(case, ENGINE, BATCH, eng["batch"], batch_samples, t_numpy,
                     max_rel_diff(eng["batch_image"][band], ref), "poses 0-14 deg apart; diff: first pose"),
            make_row(case, NUMPY, 1, t_numpy, samples, t_numpy, 0.0, note)]
    case.update(image=eng["image"], t_numpy=t_numpy)
    return rows, case


def diffdrr_rows(args, path, cases):
    """DiffDRR rows for one volume (empty when no DiffDRR Python is given or it fails).

    Parameters
    ----------
    args : argparse.Namespace
    path : Path
        The CT file.
    cases : list of dict
        From :func:`bench_detector`, one per detector.

    Returns
    -------
    list of dict
    """
    if not args.diffdrr_python:
        return []
    methods = ["trilinear"] if args.quick else ["siddon", "trilinear"]
    with tempfile.TemporaryDirectory() as tmp:
        out = run_diffdrr(args.diffdrr_python, path, [(c["size"], c["pixel_mm"]) for c in cases], methods,
                          1 if args.quick else 3, tmp)
        if out is None:
            return []
        rows = []
        for r in out["results"]:
            case = next(c for c in cases if c["size"] == r["size"])
            corr = float(np.corrcoef(np.load(r["image"]).ravel(), case["image"].ravel())[0, 1])
            extra = f", {r['samples'] // r['size'] ** 2} samples/ray" if r["samples"] else ""
            rows.append(make_row(case, f"DiffDRR {out['version']} {r['method']}", 1, r["seconds"], r["samples"],
                                 case["t_numpy"], note=f"torch {out['torch']} {out['threads']} threads{extra}; "
                                 f"image corr with engine {corr:.3f}"))
    return rows


def bench_volume(name, path, args, with_diffdrr=True):
    """All rows for one volume file; none (with a message) when the file is absent.

    Parameters
    ----------
    name : str
    path : Path
    args : argparse.Namespace
    with_diffdrr : bool
        Add DiffDRR's rows (when ``args.diffdrr_python`` is set).

    Returns
    -------
    list of dict
    """
    if not path.is_file():
        print(f"skipping {name}: {path} not found")
        return []
    ct = load_ct(path)
    vol = Volume.from_ct(ct)
    proj = VolumeProjector(vol)
    rows, cases = [], []
    for size, pixel in DETECTORS[:1] if args.quick else DETECTORS:
        r, case = bench_detector(name, ct, vol, proj, size, pixel, args)
        rows += r
        cases.append(case)
    return rows + (diffdrr_rows(args, path, cases) if with_diffdrr else [])


def print_table(rows):
    """Print the rows as a fixed-width table."""
    hdr = (f"{'renderer':<26}{'volume':<16}{'detector':<10}{'batch':>6}{'ms/img':>10}{'Mrays/s':>9}"
           f"{'Msamp/s':>9}{'x NumPy':>9}{'maxrel':>9}  note")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['renderer']:<26}{r['volume']:<16}{r['detector']:<10}{r['batch']:>6}{r['ms_per_image']:>10.1f}"
              f"{r['rays_per_s'] / 1e6:>9.3f}{r['samples_per_s'] / 1e6:>9.1f}{r['speedup_vs_numpy']:>9.2f}"
              f"{r['max_rel_diff_vs_numpy']:>9.1e}  {r['note']}")


def machine_info():
    """The machine and software the benchmark ran on (a dict for the JSON)."""
    backend = engine.backend.current()
    return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), python=platform.python_version(),
                taichi_arch=backend.arch if backend else None, date=time.strftime("%Y-%m-%d %H:%M:%S %z"))


def main(argv=None):
    """Run the benchmark, print the table, write the JSON."""
    args = parse_args(argv)
    engine.backend.init()
    rows = []
    for name, path in CASES.items():
        # --quick: DiffDRR on the first volume only (it takes ~10 s per volume to start)
        rows += bench_volume(name, path, args, with_diffdrr=not (args.quick and rows))
    print_table(rows)
    machine = machine_info()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=machine, quick=args.quick, rows=rows), indent=1, default=float))
    print(f"machine: {machine}\nwrote {out}")


if __name__ == "__main__":
    main()
