"""Reconstruction speed: one optimiser iteration (render + gradient) and a full reconstruction.

Model: the LLP26 pelvis model subdivided once (7,778 vertices, 15,552 triangles),
all 25 modes.  Views: AP, or AP + lateral, C-arm sid 700 / sdd 1000 mm, detectors
of 128x128 (3.2 mm pixels) and 256x256 (1.6 mm).  An iteration is
``Objective.__call__``: pose the instance, upload the vertices, render every view, NCC
loss and its gradient, back-projection to the vertices, chain rule to coefficients
and pose.  Full reconstruction: the default schedule (bins 4 -> 2 -> 1) from a pose
10 degrees / 20 mm off, targets rendered from a model instance.  Median times after
a warm-up; the machine is printed and stored.  Also one iteration of the X-ray loss
(``loss="xray"``: the model and its cortex-offset inner surface rendered together,
shell/core fit, band-pass NCC) for +-30 degree views.

    python benchmarks/recon.py [--quick] [--out benchmarks/results/recon.json]
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import median_time  # noqa: E402
from engine import backend  # noqa: E402
from engine.mesh import MeshProjector  # noqa: E402
from engine.recon import Objective, ReconConfig, ShapePose, reconstruct  # noqa: E402
from engine.ssm import load_pelvis_model  # noqa: E402
from research import experiments as ex  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, one full reconstruction")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recon.json"))
    args = ap.parse_args(argv)
    model = load_pelvis_model().subdivided(1)
    rng = np.random.default_rng(0)
    c = np.zeros(model.n_modes)
    c[:5] = rng.standard_normal(5)
    truth = model.mesh(c)
    rows = []
    for views in ("AP", "AP+LAT"):
        for size, pix in ((128, 3.2), (256, 1.6)):
            cams = ex.cameras(views, size, pix)
            targets = MeshProjector(truth, "bone", max_hits=64)(cams)[:, 0]
            obj = Objective(targets, cams, model)
            p = ShapePose(model).initial(ex.offset_pose(np.eye(4), model.mean.mean(0), *ex.random_offset(rng)))
            t = median_time(lambda: obj(p), 3 if args.quick else 10)
            rows.append({"what": "iteration (render + gradient)", "views": views, "detector": f"{size}x{size}",
                         "ms": 1000 * t})
            print(f"{'iteration':<22} {views:<7} {size}x{size}: {1000 * t:7.1f} ms", flush=True)
    for size, pix in ((128, 3.2), (256, 1.6)):  # the X-ray loss: two surfaces, shell/core fit, ROI
        cams = ex.cameras("+-30", size, pix)
        obj = Objective(np.zeros((2, size, size)), cams, model, ReconConfig(loss="xray"))
        p = ShapePose(model).initial(ex.offset_pose(np.eye(4), model.mean.mean(0), *ex.random_offset(rng)))
        r = obj.render(ShapePose(model).initial(None, c))
        obj = Objective(r[:, 0] - 0.8 * np.maximum(r[:, 1], 0), cams, model, ReconConfig(loss="xray"))
        obj.prepare(p)
        t = median_time(lambda: obj(p), 3 if args.quick else 10)
        rows.append({"what": "iteration, xray loss", "views": "+-30", "detector": f"{size}x{size}", "ms": 1000 * t})
        print(f"{'iteration, xray loss':<22} {'+-30':<7} {size}x{size}: {1000 * t:7.1f} ms", flush=True)
    for views in (("AP+LAT",) if args.quick else ("AP", "AP+LAT")):
        cams = ex.cameras(views, 256, 1.6)
        targets = MeshProjector(truth, "bone", max_hits=64)(cams)[:, 0]
        times, its = [], []
        for k in range(1 if args.quick else 3):
            init = ex.offset_pose(np.eye(4), model.mean.mean(0), *ex.random_offset(rng))
            res = reconstruct(targets, cams, model, init=init)
            times.append(res.time_s)
            its.append(res.iterations)
        rows.append({"what": "full reconstruction", "views": views, "detector": "256x256",
                     "ms": 1000 * float(np.median(times)), "iterations": int(np.median(its))})
        print(f"{'full reconstruction':<22} {views:<7} 256x256: {np.median(times):7.2f} s "
              f"({int(np.median(its))} iterations)", flush=True)
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   taichi_arch=backend.init().arch, date=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    print(f"machine: {machine}")
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
