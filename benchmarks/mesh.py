"""Mesh distance maps: forward and forward+backward times, BVH build and refit, vs open3d ray casting.

Meshes: UV spheres of 960, 19,880 and 199,808 triangles (open3d ``create_sphere``),
radius 80 mm, seen by a C-arm (sid 500, sdd 800 mm) on 256x256 and 512x512 detectors
covering 300 mm.  Reference in the same run: open3d's ``RaycastingScene`` (Embree)
counting all intersections of the same rays (a full traversal, as the distance map needs).

    python benchmarks/mesh.py [--quick] [--out benchmarks/results/mesh.json]
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
from _common import median_time  # noqa: E402
from engine.mesh import MeshProjector, make_mesh  # noqa: E402
from engine.mesh.bvh import build_bvh  # noqa: E402


def uv_sphere(resolution: int, radius: float = 80.0):
    import open3d as o3d

    m = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=resolution)
    return make_mesh(np.asarray(m.vertices), np.asarray(m.triangles))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mesh.json"))
    args = ap.parse_args(argv)
    import open3d as o3d

    backend = engine.backend.init()
    repeats = 3 if args.quick else 7
    rows = []
    for res in ((16, 71) if args.quick else (16, 71, 224)):  # 960, 19,880 and 199,808 triangles
        mesh = uv_sphere(res)
        nf = len(mesh.faces)
        t = time.perf_counter()
        build_bvh(mesh.vertices, mesh.faces)
        t_build = time.perf_counter() - t
        mp = MeshProjector(mesh, "bone")
        moved = mesh.vertices * 1.001
        t_refit = median_time(lambda: mp.bvh.refit(moved, mesh.faces), repeats)
        t_set = median_time(lambda: mp.set_vertices(moved), repeats)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                            o3d.core.Tensor(mesh.faces.astype(np.uint32)))
        for size in (256, 512):
            cam = engine.carm(sid=500, sdd=800, rows=size, cols=size, pixel_size=300.0 / size)
            t_fwd = median_time(lambda: mp(cam), repeats)
            g = np.ones((1, 1, size, size))

            def fwd_bwd():
                mp(cam)
                return mp.vjp(g)

            t_fb = median_time(fwd_bwd, repeats)
            src, tgt = cam.rays()
            d = tgt.reshape(-1, 3) - src
            rays = o3d.core.Tensor(np.concatenate([np.broadcast_to(src, d.shape), d], 1).astype(np.float32))
            t_o3d = median_time(lambda: scene.count_intersections(rays), repeats)
            rows.append(dict(triangles=nf, detector=f"{size}x{size}", forward_ms=t_fwd * 1e3,
                             forward_backward_ms=t_fb * 1e3, open3d_count_ms=t_o3d * 1e3,
                             bvh_build_ms=t_build * 1e3, bvh_refit_ms=t_refit * 1e3,
                             set_vertices_ms=t_set * 1e3))
    hdr = (f"{'triangles':>10}{'detector':>10}{'fwd ms':>9}{'fwd+bwd':>9}{'open3d':>9}{'build':>9}{'refit':>8}"
           f"{'set_v':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['triangles']:>10}{r['detector']:>10}{r['forward_ms']:>9.1f}{r['forward_backward_ms']:>9.1f}"
              f"{r['open3d_count_ms']:>9.1f}{r['bvh_build_ms']:>9.1f}{r['bvh_refit_ms']:>8.1f}"
              f"{r['set_vertices_ms']:>8.1f}")
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   taichi_arch=backend.arch, date=time.strftime("%Y-%m-%d %H:%M:%S"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))
    print(f"machine: {machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
