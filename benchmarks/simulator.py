"""The Simulator (scene and physics built once) against per-call ``simulate`` and the NumPy physics, one run.

Scene: the chest CT (or the shipped pelvis phantom where it is absent) with a titanium screw-sized rod (an
ellipsoid, 6 x 6 x 40 mm, 1,280 triangles) at its centre; fluoro90 spectrum (32 bins), scatter, noise; AP C-arm, 256 x 256 pixels (and 128 x 128).
Rows, per image:

- ``simulate numpy``: ``engine.simulate(..., physics="numpy")`` (projectors to the host, NumPy physics);
- ``simulate device``: ``engine.simulate`` (a Simulator built per call: new chain, uploads each frame);
- ``Simulator``: built once, one camera per call; ``Simulator batch 8``: 8 cameras per call;
- ``Simulator fwd+vjp``: forward with saved state, then the VJP (CT pose + mesh vertices) of a random image
  gradient.

Ratios are to ``simulate numpy`` measured in the same run.

    python benchmarks/simulator.py [--quick] [--out benchmarks/results/simulator.json]
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
from engine.mesh import MeshProjector, icosphere, make_mesh  # noqa: E402
from engine.volume import Volume, VolumeProjector, load_ct  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "simulator.json"))
    args = ap.parse_args(argv)
    engine.backend.init()
    name, path = next((n, p) for n, p in CASES.items() if p.is_file())
    ct = load_ct(path)
    proj = VolumeProjector(Volume.from_ct(ct))
    ball = icosphere(1.0, 3)
    screw = make_mesh(ball.vertices * [3.0, 3.0, 20.0] + ct.center, ball.faces)
    mp = MeshProjector([screw], ["titanium"], supersample=2)
    config = engine.XrayConfig(spectrum="fluoro90", scatter=True, noise=2e4)
    sim = engine.Simulator(proj, mp, config)
    rng = np.random.default_rng(0)
    rows = []
    reps = 2 if args.quick else 5
    for size in (128, 256):
        cam = camera(ct, size, 512.0 / size)
        cams = batch_cameras(cam, ct.center)
        img, state = sim.forward(cam, seed=1)
        g = rng.standard_normal(img.shape)

        def fwd_vjp():
            _, s = sim.forward(cam, seed=1)
            return sim.vjp(s, g)

        cases = {"simulate numpy": lambda: engine.simulate(proj, cam, mp, config.replace(physics="numpy"), seed=1),
                 "simulate device": lambda: engine.simulate(proj, cam, mp, config, seed=1),
                 "Simulator": lambda: sim(cam, seed=1),
                 "Simulator batch 8": lambda: sim(cams, seed=1),
                 "Simulator fwd+vjp": fwd_vjp}
        t = timings(cases, reps)
        base = float(np.median(t["simulate numpy"]))
        for k, v in t.items():
            n = len(cams) if "batch" in k else 1
            med = float(np.median(v))
            rows.append(dict(volume=name, detector=f"{size}x{size}", case=k, ms_per_image=med / n * 1e3,
                             ratio_to_numpy=med / n / base))
    print(f"{'volume':<15}{'detector':<10}{'case':<20}{'ms/img':>9}{'x numpy':>9}")
    for r in rows:
        print(f"{r['volume']:<15}{r['detector']:<10}{r['case']:<20}{r['ms_per_image']:>9.1f}"
              f"{r['ratio_to_numpy']:>9.2f}")
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
