"""DRR speed: the Taichi projector against a vectorised NumPy reference (and DiffDRR when available).

Geometry: DiffDRR's example AP view (source 850 mm from the volume centre, sdd 1020 mm),
256 x 256 detector of 2.0 mm and 512 x 512 of 1.0 mm; default step (half the
smallest voxel spacing).  Times are medians after a warm-up (Taichi compiles on
first use) and include the copy of the image to NumPy.

    python benchmarks/drr.py [--quick] [--out benchmarks/results/drr.json]
    DIFFDRR_PYTHON=/path/to/venv/bin/python python benchmarks/drr.py   # adds DiffDRR 0.6.1, same run

Prints a table and writes JSON with the machine described.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import engine  # noqa: E402
from _common import clip_rays, median_time  # noqa: E402
from engine.volume import Volume, VolumeProjector, load_ct  # noqa: E402

CASES = {"chest_ct": ROOT.parent / "shared" / "data" / "chest_ct" / "ct.nii.gz",
         "pelvis_phantom": ROOT / "assets" / "pelvis_phantom.nii.gz"}
DETECTORS = ((256, 2.0), (512, 1.0))


def camera(ct, size, pixel):
    return engine.carm(sid=850.0, sdd=1020.0, rows=size, cols=size, pixel_size=pixel, isocenter=ct.center)


def sample_count(vol, cam, step):
    """Exact number of samples the kernel takes: sum over rays of ceil(clipped length / step)."""
    length = clip_rays(vol, cam)[-1]
    hit = length > 0
    return int(np.maximum(np.ceil(length[hit] / step - 1e-4), 1).sum()), int(hit.sum())


def numpy_reference(density, vol, cam, step, rows=slice(None)):
    """Vectorised NumPy DRR (total density, g/cm^2): same clipping, midpoint rule and trilinear sampling
    (scipy.ndimage.map_coordinates, order 1, clamped), rays chunked to bound memory."""
    from scipy.ndimage import map_coordinates

    s, d, t0, t1, length = clip_rays(vol, cam, rows)
    shape = cam.rays()[1][rows].shape[:2]
    count = np.where(length > 0, np.maximum(np.ceil(length / step - 1e-4), 1), 0).astype(int)
    out = np.zeros(len(d))
    order = np.flatnonzero(count)
    chunk = 2048
    for c0 in range(0, len(order), chunk):
        idx = order[c0:c0 + chunk]
        kmax = count[idx].max()
        k = np.arange(kmax)
        valid = k[None] < count[idx, None]
        tt = t0[idx, None] + (k[None] + 0.5) * (t1[idx] - t0[idx])[:, None] / count[idx, None]
        p = s[None, None] + tt[..., None] * d[idx, None]
        vals = map_coordinates(density, p[valid].T, order=1, mode="nearest")
        acc = np.zeros(valid.shape)
        acc[valid] = vals
        out[idx] = acc.sum(1) * length[idx] / count[idx] * 0.1
    return out.reshape(shape)


def run_diffdrr(python, ct_path, size, pixel, repeats):
    script = ROOT / "benchmarks" / "diffdrr_reference.py"
    res = subprocess.run([python, str(script), str(ct_path), str(size), str(pixel), str(repeats)],
                         capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        print(f"  DiffDRR failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256x256 only, fewer repeats")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "drr.json"))
    ap.add_argument("--diffdrr-python", default=os.environ.get("DIFFDRR_PYTHON"))
    args = ap.parse_args(argv)
    backend = engine.backend.init()
    repeats = 3 if args.quick else 7
    rows = []
    for name, path in CASES.items():
        if not path.is_file():
            print(f"skipping {name}: {path} not found")
            continue
        ct = load_ct(path)
        vol = Volume.from_ct(ct)
        proj = VolumeProjector(vol)
        total = np.ascontiguousarray(vol.density.sum(0), dtype=np.float64)
        for size, pixel in DETECTORS[:1] if args.quick else DETECTORS:
            cam = camera(ct, size, pixel)
            samples, hit = sample_count(vol, cam, proj.step_mm)
            t_single = median_time(lambda: proj(cam), repeats)
            img = proj(cam).sum(0)
            batch = [cam.moved(_small_rotation(i, ct.center)) for i in range(8)]
            t_batch = median_time(lambda: proj(batch), max(2, repeats // 2)) / len(batch)
            ref_rows = size if size <= 256 else 32  # at 512: a band of rows through the middle, scaled
            band = slice((size - ref_rows) // 2, (size + ref_rows) // 2)
            t = time.perf_counter()
            ref = numpy_reference(total, vol, cam, proj.step_mm, rows=band)
            t_numpy = (time.perf_counter() - t) * size / ref_rows
            err = float(np.abs(img[band] - ref).max() / ref.max())
            common = dict(volume=name, shape=list(ct.shape), detector=f"{size}x{size}", pixel_mm=pixel,
                          step_mm=proj.step_mm, rays_hitting=hit, samples=samples)
            for renderer, sec, batch_n in (("engine (Taichi)", t_single, 1), ("engine (Taichi)", t_batch, 8),
                                           ("NumPy reference", t_numpy, 1)):
                rows.append(dict(common, renderer=renderer, batch=batch_n, ms_per_image=sec * 1e3,
                                 rays_per_s=size * size / sec, samples_per_s=samples / sec,
                                 speedup_vs_numpy=t_numpy / sec,
                                 max_rel_diff_vs_numpy=err if renderer != "NumPy reference" else 0.0,
                                 note="" if renderer != "NumPy reference" or ref_rows == size else
                                 f"timed on the middle {ref_rows} rows, scaled"))
            if args.diffdrr_python and name == "chest_ct":
                r = run_diffdrr(args.diffdrr_python, path, size, pixel, max(2, repeats // 2))
                if r:
                    rows.append(dict(common, renderer=f"DiffDRR {r['version']} ({r['method']})", batch=1,
                                     ms_per_image=r["seconds"] * 1e3, rays_per_s=size * size / r["seconds"],
                                     samples_per_s=float("nan"), speedup_vs_numpy=t_numpy / r["seconds"],
                                     max_rel_diff_vs_numpy=float("nan"), note=r.get("note", "")))
    hdr = f"{'renderer':<30}{'volume':<16}{'detector':<10}{'batch':>6}{'ms/img':>10}{'Mrays/s':>9}" \
          f"{'Msamp/s':>9}{'x NumPy':>9}{'maxrel':>9}  note"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['renderer']:<30}{r['volume']:<16}{r['detector']:<10}{r['batch']:>6}{r['ms_per_image']:>10.1f}"
              f"{r['rays_per_s'] / 1e6:>9.2f}{r['samples_per_s'] / 1e6:>9.1f}{r['speedup_vs_numpy']:>9.1f}"
              f"{r['max_rel_diff_vs_numpy']:>9.1e}  {r['note']}")
    machine = dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                   cpu_count=os.cpu_count(), python=platform.python_version(), taichi_arch=backend.arch,
                   date=time.strftime("%Y-%m-%d %H:%M:%S"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, rows=rows), indent=1, default=float))
    print(f"machine: {machine}\nwrote {args.out}")


def _small_rotation(i, centre):
    """A few degrees about the volume centre: a batch of nearby poses."""
    from engine.geometry import carm_rotation

    t = np.eye(4)
    t[:3, :3] = carm_rotation(2.0 * (i - 4), 1.0 * (i % 3 - 1))
    t[:3, 3] = centre - t[:3, :3] @ centre
    return t


if __name__ == "__main__":
    main()
