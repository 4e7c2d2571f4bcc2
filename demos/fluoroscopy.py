"""Fluoroscopy-like images of the shipped pelvis phantom and (if present) the real chest CT.

Writes ``out/fluoroscopy_<name>.png``: a labelled panel of one AP view rendered five
ways: density line integral (g/cm^2), monochromatic 60 keV, polychromatic 90 kVp,
90 kVp with scatter, and 90 kVp with scatter and quantum noise.  All panels show
-ln(I/I0) (attenuation bright, as on a radiograph), each windowed on its own.  The physics
runs on the device by default (``--physics numpy`` for the NumPy chain).

Run from the repository root:  python demos/fluoroscopy.py [--out DIR] [--size N] [--physics device|numpy]
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "demos"))

import engine  # noqa: E402
from drr_pelvis import labelled_panel  # noqa: E402
from engine.imageio import window_to_uint8  # noqa: E402
from engine.physics import ScatterModel  # noqa: E402

CASES = {"pelvis_phantom": ROOT / "assets" / "pelvis_phantom.nii.gz",
         "chest_ct": Path(os.environ.get("ENGINE_DATA") or ROOT.parent / "shared" / "data") / "chest_ct" / "ct.nii.gz"}


def render_panel(ct_path: Path, size: int, photons: float, physics: str = "device") -> np.ndarray:
    ct = engine.load_ct(ct_path)
    proj = engine.VolumeProjector(engine.Volume.from_ct(ct))
    cam = engine.carm(sid=750, sdd=1150, isocenter=ct.center, rows=size, cols=size, pixel_size=430.0 / size)
    images, titles = [], []
    t = time.perf_counter()
    images.append(proj(cam)[0].sum(0))  # every render has a view axis: view 0
    titles.append("density line integral")
    base = engine.XrayConfig(output="line_integral", physics=physics)
    for title, config in (("mono 60 keV", base.replace(mono_kev=60.0)),
                          ("poly 90 kVp", base.replace(spectrum="fluoro90")),
                          ("90 kVp + scatter", base.replace(spectrum="fluoro90", scatter=ScatterModel(spr=0.6))),
                          (f"+ noise ({photons:g} photons/px)",
                           base.replace(spectrum="fluoro90", scatter=ScatterModel(spr=0.6), noise=photons))):
        images.append(engine.simulate(proj, cam, config=config, seed=0)[0])
        titles.append(title)
    print(f"{ct_path.name}: 5 renderings of {size}x{size} ({physics} physics) in {time.perf_counter() - t:.2f} s")
    return labelled_panel([window_to_uint8(im) for im in images], titles)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out"))
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--photons", type=float, default=3000.0, help="photons per pixel, unattenuated")
    ap.add_argument("--physics", choices=("device", "numpy"), default="device")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from skimage.io import imsave

    for name, path in CASES.items():
        if not path.is_file():
            print(f"skipping {name}: {path} not found")
            continue
        p = out / f"fluoroscopy_{name}.png"
        imsave(p, render_panel(path, args.size, args.photons, args.physics), check_contrast=False)
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
