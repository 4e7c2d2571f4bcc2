"""Reconstruct a held-out real pelvis from 1 and 2 X-ray views with the LLP26 shape model.

The pelvis of one LLP26 subject (default 0) is left out of the shape model, which
is rebuilt from the other 25 (leave one out).  Target images of it are rendered,
either by the mesh renderer (``--target mesh``: path length through bone; the
held-out-shape experiment) or as simulated fluoroscopy (``--target xray``: the
pelvis voxelised into a CT phantom with soft tissue and bowel gas, polychromatic
spectrum, scatter and Poisson noise; no inverse crime).  No pelvis CT and no
real fluoroscopy exist here: these are real pelvis shapes in synthetic images.

The shape is reconstructed from the AP view alone and from two views (AP + lateral for mesh targets,
+-30 degrees for X-rays), each
from the same initial pose (10 degrees / 20 mm off), and the demo writes, under
``--out`` (default ``out/reconstruct_pelvis/``): the targets, before/after
overlays, loss curves, error-coloured 3D pictures, the meshes (PLY), and prints
the metrics table.

    python demos/reconstruct_pelvis.py [--subject 0] [--target mesh|xray] [--size 256] [--out DIR]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import metrics  # noqa: E402
from engine.imageio import save_image  # noqa: E402
from engine.mesh import Mesh, MeshProjector, subdivide  # noqa: E402
from engine.recon import ReconConfig, reconstruct  # noqa: E402
from engine.recon.figures import save_error_mesh  # noqa: E402
from engine.recon.overlay import save_loss_curve  # noqa: E402
from engine.ssm import build_pelvis_model, llp26_population  # noqa: E402
from research import experiments as ex  # noqa: E402


def targets_for(kind, subject, shapes, faces, cams, seed=0):
    """Target images (line integrals / path lengths) and the truth mesh."""
    if kind == "mesh":
        v, f = subdivide(shapes[subject], faces, 1)
        truth = Mesh(vertices=v, faces=f)
        return MeshProjector(truth, "bone", max_hits=64)(cams)[:, 0].astype(np.float64), truth, ReconConfig(loss="mse")
    from engine.phantoms.pelvis_ct import make_pelvis_phantom, pelvis_mesh
    from engine.volume import CT, Volume

    hu, aff = make_pelvis_phantom(1.5, seed=subject, coarse_vertices=shapes[subject])
    vol = Volume.from_ct(CT(hu=hu.astype(np.float32), world_from_index=aff))
    v, f = pelvis_mesh(2, coarse_vertices=shapes[subject])
    quanta = 1000.0 * (cams[0].pixel_size / 1.6) ** 2  # the benchmark's dose per detector area
    return (ex.xray_targets(vol, cams, quanta=quanta, seed=seed), Mesh(vertices=v, faces=f),
            ReconConfig.xray(cams[0].rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=0, help="LLP26 subject to hold out (0..25)")
    ap.add_argument("--target", choices=("mesh", "xray"), default="mesh")
    ap.add_argument("--size", type=int, default=256, help="detector pixels per side")
    ap.add_argument("--out", default=str(ROOT / "out" / "reconstruct_pelvis"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--views", choices=("AP+LAT", "+-30"), default=None,
                    help="the two-view set (default AP+LAT for mesh targets, +-30 for X-rays: through a pelvis "
                         "the lateral X-ray is mostly scatter and noise)")
    args = ap.parse_args(argv)
    args.views = args.views or ("AP+LAT" if args.target == "mesh" else "+-30")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes, faces = llp26_population()
    coarse = build_pelvis_model(exclude=[args.subject])
    truth_pose = ex.true_pose(coarse.mean, shapes[args.subject])  # the start is drawn around it
    model = coarse.subdivided(1)
    print(f"{model}; held out: subject {args.subject}; targets: {args.target}")
    rng = np.random.default_rng(args.seed)
    init = ex.offset_pose(truth_pose, model.mean.mean(0), *ex.random_offset(rng))
    rows = []
    pix = 1.6 * 256 / args.size
    for views in ("AP", args.views):
        cams = ex.cameras(views, args.size, pix)
        targets, truth, config = targets_for(args.target, args.subject, shapes, faces, cams, seed=args.seed)
        tag = views.replace("+-", "pm").replace("+", "_").lower()
        save_image(out / f"target_{tag}.tiff", targets)
        t0 = time.perf_counter()
        res = reconstruct(targets, cams, model, init, config, progress=True)
        dt = time.perf_counter() - t0
        m0 = metrics.surface_metrics(res.initial_mesh, truth)
        m = metrics.surface_metrics(res.mesh, truth)
        rows.append((views, m0, m, dt, res.iterations))
        res.save_overlay(out / f"overlay_{tag}.png", targets, cams)
        save_loss_curve(out / f"loss_{tag}.png", res)
        res.save_mesh(out / f"recon_{tag}.ply")
        save_error_mesh(out / f"error_{tag}.png", res.mesh, truth,
                        title=f"{views}: ASSD {m['assd']:.2f} mm, HD95 {m['hd95']:.2f} mm, HD {m['hd']:.1f} mm")
    print(f"\n{'views':<8} {'':>8} {'HD mm':>7} {'HD95 mm':>8} {'ASSD mm':>8} {'time s':>7} {'iters':>6}")
    for views, m0, m, dt, its in rows:
        print(f"{views:<8} {'initial':>8} {m0['hd']:7.1f} {m0['hd95']:8.2f} {m0['assd']:8.2f}")
        print(f"{'':<8} {'result':>8} {m['hd']:7.1f} {m['hd95']:8.2f} {m['assd']:8.2f} {dt:7.1f} {its:6d}")
    (out / "metrics.json").write_text(json.dumps([{"views": v, "initial": a, "result": b, "time_s": t,
                                                   "iterations": i} for v, a, b, t, i in rows], indent=1))
    print(f"\nwrote overlays, loss curves, error pictures and meshes to {out}/")


if __name__ == "__main__":
    main()
