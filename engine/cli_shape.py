"""``engine ssm build`` and ``engine reconstruct``: shape models and shape-from-X-ray on the command line."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

SSM_HELP = """\
Build a statistical shape model (.npz) from meshes, or from the LLP26 pelvis population.

Meshes that share a topology (same vertex count and faces) are taken as being in
correspondence; otherwise the first is used as a template, registered rigidly (ICP)
and non-rigidly onto every other mesh first.  Then generalised Procrustes
alignment (--scale to remove size too) and PCA keeping --variance of the total.
--report prints compactness, leave-one-out generalisation and specificity and
plots them to a PNG.

examples:
  engine ssm build --llp26 --out pelvis.npz --report pelvis_quality.png
  engine ssm build L1.stl L2.stl L3.stl T12.stl --out vertebra.npz --variance 0.95
"""

RECON_HELP = """\
Reconstruct a 3D shape from X-ray images with a shape model (gradient descent through
the differentiable mesh renderer).

Give one TARGET image per --camera (JSON as written by 'engine drr --save-camera').
Targets are X-ray intensities by default (converted to line integrals -log(I/I0)),
or line integrals / path lengths (--target line-integral), or bone masks
(--target mask, which selects the silhouette loss).  The model starts at the
point the cameras' central rays meet (or --init-translation), in the model's
orientation (or --init-rotation, degrees about x, y, z).

examples:
  engine reconstruct ap.tiff lat.tiff --camera ap.json --camera lat.json --model assets/pelvis_ssm.npz \\
      --out pelvis.ply --overlay overlay.png
