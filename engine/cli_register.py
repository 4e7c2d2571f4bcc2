"""``engine register``: rigid 2D/3D registration of a CT to X-ray images (see :mod:`engine.registration`)."""
import json
import sys
import time
from pathlib import Path

import numpy as np

REGISTER_HELP = """\
Register a CT to one or more X-ray images whose cameras are known.

Each --image is an X-ray as attenuation -ln(I/I0) (NPY or TIFF, float), with the camera it was taken with
(--camera JSON, as written by 'engine drr --save-camera'), in the same order.  The CT's rigid pose is found by
gradient descent from --start (rotation vector in degrees, translation in mm, about the CT's centre; default 0),
coarse to fine.  Writes a JSON result (pose, 4x4 move of the CT in the world frame, loss curve, time) and, with
--overlay, a PNG per view: the X-ray, the DRR at the start and the DRR registered.

example:
  engine register ct.nii.gz --image ap.npy --camera ap.json --image lat.npy --camera lat.json --out reg.json
"""


def add_command(sub):
    p = sub.add_parser("register", help="register a CT to X-ray images (2D/3D)", description=REGISTER_HELP,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("ct", help="CT: NIfTI file or DICOM folder (HU)")
    p.add_argument("--image", action="append", required=True, help="an X-ray, -ln(I/I0) (NPY/TIFF); repeat")
    p.add_argument("--camera", action="append", default=[], help="its camera JSON; repeat, same order")
    p.add_argument("--start", type=float, nargs=6, metavar=("RX", "RY", "RZ", "TX", "TY", "TZ"),
                   help="start pose: rotation vector (degrees) and translation (mm) of the CT about its centre")
    p.add_argument("--similarity", default="gncc", choices=["gncc", "ncc", "patch_ncc", "multiscale_ncc"])
    p.add_argument("--levels", type=int, nargs="+",
                   help="detector binnings, coarse to fine (default: 8 4 2 1, as long as 16 pixels remain)")
    p.add_argument("--iterations", type=int, default=60, help="at most this many per level")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--overlay", help="write the before/after images to this PNG (one row per view)")
    p.add_argument("--arch", choices=["cpu", "cuda", "vulkan"], help="Taichi backend (default: automatic)")
    p.add_argument("--view", action="store_true",
                   help="watch the fit in a window: the current DRR's edges over the X-rays, the loss curve")
    p.set_defaults(func=run)


def run(args) -> int:
    from .backend import start as start_backend
    from .geometry import Camera
    from .imageio import load_image
    from .outputs import check_output, save_or_rescue
    from .registration import Registration
    from .volume import Volume, VolumeProjector, load_ct

    if len(args.image) != len(args.camera):
        raise ValueError(f"{len(args.image)} --image but {len(args.camera)} --camera: give one camera per image")
    check_output(args.out, suffixes=(".json",), option="--out")  # before the work, not after it
    if args.overlay:
        check_output(args.overlay, suffixes=(".png",), option="--overlay")
    if args.iterations < 1 or (args.levels and min(args.levels) < 1):
        raise ValueError("--iterations and --levels must be positive integers")
    cams = [Camera.from_json(c) for c in args.camera]
    images = [load_image(i) for i in args.image]
    start_backend(args.arch)
    ct = load_ct(args.ct)
    proj = VolumeProjector(Volume.from_ct(ct))
    reg = Registration(proj, cams, images, similarity=args.similarity)
    start = np.zeros(6) if args.start is None else np.r_[np.deg2rad(args.start[:3]), args.start[3:]]
    t = time.perf_counter()

    def progress(level, it, loss, pose):
        print(f"\rbinning {level}: iteration {it + 1:3d}, loss {loss:.5f}", end="", flush=True, file=sys.stderr)

    callback = progress
    if args.view:
        from .viewer.watch import Watcher

        watch = Watcher(images, cams).registration(reg)

        def callback(level, it, loss, pose):
            progress(level, it, loss, pose)
            watch(level, it, loss, pose)

    res = reg.run(start, levels=args.levels, iterations=args.iterations, callback=callback)
    print(file=sys.stderr)
    move = res.matrix(reg.center)
    out = dict(ct=str(args.ct), images=args.image, cameras=args.camera, center_mm=reg.center.tolist(),
               pose_rotation_deg=np.rad2deg(res.pose[:3]).tolist(), pose_translation_mm=res.pose[3:].tolist(),
               world_from_world=move.tolist(), similarity=args.similarity, final_similarity=res.ncc,
               losses=res.losses, seconds=time.perf_counter() - t)
    text = json.dumps(out, indent=1)
    save_or_rescue(args.out, lambda tmp: Path(tmp).write_text(text), what="registration result")
    print(f"pose: rotation {np.round(out['pose_rotation_deg'], 3)} deg, translation "
          f"{np.round(out['pose_translation_mm'], 2)} mm; {len(res.losses)} iterations, {out['seconds']:.1f} s")
    print(f"wrote {args.out}")
    if args.overlay:
        _overlay(args.overlay, reg, start, res.pose)
        print(f"wrote {args.overlay}")
    return 0


def _overlay(path, reg, start, found):
    from PIL import Image

    from .imageio import window_to_uint8
    from .outputs import atomic_output

    from PIL import ImageDraw

    before, after = reg.drrs(start), reg.drrs(found)
    rows = [np.concatenate([window_to_uint8(p) for p in (t, before[i], after[i])], axis=1)
            for i, t in enumerate(reg.targets)]
    im = Image.fromarray(np.concatenate(rows, axis=0)).convert("RGB")
    draw = ImageDraw.Draw(im)  # the legend: what each column is, which view each row is
    w, h = reg.targets[0].shape[1], reg.targets[0].shape[0]
    for c, name in enumerate(("X-ray", "DRR at the start", "DRR registered")):
        draw.text((c * w + 4, 2), name, fill=(255, 80, 80))
    for r in range(len(reg.targets)):
        draw.text((4, r * h + h - 14), f"view {r + 1}", fill=(255, 80, 80))
    with atomic_output(path) as tmp:
        im.save(tmp, format="PNG")
