"""Render one fixed scene on the backend named on the command line and save everything to an .npz.

    python tests/backend_scene.py --arch cpu --out scene_cpu.npz

Run by tests/test_backends.py once per backend (a process can initialise Taichi only once), which compares the
files.  The scene: the shipped pelvis phantom (assets/pelvis_phantom.nii.gz, 240 x 174 x 260 voxels: 124 MiB
of float32 material densities, one buffer just under Vulkan's guaranteed 128 MiB), a titanium sphere (icosphere) inside it, two C-arm views.  Saved: the volume projector's per-material
path lengths (both views, one batched launch), the mesh projector's path lengths by rasterisation and by BVH and
the vertex gradient of a fixed loss, and ``engine.simulate`` on the first view (fluoro90 spectrum, scatter, Poisson
and electronic noise with a fixed seed): image, noiseless image, primary, scatter, path lengths, quanta per pixel.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 7
PHOTONS = 2e4  # detected photons per unattenuated pixel: a fluoroscopy frame's dose at 2 mm pixels
ELECTRONIC_STD = 2.0  # photon equivalents


def render(arch: str) -> dict:
    from engine import backend

    got = backend.init(arch=arch, float_bits=32)  # before anything else touches Taichi
    import engine
    from engine.mesh import MeshProjector, icosphere
    from engine.physics import NoiseModel
    from engine.volume import Volume, VolumeProjector, load_ct

    ct = load_ct(ROOT / "assets" / "pelvis_phantom.nii.gz")
    vol = Volume.from_ct(ct)
    proj = VolumeProjector(vol)
    # a titanium ball (r = 12 mm) inside the pelvis, off the centre, so that its rays also cross bone
    ball = icosphere(12.0, 3, center=np.asarray(ct.center) + np.array([25.0, 10.0, -15.0]))
    cams = [engine.carm(primary=20, secondary=-10, sid=750, sdd=1150, isocenter=ct.center, rows=120, cols=160,
                        pixel_size=2.0),
            engine.carm(primary=-75, secondary=15, sid=750, sdd=1150, isocenter=ct.center, rows=120, cols=160,
                        pixel_size=2.0)]
    out = {"arch": np.array(got.arch), "shape": np.array(ct.shape)}
    times = {}

    t = time.perf_counter()
    out["volume_paths"] = proj(cams)  # (2, 3, rows, cols) g/cm^2
    times["volume"] = time.perf_counter() - t

    raster = MeshProjector([ball], ["titanium"])
    bvh = MeshProjector([ball], ["titanium"], method="bvh")
    t = time.perf_counter()
    out["mesh_raster"], raster_state = raster.forward(cams)  # (2, 1, rows, cols) mm
    times["mesh_raster"] = time.perf_counter() - t
    out["mesh_bvh"] = bvh(cams)
    # a fixed loss: path lengths weighted by a smooth ramp over the detector
    rows, cols = cams[0].rows, cams[0].cols
    ramp = (np.linspace(0.5, 1.5, cols)[None, :] * np.linspace(1.0, 2.0, rows)[:, None]).astype(np.float32)
    out["mesh_vjp"] = raster.vjp(raster_state, np.broadcast_to(ramp, out["mesh_raster"].shape))  # (V, 3)

    t = time.perf_counter()
    cfg = engine.XrayConfig(spectrum="fluoro90", scatter=True,
                            noise=NoiseModel(photons=PHOTONS, electronic_std=ELECTRONIC_STD))
    sim = engine.simulate(proj, cams[0], raster, cfg, seed=SEED, return_all=True)  # view 0 of each field below
    times["simulate"] = time.perf_counter() - t
    out.update(image=sim.image[0], noiseless=sim.noiseless[0], primary=sim.primary[0], scatter=sim.scatter[0],
               sim_paths=sim.paths[0], quanta=np.array(sim.quanta_per_pixel[0]), spr=np.array(sim.spr[0]),
               materials=np.array(sim.materials))
    out["times"] = np.array(json.dumps(times))
    return out


def render_ct(arch: str, path: Path) -> dict:
    """A real CT (e.g. the 512 x 512 x 133 chest CT: 418 MB of densities, 4 bricks on Vulkan) by the volume
    projector: plane and midpoint sampling, AP and an oblique view, 128 x 128."""
    from engine import backend

    got = backend.init(arch=arch, float_bits=32)
    import engine
    from engine.volume import Volume, VolumeProjector, load_ct

    ct = load_ct(path)
    vol = Volume.from_ct(ct)
    cams = [engine.carm(primary=p, secondary=s, sid=850, sdd=1020, isocenter=ct.center, rows=128, cols=128,
                        pixel_size=4.0) for p, s in ((0, 0), (50, -20))]
    out = {"arch": np.array(got.arch), "shape": np.array(ct.shape)}
    for sampling in ("planes", "midpoint"):
        proj = VolumeProjector(vol, sampling=sampling)
        out[f"ct_{sampling}"] = proj(cams)
        out["n_bricks"] = np.array(proj.n_bricks)
        proj.close()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=["cpu", "cuda", "vulkan"])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ct", type=Path, help="render this CT file instead of the fixed scene")
    a = ap.parse_args(argv)
    out = render_ct(a.arch, a.ct) if a.ct else render(a.arch)
    np.savez(a.out, **out)
    print(f"{a.arch}: {json.loads(str(out['times'])) if 'times' in out else 'done'}")


if __name__ == "__main__":
    main()
