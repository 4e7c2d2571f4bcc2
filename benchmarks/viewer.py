"""Viewer frame rate: frames per second of the live viewer by detector resolution and settings, one backend per
process (``--arch``; ``--all`` runs cpu and vulkan in subprocesses).

Scene: the viewer's default (the shipped pelvis phantom + a titanium rod), 90 kVp polychromatic.  A frame is
what the viewer does per mouse move: the X-ray at the given resolution (a Simulator built once per setting),
the overview, the composition and the upload to the GGUI canvas (headless window).  Orbit steps of 2 degrees
between frames, as a drag does.  Targets (issue 20): >= 5 fps at 128 x 128 while dragging on a 2-core CPU
(no scatter), >= 20 fps at 256 x 256 with scatter and noise on a GPU.

    python benchmarks/viewer.py [--all] [--arch cpu|vulkan] [--out benchmarks/results/viewer.json]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CASES = [(128, False, False), (256, False, False), (256, True, True), (512, False, False)]


def measure(arch: str, frames: int) -> list:
    from engine import backend

    backend.init(arch)
    import dataclasses

    from engine.viewer import default_scene, open_viewer

    volume, meshes, _ = default_scene()
    viewer = open_viewer(volume, meshes, show_window=False, out_dir=tempfile.mkdtemp(prefix="engine_viewer_bench_"))
    rows = []
    for res, scatter, noise in CASES:
        viewer.state = dataclasses.replace(viewer.state, resolution=res, scatter=scatter, noise=noise)
        viewer.render()  # warm-up: compilation, the Simulator of this setting
        viewer.draw()
        times = []
        for i in range(frames):
            viewer.state = dataclasses.replace(viewer.state, primary=viewer.state.primary + 2.0)
            t = time.perf_counter()
            viewer.render()
            viewer.draw()
            times.append(time.perf_counter() - t)
        med = float(np.median(times))
        rows.append(dict(arch=backend.current().arch, resolution=res, scatter=scatter, noise=noise,
                         ms_per_frame=med * 1e3, fps=1.0 / med))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="cpu", choices=["cpu", "vulkan", "cuda"])
    ap.add_argument("--all", action="store_true", help="cpu and vulkan, each in its own process")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "viewer.json"))
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from _common import write_results

    if args.all:
        rows = []
        for arch in ("cpu", "vulkan"):
            r = subprocess.run([sys.executable, __file__, "--arch", arch, "--frames", str(args.frames),
                                "--json-only"], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{arch}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                continue
            rows += json.loads(r.stdout.strip().splitlines()[-1])
    else:
        rows = measure(args.arch, args.frames)
        if args.json_only:
            print(json.dumps(rows))
            return
    print(f"{'backend':<8}{'pixels':>8}{'scatter':>9}{'noise':>7}{'ms/frame':>10}{'fps':>7}")
    for r in rows:
        print(f"{r['arch']:<8}{r['resolution']:>8}{str(r['scatter']):>9}{str(r['noise']):>7}"
              f"{r['ms_per_frame']:>10.1f}{r['fps']:>7.1f}")
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
