"""Time DiffDRR (a separate environment: pip install torch==2.13.0 diffdrr==0.6.1) on the same geometry.

Usage (run by benchmarks/drr.py): python diffdrr_reference.py CT SIZE PIXEL_MM REPEATS
Prints one JSON line: {"version", "method", "seconds", "note"}.
DiffDRR's README example pose: rotations (0, 0, 0), translations (0, 850, 0), ZXY Euler angles, sdd 1020 mm.
Its default Siddon renderer; on the CPU, no gradients (torch.no_grad).
"""
import json
import sys
import time

import numpy as np
import torch
from diffdrr import __version__
from diffdrr.data import read
from diffdrr.drr import DRR


def main():
    ct, size, pixel, repeats = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    subject = read(ct)
    drr = DRR(subject, sdd=1020.0, height=size, delx=pixel)
    rot = torch.tensor([[0.0, 0.0, 0.0]])
    xyz = torch.tensor([[0.0, 850.0, 0.0]])
    with torch.no_grad():
        drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
            ts.append(time.perf_counter() - t)
    print(json.dumps({"version": __version__, "method": "siddon", "seconds": float(np.median(ts)),
                      "note": f"torch {torch.__version__}, {torch.get_num_threads()} threads"}))


if __name__ == "__main__":
    main()
