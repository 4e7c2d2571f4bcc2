"""Start-up costs: time to the first image of a fresh process (cold and warm Taichi offline cache), and of a
second projector in the same process.

A fresh process pays Python imports, Taichi's start, the volume's upload and the compilation of every
kernel it launches; Taichi's offline cache (on, ``engine.backend``) keeps compiled kernels on disk, so a
second process compiles nothing.  Inside a process the kernels are compiled once (they take ndarrays:
:mod:`engine.volume.march`, :mod:`engine.mesh.raster`), so a second projector of the same kind costs its
upload plus a render.  Scene: the shipped pelvis phantom (240 x 174 x 260 since the box-filtered phantom; 247 x 180 x 207 before), a 256 x 256 AP view, and the
same view of an icosphere (5,120 triangles) by the mesh projector with its vertex gradient.

    python benchmarks/startup.py [--out benchmarks/results/startup.json] [--arch cpu|vulkan]

Targets (issue 16): a second projector of the same kind renders its first image in <= 50 ms on the CPU
(upload excluded).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = ROOT / "assets" / "pelvis_phantom.nii.gz"


def child(arch):
    """Run in a fresh process: time each stage to the first images; print one JSON line."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import engine
    from engine.mesh import MeshProjector, icosphere
    from engine.volume import Volume, VolumeProjector, load_ct

    out = {"import_s": time.perf_counter() - t0}
    t = time.perf_counter()
    engine.backend.init(arch)
    out["taichi_init_s"] = time.perf_counter() - t
    ct = load_ct(PHANTOM)
    vol = Volume.from_ct(ct)
    cam = engine.carm(sid=750, sdd=1150, rows=256, cols=256, pixel_size=1.8, isocenter=ct.center)
    t = time.perf_counter()
    proj = VolumeProjector(vol)
    out["volume_upload_s"] = time.perf_counter() - t
    t = time.perf_counter()
    proj(cam)
    out["volume_first_image_s"] = time.perf_counter() - t
    t = time.perf_counter()
    proj(cam)
    out["volume_next_image_s"] = time.perf_counter() - t
    ball = icosphere(60.0, 4, center=ct.center)
    t = time.perf_counter()
    mp = MeshProjector(ball, "bone")
    img, state = mp.forward(cam)
    mp.vjp(state, np.ones_like(img))
    out["mesh_first_image_and_gradient_s"] = time.perf_counter() - t
    out["process_to_first_images_s"] = time.perf_counter() - t0

    # a second projector of each kind, in this process: construction (upload) and first image apart
    t = time.perf_counter()
    proj2 = VolumeProjector(vol)
    out["second_volume_projector_upload_s"] = time.perf_counter() - t
    t = time.perf_counter()
    proj2(cam)
    out["second_volume_projector_first_image_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mp2 = MeshProjector(icosphere(50.0, 4, center=ct.center), "bone")
    out["second_mesh_projector_construct_s"] = time.perf_counter() - t
    t = time.perf_counter()
    img, state = mp2.forward(cam)
    mp2.vjp(state, np.ones_like(img))
    out["second_mesh_projector_first_image_and_gradient_s"] = time.perf_counter() - t
    out["arch"] = engine.backend.current().arch
    print(json.dumps(out))


def run(arch, cache_dir):
    env = dict(os.environ, TI_OFFLINE_CACHE_FILE_PATH=str(cache_dir))
    cmd = [sys.executable, __file__, "--child"] + (["--arch", arch] if arch else [])
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"child failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    ap.add_argument("--arch", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.arch)
    with tempfile.TemporaryDirectory() as cache:
        cold = run(args.arch, cache)  # an empty offline cache: everything compiles
        warm = run(args.arch, cache)  # the same cache: nothing compiles
    keys = [k for k in cold if k.endswith("_s")]
    print(f"{'stage':<52}{'cold cache':>12}{'warm cache':>12}   (seconds; arch {cold['arch']})")
    for k in keys:
        print(f"{k:<52}{cold[k]:>12.3f}{warm[k]:>12.3f}")
    import platform

    res = dict(machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(),
                            date=time.strftime("%Y-%m-%d %H:%M:%S %z")), cold=cold, warm=warm,
               target_second_projector_first_image_s=0.05)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
