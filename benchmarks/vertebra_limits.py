"""What limits tier 3a (a chest-CT vertebra from two views): recon_eval's tier-3a trials (same held-out
vertebrae, models, starts and settings) on targets changed one factor at a time.

Rows (targets):

- ``benchmark``: recon_eval's own: X-rays of the whole CT at a fluoroscopy frame's dose (250 quanta per
  0.8 mm pixel behind the spine), with scatter;
- ``dose x100``: the same at a hundred times the dose (a radiograph's);
- ``vertebrae only``: every voxel of the body that is not a vertebra set to 40 HU (soft tissue): no ribs,
  lungs, heart, great vessels, sternum or scapulae, the body's outline kept; fluoroscopy dose, scatter;
- ``vertebrae only, ideal``: and no scatter, no noise;
- ``vertebrae only, ideal, from the true pose``: started at the true pose.

Each row is the tier's success rate (HD95 < 8 mm) and distribution.  Needs the chest CT
(``$ENGINE_DATA/chest_ct``, default ``../shared/data/chest_ct``).  Prints a table, writes JSON.

    python benchmarks/vertebra_limits.py [--views AP+LAT] [--trials 10] [--rows benchmark ...] [--out ...]
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import recon_eval  # noqa: E402
from _common import CHEST_CT  # noqa: E402
from recon_eval import ROOT, SUCCESS  # noqa: E402

from research import experiments as ex  # noqa: E402

SOFT_TISSUE_HU = 40.0
BODY_HU = -500.0  # above: the body (air and lung below; the lungs are inside the filled outline)


def vertebrae_only(hu, labels, ids):
    """HU with every voxel inside the body's outline that is not a vertebra set to soft tissue.  The outline:
    voxels above -500 HU (the table too, where the CT has one), holes filled in each slice across the third
    index axis (axial in this CT)."""
    body = hu > BODY_HU
    for z in range(body.shape[2]):
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    vertebra = np.isin(labels, [v for name, v in ids.items() if name.startswith("vertebrae_")])
    out = hu.copy()
    out[body & ~vertebra] = SOFT_TISSUE_HU
    return out


ROWS = {  # name: (recon_eval.tier3a options, max offset)
    "benchmark": ({}, recon_eval.MAX_OFFSET),
    "dose x100": ({"quanta": 25000.0}, recon_eval.MAX_OFFSET),
    "vertebrae only": ({"ct_change": vertebrae_only}, recon_eval.MAX_OFFSET),
    "vertebrae only, ideal": ({"ct_change": vertebrae_only, "quanta": None, "scatter": False},
                              recon_eval.MAX_OFFSET),
    "vertebrae only, ideal, from the true pose": ({"ct_change": vertebrae_only, "quanta": None,
                                                   "scatter": False}, (0.0, 0.0)),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", nargs="+", default=["AP+LAT"], choices=sorted(ex.VIEWS))
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vertebra_limits.json"))
    args = ap.parse_args(argv)
    if not (CHEST_CT / "ct.nii.gz").is_file():
        sys.exit(f"the chest CT is not at {CHEST_CT} (set ENGINE_DATA to the folder that holds chest_ct/)")
    t0 = time.perf_counter()
    trials = []
    for views in args.views:
        for row in args.rows:
            options, max_offset = ROWS[row]
            rng = np.random.default_rng([args.seed, len(views), ord("3")])  # recon_eval's tier-3a starts
            trials += recon_eval.tier3a(args.trials, views, args.size, rng, {}, max_offset, label=f" [{row}]",
                                        **options)
    rows = ex.summarise(trials, SUCCESS["3a chest CT vertebra"])
    print()
    print(ex.table(rows))
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   date=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    print(f"machine: {machine}; total {time.perf_counter() - t0:.0f} s")
    Path(args.out).write_text(json.dumps({"machine": machine, "summary": rows, "trials": [t.row() for t in trials]},
                                         indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