"""


def add_commands(sub) -> None:
    """Register ``ssm`` and ``reconstruct`` on the ``engine`` parser's subparsers."""
    ssm = sub.add_parser("ssm", help="statistical shape models")
    ssub = ssm.add_subparsers(dest="ssm_command", metavar="SSM_COMMAND")
    b = ssub.add_parser("build", help="build a shape model", description=SSM_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("meshes", nargs="*", help="mesh files (STL, PLY, OBJ, OFF, VTK)")
    b.add_argument("--llp26", action="store_true", help="use the 26 LLP26 pelvis subjects instead of files")
    b.add_argument("--out", required=True, help="output model .npz")
    b.add_argument("--variance", type=float, default=0.98, help="fraction of variance the modes keep")
    b.add_argument("--scale", action="store_true", help="Procrustes with scale (remove size)")
    b.add_argument("--report", metavar="PNG", help="evaluate the model and plot its quality to this PNG")
    b.set_defaults(func=cmd_ssm_build)
    ssm.set_defaults(func=lambda args: (ssm.print_help(), 2)[1])

    r = sub.add_parser("reconstruct", help="3D shape from X-ray images", description=RECON_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("targets", nargs="+", help="target images (.npy, .tif, .png), one per --camera")
    r.add_argument("--camera", action="append", required=True, help="camera JSON, once per target, same order")
    r.add_argument("--model", required=True, help="shape model .npz")
    r.add_argument("--out", required=True, help="reconstructed mesh (.ply, .stl, .obj, .off)")
    r.add_argument("--target", choices=("intensity", "line-integral", "mask"), default="intensity")
    r.add_argument("--loss", choices=("xray", "bncc", "ncc", "gncc", "mse", "silhouette"),
                   help="default: xray (shell + core bone model, band-pass NCC) for intensity, ncc for "
                        "line-integral, silhouette for mask")
    r.add_argument("--subdivide", type=int, default=1, help="Loop subdivisions of the model for rendering")
    r.add_argument("--modes", type=int, help="number of modes to fit (default all)")
    r.add_argument("--scale", action="store_true", help="also fit an isotropic scale")
    r.add_argument("--free", type=int, default=0, metavar="N", help="N iterations of free-vertex refinement")
    r.add_argument("--init-translation", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="world position (mm) of the model's centre")
    r.add_argument("--init-rotation", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("RX", "RY", "RZ"),
                   help="initial rotation vector, degrees")
    r.add_argument("--overlay", metavar="PNG", help="write the targets with initial/final outlines")
    r.add_argument("--result", metavar="JSON", help="write coefficients, pose, loss and timing")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--view", action="store_true",
                   help="watch the fit in a window: the current shape over the targets, the loss curve")
    r.set_defaults(func=cmd_reconstruct)


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def cmd_ssm_build(args) -> int:
    from .mesh import load_mesh
    from .ssm import build_model, evaluate, llp26_population
    from .ssm.build import CORRESPONDENCE
    from .ssm.correspondence import correspond

    from .outputs import atomic_output, check_output, save_or_rescue, write_text

    if args.llp26 == bool(args.meshes):
        raise ValueError("give mesh files or --llp26 (not both, not neither)")
    if not 0 < args.variance <= 1:
        raise ValueError(f"--variance {args.variance:g}: give a fraction in (0, 1]")
    check_output(args.out, suffixes=(".npz",), option="--out")
    if args.report:
        check_output(args.report, suffixes=(".png",), option="--report")
        check_output(Path(args.report).with_suffix(".json"), option="--report (its .json)")
    if args.llp26:
        shapes, faces = llp26_population()
        info = {"name": "LLP26 pelvis", "source": "LLP26 (Zhang et al. 2016), MPL-2.0"}
    else:
        meshes = [load_mesh(p) for p in args.meshes]
        info = {"name": Path(args.out).stem, "source": [str(p) for p in args.meshes]}
        faces = meshes[0].faces
        if all(len(m.vertices) == len(meshes[0].vertices) and np.array_equal(m.faces, faces) for m in meshes):
            shapes = np.stack([m.vertices for m in meshes])
        else:
            _say(f"{len(meshes)} meshes not in correspondence: registering the first onto the others")
            shapes = np.stack(correspond(meshes[0], meshes))
            info = {"correspondence": CORRESPONDENCE, **info}
    _say(f"building the model from {len(shapes)} shapes of {shapes.shape[1]} vertices")
    model = build_model(shapes, faces, variance=args.variance, scale=args.scale, info=info)
    save_or_rescue(args.out, model.save, what="shape model")
    print(f"{model}: {model.info.get('explained_variance', 0):.3f} of the variance -> {args.out}")
    if args.report:
        _say("evaluating the model (leave-one-out generalisation and specificity: one model per left-out shape)")
        from .progress import ProgressBar

        with ProgressBar(len(shapes) + len(shapes) - 2, "evaluating") as bar:
            rep = evaluate(shapes, faces, scale=args.scale, progress=lambda done, total: bar(done))
        print(rep.table())
        with atomic_output(args.report) as tmp:
            rep.plot(tmp)
        write_text(Path(args.report).with_suffix(".json"), json.dumps(rep.to_dict(), indent=1))
        print(f"quality plot -> {args.report}")
    return 0


def cmd_reconstruct(args) -> int:
    from .geometry import Camera, central_rays_meet
    from .imageio import load_image
    from .geometry.transforms import rotation_from_vector
    from .recon import ReconConfig, line_integral, reconstruct
    from .ssm import ShapeModel

    from .mesh.mesh import READABLE
    from .outputs import atomic_output, check_output, save_or_rescue, write_text

    if len(args.targets) != len(args.camera):
        raise ValueError(f"{len(args.targets)} targets but {len(args.camera)} cameras: give one --camera each")
    # every output is checked before the fit: a bad path must not cost the result
    check_output(args.out, suffixes=tuple(sorted(READABLE)), option="--out")
    if args.overlay:
        check_output(args.overlay, suffixes=(".png",), option="--overlay")
    if args.result:
        check_output(args.result, suffixes=(".json",), option="--result")
    if args.subdivide < 0 or (args.modes is not None and args.modes < 1) or args.free < 0:
        raise ValueError("--subdivide and --free must be >= 0 and --modes >= 1")
    cams = [Camera.from_json(p) for p in args.camera]
    imgs = [load_image(p) for p in args.targets]
    if args.target == "intensity":
        imgs = [line_integral(np.maximum(i, 1e-6 * i.max())) for i in imgs]
    elif args.target == "mask":
        imgs = [(i > 0.5 * i.max()).astype(float) for i in imgs]
    loss = args.loss or {"intensity": "xray", "line-integral": "ncc", "mask": "silhouette"}[args.target]
    model = ShapeModel.load(args.model)
    if args.subdivide:
        model = model.subdivided(args.subdivide)
    init = np.eye(4)
    init[:3, :3] = rotation_from_vector(np.deg2rad(args.init_rotation))
    centre = np.asarray(args.init_translation) if args.init_translation else central_rays_meet(cams)
    init[:3, 3] = centre - init[:3, :3] @ model.mean.mean(0)
    _say(f"{model}; {len(cams)} view(s); loss {loss}; start at {np.round(centre, 1)} mm")
    if loss == "xray":  # the recipe for X-ray targets
        config = ReconConfig.xray(min(cams[0].rows, cams[0].cols), n_modes=args.modes, scale=args.scale,
                                  free_iterations=args.free)
    else:
        config = ReconConfig(loss=loss, n_modes=args.modes, scale=args.scale, free_iterations=args.free)
    callback = None
    if args.view:
        from .viewer.watch import Watcher

        callback = Watcher(imgs, cams)
    res = reconstruct(np.stack(imgs), cams, model, init, config, progress=not args.quiet, callback=callback)
    save_or_rescue(args.out, res.save_mesh, what="reconstructed mesh")
    print(f"{res.iterations} iterations in {res.time_s:.1f} s, final loss {res.final_loss:.5f} -> {args.out}")
    if args.result:
        write_text(args.result, json.dumps({
            "coeffs": res.coeffs.tolist(), "world_from_model": res.world_from_model.tolist(),
            "loss_history": res.loss_history.tolist(), "time_s": res.time_s, "iterations": res.iterations},
            indent=1))
        print(f"result -> {args.result}")
    if args.overlay:
        with atomic_output(args.overlay) as tmp:
            res.save_overlay(tmp, np.stack(imgs), cams)
        print(f"overlay -> {args.overlay}")
    return 0
