"""The ``engine`` command line (also ``python -m engine``)."""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

DRR_HELP = """\
Render a digitally reconstructed radiograph (DRR) of a CT.

The CT (NIfTI file or folder of DICOM slices, Hounsfield units) is split into
air / soft tissue / bone by HU thresholds, converted to densities (g/cm^3), and
ray-marched from the X-ray source to every detector pixel.  The image written is
the line integral of density along each ray (g/cm^2), summed over materials, or
one image per material with --materials.

Geometry: a C-arm around the CT's centre (or --isocenter), angles in degrees in
the clinical convention (primary: + LAO / - RAO; secondary: + CRA / - CAU; 0/0 is
an AP view displayed as if facing the patient), or any camera from --camera JSON.

examples:
  engine drr ct.nii.gz --out ap.png
  engine drr ct.nii.gz --out lat.png --primary 90
  engine drr ct.nii.gz --out ap.tiff --rows 512 --cols 512 --pixel-size 0.8 --materials
  engine drr dicom_folder/ --out view.npy --camera cam.json
"""


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (np.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return v
    return parse


def pixel_pitch(text):
    """argparse type: one pixel pitch (mm, square pixels) or ``ROW,COL`` pitches (row pitch, column pitch)."""
    parts = text.split(",")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected one pitch or ROW,COL (mm), got {text!r}")
    v = tuple(_positive(float)(p.strip()) for p in parts)
    return v[0] if len(v) == 1 else v


def finite(text):
    """argparse type: a finite float (NaN and infinity refused with the text given)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


MAX_SAMPLES = 2e11  # ray samples above which a render is refused without --force (~10 min at 3e8 samples/s)


def _add_drr(sub):
    p = sub.add_parser("drr", help="render a DRR of a CT", description=DRR_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", help="CT: .nii / .nii.gz file or a folder of DICOM slices (HU)")
    p.add_argument("--out", "-o", required=True,
                   help="output image: .png (windowed 8-bit, for viewing), .npy or .tif/.tiff (float32, g/cm^2)")
    g = p.add_argument_group("detector and C-arm geometry (ignored with --camera)")
    g.add_argument("--rows", type=_positive(int), default=512, help="detector rows (default 512)")
    g.add_argument("--cols", type=_positive(int), default=512, help="detector columns (default 512)")
    g.add_argument("--pixel-size", type=pixel_pitch, default=0.8,
                   help="detector pixel pitch, mm (0.8); ROW,COL for rectangular pixels (e.g. 0.5,0.4: 0.5 mm "
                        "between rows, 0.4 mm between columns)")
    g.add_argument("--sdd", type=_positive(float), default=1200.0, help="source-to-detector distance, mm (1200)")
    g.add_argument("--sid", type=_positive(float), default=800.0, help="source-to-isocentre distance, mm (800)")
    g.add_argument("--primary", type=finite, default=0.0, help="LAO(+)/RAO(-) angle, degrees (0)")
    g.add_argument("--secondary", type=finite, default=0.0, help="CRA(+)/CAU(-) angle, degrees (0)")
    g.add_argument("--isocenter", type=finite, nargs=3, metavar=("X", "Y", "Z"),
                   help="isocentre in world RAS+ mm (default: the CT's centre)")
    p.add_argument("--mesh", action="append", default=[],
                   help="a closed mesh in the CT's world frame (STL, PLY, OBJ, OFF, VTK), e.g. an implant; repeat")
    p.add_argument("--material", action="append", default=[],
                   help="the material of each --mesh, same order (default titanium; nominal density)")
    p.add_argument("--camera", help="read the camera from this JSON file (see --save-camera)")
    p.add_argument("--save-camera", help="write the camera used to this JSON file")
    p.add_argument("--step", type=_positive(float),
                   help="ray-marching step, mm: trilinear samples at this step (midpoint rule) instead of one "
                        "sample per voxel plane (the default)")
    p.add_argument("--materials", action="store_true",
                   help="write the per-material stack (air, soft tissue, bone) instead of their sum")
    p.add_argument("--f16", action="store_true", help="store the volume as float16 on the device (half memory)")
    p.add_argument("--window", type=finite, nargs=2, metavar=("LOW", "HIGH"),
                   help="PNG display window in the image's units (default: 5th-99.9th percentiles of the pixels "
                        "behind the body, engine.display)")
    x = p.add_argument_group("X-ray physics (any of these turns the density DRR into a detector image)")
    x.add_argument("--kvp", type=_positive(float), help="polychromatic tube spectrum at this kVp (spekpy, 2.5 mm Al)")
    x.add_argument("--preset", choices=("fluoro60", "fluoro90", "fluoro120"), help="shipped fluoroscopy spectrum")
    x.add_argument("--mono", type=_positive(float), metavar="KEV", help="monochromatic beam at KEV keV")
    x.add_argument("--bins", type=_positive(int), default=32, help="energy bins of the spectrum (32)")
    x.add_argument("--scatter", action=argparse.BooleanOptionalAction, default=False,
                   help="add scatter (kernel superposition model)")
    x.add_argument("--noise", action=argparse.BooleanOptionalAction, default=False,
                   help="add Poisson quantum noise (see --photons)")
    x.add_argument("--photons", type=_positive(float), default=2e4,
                   help="detected photons per pixel of the unattenuated beam, for --noise (2e4)")
    x.add_argument("--seed", type=int, default=0, help="noise seed (0)")
    x.add_argument("--line-integral", action="store_true",
                   help="write -ln(I/I0) instead of the intensity I/I0")
    p.add_argument("--arch", choices=("cpu", "cuda", "vulkan"), help="Taichi backend (default: best available)")
    p.add_argument("--force", action="store_true",
                   help=f"render even when the work is estimated above {MAX_SAMPLES:.0e} ray samples")
    p.set_defaults(func=cmd_drr)


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def check_resources(proj, cam, *, force: bool, extra_bytes: int = 0) -> None:
    """Refuse, before allocating, a render whose memory exceeds what the machine has free or whose work is
    beyond ``MAX_SAMPLES`` ray samples (unless ``force``), saying what to change."""
    from .errors import InputError
    from .progress import _duration
    from .resources import available_memory, format_bytes

    est = proj.estimate(cam)
    need = est["output_bytes"] + extra_bytes
    free = available_memory()
    if free is not None and need > 0.8 * free:
        raise InputError(f"a {cam.rows} x {cam.cols} detector needs about {format_bytes(need)} of memory for its "
                         f"images; {format_bytes(free)} is free: use a smaller detector (--rows/--cols) or a larger "
                         "--pixel-size")
    if est["samples"] > MAX_SAMPLES and not force:
        step = f"--step {proj.step_mm:g} mm" if proj.step_mm else "plane sampling"
        raise InputError(f"{cam.rows} x {cam.cols} rays at {step} are up to {est['samples']:.2g} ray samples "
                         f"(about {_duration(est['samples'] / 3e8)} at 3e8 samples/s, a 2-core CPU): use a "
                         "coarser --step, a smaller detector, or --force")


def cmd_drr(args) -> int:
    from . import backend
    from .geometry import Camera, carm
    from .imageio import output_format, save_image
    from .outputs import check_output, write_text
    from .progress import ProgressBar
    from .simulate import mass_thickness
    from .volume import Volume, VolumeProjector, load_ct

    # everything the user typed is checked before the slow part
    output_format(args.out)
    check_output(args.out, option="--out")
    if args.save_camera:
        check_output(args.save_camera, suffixes=(".json",), option="--save-camera")
    if args.window and not args.window[0] < args.window[1]:
        raise ValueError(f"--window {args.window[0]:g} {args.window[1]:g}: LOW must be below HIGH")
    physics = any((args.kvp, args.preset, args.mono, args.scatter, args.noise, args.line_integral))
    if physics and args.materials:
        raise ValueError("--materials writes path lengths; it cannot be combined with physics options")
    if sum(x is not None for x in (args.kvp, args.preset, args.mono)) > 1:
        raise ValueError("choose one of --kvp, --preset and --mono")
    config = _xray_config(args) if physics else None
    if len(args.material) > len(args.mesh):
        raise ValueError(f"{len(args.material)} --material for {len(args.mesh)} --mesh: one material per mesh")
    t0 = time.perf_counter()
    ct = load_ct(args.ct)
    _say(f"read {ct} in {time.perf_counter() - t0:.2f} s")
    if args.camera:
        cam = Camera.from_json(args.camera)
    else:
        iso = np.array(args.isocenter) if args.isocenter else ct.center
        cam = carm(primary=args.primary, secondary=args.secondary, sid=args.sid, sdd=args.sdd, isocenter=iso,
                   rows=args.rows, cols=args.cols, pixel_size=args.pixel_size)
    _say(f"camera: {cam}")
    t = time.perf_counter()
    vol = Volume.from_ct(ct)
    _say(f"materials {vol.materials} in {time.perf_counter() - t:.2f} s")
    b = backend.start(args.arch)
    _say(f"Taichi backend: {b.arch}")
    t = time.perf_counter()
    proj = VolumeProjector(vol, step_mm=args.step, storage="f16" if args.f16 else "f32")
    _say(f"uploaded volume in {time.perf_counter() - t:.2f} s; sampling: {proj.describe_sampling()}")
    pixels = cam.rows * cam.cols
    check_resources(proj, cam, force=args.force, extra_bytes=pixels * 4 * (12 if physics else 3))
    t = time.perf_counter()
    with ProgressBar(pixels, "rendering", unit="rays") as bar:
        img = proj(cam, progress=lambda done, total: bar(done))  # (1, M, rows, cols): one view
    _say(f"rendered {cam.rows}x{cam.cols} in {time.perf_counter() - t:.3f} s (includes kernel compilation "
         "on first use)")
    meshes = _meshes(args)
    if physics:
        out = _detector_image(args, config, proj, cam, img, meshes)
    else:
        _, stack = mass_thickness(cam, proj, meshes, ct_paths=img)
        out = stack[0] if args.materials else stack[0].sum(axis=0)
    paths = save_image(args.out, out, window=args.window)
    if args.save_camera:
        paths.append(write_text(args.save_camera, cam.to_json() + "\n"))
    for p in paths:
        print(f"wrote {p}")
    _say(f"total {time.perf_counter() - t0:.2f} s")
    return 0


def _meshes(args):
    """The --mesh files on the device (a MeshProjector), or None."""
    if not args.mesh:
        return None
    from .mesh import MeshProjector, load_mesh

    mats = args.material + ["titanium"] * (len(args.mesh) - len(args.material))
    return MeshProjector([load_mesh(m) for m in args.mesh], mats)


def _xray_config(args):
    """The physics options as an :class:`engine.XrayConfig` (checked before anything is rendered)."""
    from .xray_config import XrayConfig

    return XrayConfig(spectrum=args.preset or args.kvp, mono_kev=args.mono, bins=args.bins, scatter=args.scatter,
                      noise=args.photons if args.noise else None,
                      output="line_integral" if args.line_integral else "intensity")


def _detector_image(args, config, proj, cam, paths, meshes=None):
    """The (rows, cols) detector image of one camera from its CT paths (1, M, rows, cols) and the meshes."""
    from .simulate import mass_thickness
    from .simulator import Simulator

    spectrum = config.spectrum
    t = time.perf_counter()
    sim = Simulator(proj, meshes, config)
    names, stack = mass_thickness(cam, proj, meshes, ct_paths=paths)
    out = sim.detector_image(stack[:, [names.index(m) for m in sim.materials]], cam, seed=args.seed)[0]
    _say(f"simulated ({'mono %g keV' % args.mono if args.mono else spectrum or 'fluoro90'}, scatter "
         f"{'on' if args.scatter else 'off'}, noise {'on' if args.noise else 'off'}) in "
         f"{time.perf_counter() - t:.3f} s")
    if not args.line_integral and args.out.lower().endswith(".png"):
        from .display import attenuation

        out = attenuation(out)  # display: attenuation bright, as on a radiograph
    return out


REPORT = ("this is a bug in the engine: please report it with the command you ran and the output of the same "
          "command with --debug (it prints the traceback)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="engine", description="Differentiable X-ray simulation engine (Taichi). "
        "Run 'engine COMMAND --help' for one command's options.")
    parser.add_argument("--version", action="version", version=f"engine {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_drr(sub)
    from .cli_register import add_command as add_register
    from .cli_shape import add_commands
    from .cli_dataset import add_command as add_dataset
    from .cli_view import add_command as add_view

    add_register(sub)
    add_commands(sub)
    add_view(sub)
    add_dataset(sub)
    return parser


# what a user's input can cause: a one-line "engine: error: ..." and exit status 2
EXPECTED = (ValueError, OSError, EOFError, KeyError, UnicodeDecodeError)


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input, 130 interrupted, 1 a bug)."""
    import json
    import os

    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "0")  # Taichi's banner: not among the outputs
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nengine: interrupted", file=sys.stderr)
        return 130
    except (json.JSONDecodeError, *EXPECTED) as e:
        if debug:
            raise
        msg = str(e) or type(e).__name__
        if isinstance(e, KeyError):
            msg = f"missing key {e}"
        elif isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.filename}: {e.strerror or msg}"
        print(f"engine: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the boundary: anything else is a bug, said briefly
        if debug:
            raise
        print(f"engine: internal error: {type(e).__name__}: {e}\n{REPORT}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
