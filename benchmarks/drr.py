"""DRR speed and accuracy: the engine's projector against RTK's Joseph projector, a NumPy reference and
DiffDRR, in one run.

Geometry: DiffDRR's example AP view (source 850 mm from the volume centre, sdd 1020 mm), 256 x 256
detector of 2.0 mm and 512 x 512 of 1.0 mm.  Times are medians (and minima) after a warm-up call
and include the copy of the image to NumPy.  Rows:

- ``engine planes`` (the default sampling, three material channels: what ``VolumeProjector(vol)``
  renders), single image and a batch of 8 nearby poses in one launch; ``engine planes f16``
  (half-precision storage); ``engine midpoint`` (trilinear samples every half voxel: the former
  default).
- ``engine planes, 1 material`` and ``RTK Joseph, 1 material``: the same one-channel volume (the
  sum of the materials), timed interleaved in this process (``itk-rtk``, CPU, all cores; skipped
  when not installed).  ``x RTK`` is RTK's median time over the row's.
- ``NumPy reference``: the midpoint sampling vectorised with scipy (on some rows, time scaled).
- DiffDRR 0.6.1 (another environment, ``DIFFDRR_PYTHON``), its own HU conversion: correlation only.
- ``--vulkan``: the engine rows again on Taichi's Vulkan backend (a second process; on a machine
  without a GPU that is Mesa's lavapipe, for reference only).

``err vs exact``: median relative error of the total density image against the exact integral of
the trilinear interpolant (:mod:`engine.volume.reference`) on random pixels.

    python benchmarks/drr.py [--quick] [--vulkan] [--out benchmarks/results/drr.json]
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
from _common import CHEST_CT, clip_rays  # noqa: E402
from engine.geometry import carm_rotation  # noqa: E402
from engine.volume import Volume, VolumeProjector, load_ct  # noqa: E402

CASES = {"chest_ct": CHEST_CT / "ct.nii.gz",
         "pelvis_phantom": ROOT / "assets" / "pelvis_phantom.nii.gz"}
DETECTORS = ((256, 2.0), (512, 1.0))  # (pixels per side, pixel size mm)
BATCH = 8


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
    ap.add_argument("--vulkan", action="store_true",
                    help="also time the engine rows on Taichi's Vulkan backend (a second process)")
    ap.add_argument("--arch", default=None, help=argparse.SUPPRESS)  # the second process's backend
    ap.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
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


VARIANTS = (("engine planes", {}), ("engine planes f16", {"storage": "f16"}),
            ("engine midpoint", {"sampling": "midpoint"}))
EXACT_PIXELS = 150  # random pixels for the error against the exact integral


def timings(fns, rounds):
    """Interleaved timings: ``rounds`` rounds, each calling every function once (after one warm-up call each).

    Returns
    -------
    dict name -> list of seconds
    """
    for fn in fns.values():
        fn()
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def exact_errors(total, vol, cam, images, n, seed=0):
    """Median relative error of each (rows, cols) total-density image (g/cm^2) against the exact integral."""
    from engine.volume.reference import exact_image

    rng = np.random.default_rng(seed)
    pix = np.stack([rng.integers(0, cam.rows, n), rng.integers(0, cam.cols, n)], 1)
    ref = exact_image(total, vol.world_from_index, cam, pix) * 0.1
    keep = ref > 0.05 * ref.max()
    return {k: float(np.median(np.abs(img[pix[:, 0], pix[:, 1]] - ref)[keep] / ref[keep])) for k, img in images.items()}


def row(renderer, case, times, *, batch=1, arch=None, rtk=None, err=float("nan"), note=""):
    """One table row (a dict)."""
    med, best = float(np.median(times)), float(np.min(times))
    return dict(renderer=renderer, arch=arch or engine.backend.current().arch, volume=case["volume"],
                shape=case["shape"], detector=f"{case['size']}x{case['size']}", pixel_size=case["pixel_size"],
                batch=batch, ms_per_image=med * 1e3, ms_min=best * 1e3, rays_per_s=case["size"] ** 2 / med,
                x_rtk=(rtk / med) if rtk else float("nan"), err_vs_exact=err, note=note)


def bench_detector(name, ct, vol, size, pixel, args):
    """The engine's rows (and RTK's, NumPy's) for one volume and detector.

    Returns
    -------
    rows : list of dict
    case : dict
        The facts shared by the rows, plus the engine's image and the NumPy time (for the DiffDRR rows).
    """
    cam = camera(ct, size, pixel)
    case = dict(volume=name, shape=list(ct.shape), size=size, pixel_size=pixel)
    cams = batch_cameras(cam, ct.center)
    rounds = 3 if args.quick else 7
    projs = {label: VolumeProjector(vol, **kw) for label, kw in VARIANTS}
    t = timings({label: (lambda p=p: p(cam)) for label, p in projs.items()}, rounds)
    default = projs["engine planes"]
    t_batch = [x / len(cams) for x in timings({"b": lambda: default(cams)}, max(2, rounds // 2))["b"]]
    images = {label: p(cam)[0].sum(0) for label, p in projs.items()}
    total = vol.density.sum(0)
    errs = {} if args.engine_only else exact_errors(total, vol, cam, images, 40 if args.quick else EXACT_PIXELS)
    rows = []
    rtk_med = None
    one = Volume(density=total[None], materials=("total",), world_from_index=vol.world_from_index)
    proj1 = VolumeProjector(one)
    fns = {"engine": lambda: proj1(cam)}
    if not args.engine_only:
        import rtk_reference

        if rtk_reference.available():
            ref = rtk_reference.JosephReference(total, vol.world_from_index, cam)
            fns["rtk"] = ref
        else:
            print("  RTK not installed (pip install itk-rtk==2.7.0.post1): no RTK rows")
    t1 = timings(fns, rounds)
    if "rtk" in t1:
        rtk_med = float(np.median(t1["rtk"]))
        a, b = proj1(cam)[0, 0].astype(np.float64), fns["rtk"]().astype(np.float64)
        ncc = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        inner = a > 0.05 * a.max()
        rel = float(np.median(np.abs(a - b)[inner] / a[inner]))
    for label, _ in VARIANTS:
        rows.append(row(f"{label}, 3 materials", case, t[label], rtk=rtk_med, err=errs.get(label, float("nan"))))
        if label == "engine planes":
            rows.append(row(f"{label}, 3 materials", case, t_batch, batch=len(cams), rtk=rtk_med,
                            note="poses 0-14 deg apart"))
    rows.append(row("engine planes, 1 material", case, t1["engine"], rtk=rtk_med))
    if rtk_med:
        rows.append(row("RTK Joseph, 1 material", case, t1["rtk"], arch="cpu (ITK threads)", rtk=rtk_med,
                        note=f"vs engine 1 material: NCC {ncc:.5f}, median rel diff {rel:.1e}"))
    if not args.engine_only:
        band = spread_rows(size, 32 if args.quick else min(size, 128 if size > 256 else 256))
        mid = projs["engine midpoint"]
        t_numpy, ref = time_numpy(vol, cam, mid.step_mm, band)
        rendered = n_rows(band, size)
        note = f"midpoint {mid.step_mm:.3f} mm; max rel diff to engine midpoint " \
               f"{max_rel_diff(images['engine midpoint'][band], ref):.1e}"
        note += "" if rendered == size else f"; timed on {rendered} rows, scaled"
        rows.append(row("NumPy reference", case, [t_numpy], arch="cpu (NumPy)", rtk=rtk_med, note=note))
        case.update(t_numpy=t_numpy)
    case.update(image=images["engine planes"])
    for p in list(projs.values()) + [proj1]:
        p.close()
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
        out = run_diffdrr(args.diffdrr_python, path, [(c["size"], c["pixel_size"]) for c in cases], methods,
                          1 if args.quick else 3, tmp)
        if out is None:
            return []
        rows = []
        for r in out["results"]:
            case = next(c for c in cases if c["size"] == r["size"])
            corr = float(np.corrcoef(np.load(r["image"]).ravel(), case["image"].ravel())[0, 1])
            extra = f", {r['samples'] // r['size'] ** 2} samples/ray" if r["samples"] else ""
            rows.append(row(f"DiffDRR {out['version']} {r['method']}", case, [r["seconds"]],
                            arch=f"cpu (torch {out['torch']}, {out['threads']} threads)",
                            note=f"image corr with engine {corr:.3f}{extra}"))
    return rows


def bench_volume(name, path, args, with_diffdrr=True):
    """All rows for one volume file; none (with a message) when the file is absent."""
    if not path.is_file():
        print(f"skipping {name}: {path} not found")
        return []
    ct = load_ct(path)
    vol = Volume.from_ct(ct)
    rows, cases = [], []
    for size, pixel in DETECTORS[:1] if args.quick else DETECTORS:
        r, case = bench_detector(name, ct, vol, size, pixel, args)
        rows += r
        cases.append(case)
    return rows + (diffdrr_rows(args, path, cases) if with_diffdrr and not args.engine_only else [])


def vulkan_rows(args):
    """The engine rows on Vulkan, from a second process (a process runs one Taichi backend)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vulkan.json"
        cmd = [sys.executable, __file__, "--arch", "vulkan", "--engine-only", "--out", str(out)]
        if args.quick:
            cmd.append("--quick")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            print(f"  Vulkan rows failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
            return []
        return json.loads(out.read_text())["rows"]


def print_table(rows):
    """Print the rows as a fixed-width table."""
    hdr = (f"{'renderer':<34}{'arch':<22}{'volume':<15}{'detector':<9}{'batch':>5}{'ms/img':>9}{'min':>8}"
           f"{'x RTK':>7}{'err/exact':>10}  note")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['renderer']:<34}{r['arch']:<22}{r['volume']:<15}{r['detector']:<9}{r['batch']:>5}"
              f"{r['ms_per_image']:>9.1f}{r['ms_min']:>8.1f}{r['x_rtk']:>7.2f}{r['err_vs_exact']:>10.1e}  {r['note']}")


def machine_info():
    """The machine and software the benchmark ran on (a dict for the JSON)."""
    backend = engine.backend.current()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return dict(platform=platform.platform(), cpu=cpu, cpu_count=os.cpu_count(), python=platform.python_version(),
                taichi_arch=backend.arch if backend else None, date=time.strftime("%Y-%m-%d %H:%M:%S %z"))


def main(argv=None):
    """Run the benchmark, print the table, write the JSON."""
    args = parse_args(argv)
    engine.backend.init(args.arch)
    rows = []
    for name, path in CASES.items():
        # --quick: DiffDRR on the first volume only (it takes ~10 s per volume to start)
        rows += bench_volume(name, path, args, with_diffdrr=not (args.quick and rows))
    if args.vulkan and not args.engine_only:
        rows += vulkan_rows(args)
    print_table(rows)
    machine = machine_info()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=machine, quick=args.quick, rows=rows), indent=1, default=float))
    print(f"machine: {machine}\nwrote {out}")


if __name__ == "__main__":
    main()
