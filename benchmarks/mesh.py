"""Mesh distance maps: forward and forward+backward times (rasteriser and BVH traversal), BVH build and
refit, vs open3d ray casting.

Meshes: UV spheres of 960, 19,880 and 199,808 triangles (open3d ``create_sphere``),
radius 80 mm, seen by a C-arm (sid 500, sdd 800 mm) on 256x256 and 512x512 detectors
covering 300 mm.  Reference in the same run: open3d's ``RaycastingScene`` (Embree)
counting all intersections of the same rays (a full traversal, as the distance map needs).
Refit: ``set_vertices`` (upload) + the device refit kernels, synchronised; the host NumPy
refit of the same tree alongside.

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
    ti = engine.backend.ti_module()
    repeats = 3 if args.quick else 7
    rows = []
    for res in ((16, 71) if args.quick else (16, 71, 224)):  # 960, 19,880 and 199,808 triangles
        mesh = uv_sphere(res)
        nf = len(mesh.faces)
        t = time.perf_counter()
        host_bvh = build_bvh(mesh.vertices, mesh.faces)
        t_build = time.perf_counter() - t
        moved = mesh.vertices * 1.001
        mps = {m: MeshProjector(mesh, "bone", method=m) for m in ("raster", "bvh")}
        bvh_mp = mps["bvh"]
        t_host_refit = median_time(lambda: host_bvh.refit(moved, mesh.faces), repeats)

        def device_refit():
            bvh_mp.set_vertices(moved)
            bvh_mp.tree.refit(bvh_mp._verts, bvh_mp._pad)
            ti.sync()

        t_refit = median_time(device_refit, repeats)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                            o3d.core.Tensor(mesh.faces.astype(np.uint32)))
        for size in (256, 512):
            cam = engine.carm(sid=500, sdd=800, rows=size, cols=size, pixel_size=300.0 / size)
            g = np.ones((1, 1, size, size))
            row = dict(triangles=nf, detector=f"{size}x{size}")
            for method, mp in mps.items():
                row[f"{method}_forward_ms"] = median_time(lambda: mp(cam, record=False), repeats) * 1e3

                def fwd_bwd():
                    _, state = mp.forward(cam)
                    return mp.vjp(state, g)

                row[f"{method}_forward_backward_ms"] = median_time(fwd_bwd, repeats) * 1e3
            src, tgt = cam.rays()
            d = tgt.reshape(-1, 3) - src
            rays = o3d.core.Tensor(np.concatenate([np.broadcast_to(src, d.shape), d], 1).astype(np.float32))
            row.update(open3d_count_ms=median_time(lambda: scene.count_intersections(rays), repeats) * 1e3,
                       bvh_build_ms=t_build * 1e3, bvh_refit_ms=t_refit * 1e3, host_refit_ms=t_host_refit * 1e3)
            rows.append(row)
    cols = [("triangles", "triangles", "d"), ("detector", "detector", "s"), ("raster_forward_ms", "raster", ".1f"),
            ("raster_forward_backward_ms", "r fwd+bwd", ".1f"), ("bvh_forward_ms", "bvh", ".1f"),
            ("bvh_forward_backward_ms", "b fwd+bwd", ".1f"), ("open3d_count_ms", "open3d", ".1f"),
            ("bvh_build_ms", "build", ".0f"), ("bvh_refit_ms", "refit", ".2f"), ("host_refit_ms", "host refit", ".2f")]
    print("ms per frame (forward = no hit recording; fwd+bwd = recorded forward + vertex VJP)")
    print("".join(f"{h:>11}" for _, h, _ in cols))
    for r in rows:
        print("".join(f"{r[k]:>11{f}}" for k, _, f in cols))
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   taichi_arch=backend.arch, date=time.strftime("%Y-%m-%d %H:%M:%S"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))
    print(f"machine: {machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
