"""Time DiffDRR 0.6.1 on the geometry of ``benchmarks/drr.py``, in its own environment.

DiffDRR is not a dependency of the engine: run this with the Python of a separate
virtual environment (``pip install torch==2.13.0 diffdrr==0.6.1``); ``drr.py`` does so
when ``DIFFDRR_PYTHON`` or ``--diffdrr-python`` names that Python.

    python diffdrr_reference.py CT [--detectors 256:2.0 512:1.0] [--methods siddon trilinear]
                                   [--repeats 3] [--save-dir DIR]

Geometry: DiffDRR's README example, ``DRR(read(ct), sdd=1020, height=size, delx=pixel)``
and the pose rotations (0, 0, 0), translations (0, 850, 0), ``euler_angles``/``ZXY``
(``read`` centres the volume at the origin, so the source is 850 mm from the centre of
the volume).  One image per call (batch 1), on the CPU, inside ``torch.no_grad()``;
the median of ``repeats`` calls after one warm-up call.

Prints one JSON line: ``{"version", "torch", "threads", "results": [{"method",
"size", "pixel_size", "seconds", "samples", "image"}]}``; ``samples`` is the number of
trilinear samples (rays x n_points) or null for Siddon (which visits voxels, not
samples); ``image`` is the path of the saved ``.npy`` image when ``--save-dir`` is given.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffdrr import __version__
from diffdrr.data import read
from diffdrr.drr import DRR

N_POINTS = 500  # DiffDRR's default number of samples per ray for its trilinear renderer


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
    ap.add_argument("ct", help="CT volume (NIfTI)")
    ap.add_argument("--detectors", nargs="+", default=["256:2.0"], help="SIZE:PIXEL_MM, square detectors")
    ap.add_argument("--methods", nargs="+", default=["siddon"], choices=["siddon", "trilinear"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--save-dir", help="write each image here as METHOD_SIZE.npy")
    return ap.parse_args(argv)


def render_seconds(drr, repeats):
    """Median seconds of one DiffDRR render of the example pose, after a warm-up call.

    Parameters
    ----------
    drr : diffdrr.drr.DRR
    repeats : int

    Returns
    -------
    seconds : float
    image : numpy.ndarray
        (height, width) float32, the last image rendered.
    """
    rot = torch.tensor([[0.0, 0.0, 0.0]])
    xyz = torch.tensor([[0.0, 850.0, 0.0]])
    times = []
    with torch.no_grad():
        img = drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
        for _ in range(repeats):
            t = time.perf_counter()
            img = drr(rot, xyz, parameterization="euler_angles", convention="ZXY")
            times.append(time.perf_counter() - t)
    return float(np.median(times)), img[0, 0].numpy().astype(np.float32)


def main(argv=None):
    """Time every (detector, method) pair and print the results as one JSON line."""
    args = parse_args(argv)
    subject = read(args.ct)
    results = []
    for det in args.detectors:
        size, pixel = int(det.split(":")[0]), float(det.split(":")[1])
        for method in args.methods:
            drr = DRR(subject, sdd=1020.0, height=size, delx=pixel, renderer=method)
            seconds, img = render_seconds(drr, args.repeats)
            path = None
            if args.save_dir:
                path = str(Path(args.save_dir) / f"{method}_{size}.npy")
                np.save(path, img)
            results.append(dict(method=method, size=size, pixel_size=pixel, seconds=seconds, image=path,
                                samples=size * size * N_POINTS if method == "trilinear" else None))
    print(json.dumps(dict(version=__version__, torch=torch.__version__, threads=torch.get_num_threads(),
                          results=results)))


if __name__ == "__main__":
    main()
