"""``engine view``: the live viewer (see :mod:`engine.viewer`)."""
import argparse
import json
import sys
from pathlib import Path

VIEW_HELP = """\
Open the live viewer: a virtual C-arm around a CT and/or meshes; the X-ray changes as you move it.

No arguments: the shipped pelvis phantom with a titanium screw.  Controls: left drag orbits the C-arm
(right = LAO, up = CRA); shift + drag or right drag pans the table; up/down arrows change the
source-to-detector distance; s scatter, n noise, + - dose, k j kVp +-10, l line integral / intensity,
[ ] window, r detector resolution (128/256/512), 0 reset, p save (PNG + float32 TIFF + camera JSON + the
'engine drr' command that renders it again), Escape quits.

Headless (no display, no GPU: Vulkan through Mesa's lavapipe): --headless --script events.json --out DIR
replays a JSON list of events ({"type": "drag", "dx": 40, "dy": 0}, {"type": "wheel", "delta": 2},
{"type": "key", "key": "s"}, {"type": "set", "primary": 30}) and writes DIR/step_NNN.png after each.

examples:
  engine view
  engine view ct.nii.gz --mesh screw.stl --material titanium --camera cam.json
  engine view --headless --script events.json --out shots/
"""


def add_command(sub):
    p = sub.add_parser("view", help="live interactive viewer (virtual C-arm)", description=VIEW_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ct", nargs="?", help="CT (NIfTI or DICOM folder); default: the shipped pelvis phantom")
    p.add_argument("--mesh", action="append", default=[], help="a closed mesh (STL, PLY, OBJ, OFF, VTK); repeat")
    p.add_argument("--material", action="append", default=[], help="its material (default titanium); repeat")
    p.add_argument("--camera", help="start at this camera's C-arm angles and distances (JSON)")
    p.add_argument("--headless", action="store_true", help="no window: replay --script, write screenshots")
    p.add_argument("--script", help="JSON list of events (with --headless)")
    p.add_argument("--out", default="out/viewer", help="screenshots (headless) and saved views (default out/viewer)")
    p.set_defaults(func=run)


def _state_from_camera(cam, centre):
    """The viewer state closest to a camera: its distances, and its C-arm angles from its principal axis."""
    import numpy as np

    from .geometry import carm_angles
    from .viewer import ViewerState

    primary, secondary = carm_angles(cam)
    sid = float(np.linalg.norm(np.asarray(centre) - cam.source))
    return ViewerState(primary=primary, secondary=secondary, sdd=float(cam.sdd), sid=sid,
                       isocenter=tuple(float(x) for x in centre), resolution=int(cam.rows),
                       detector_mm=float(cam.rows * cam.pixel_spacing[0]))


def run(args) -> int:
    from .errors import InputError
    from .mesh import load_mesh
    from .viewer import ViewerState, default_scene, open_viewer

    if args.headless and not args.script:
        raise InputError("--headless needs --script events.json (the events to replay)")
    events = None
    if args.script:
        try:
            events = json.loads(Path(args.script).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"--script {args.script}: not a readable JSON file ({e})") from None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise InputError(f"--script {args.script}: expected a JSON list of event objects")
    if args.ct is None and not args.mesh:
        volume, meshes, source = default_scene()
    else:
        volume = None
        source = ""
        if args.ct:
            from .volume import Volume, load_ct

            volume = Volume.from_ct(load_ct(args.ct))
            source = args.ct
        if len(args.material) > len(args.mesh):
            raise InputError(f"{len(args.material)} --material for {len(args.mesh)} --mesh")
        mats = args.material + ["titanium"] * (len(args.mesh) - len(args.material))
        meshes = [(load_mesh(m), mat) for m, mat in zip(args.mesh, mats)]
    try:
        viewer = open_viewer(volume, meshes, show_window=not args.headless, out_dir=args.out,
                             drr_source=source)
    except RuntimeError as e:  # GGUI cannot start (no Vulkan driver, no display)
        if args.headless:
            raise InputError(f"the viewer's window cannot start: {e} (Debian/Ubuntu: apt-get install "
                             "mesa-vulkan-drivers libvulkan1 libx11-6 libgl1)") from None
        return _fallback(volume, meshes, e)
    if args.camera:
        from .geometry import Camera

        viewer.initial = viewer.state = _state_from_camera(Camera.from_json(args.camera), viewer.state.isocenter)
    if args.headless:
        shots = viewer.run_script(events, args.out)
        for s in shots:
            print(f"wrote {s}")
        return 0
    viewer.run()
    return 0


def _fallback(volume, meshes, err) -> int:
    """No GGUI (no Vulkan driver or no display): one X-ray in a matplotlib window, saying why."""
    print(f"engine view: the GGUI window cannot start ({err}); install mesa-vulkan-drivers libvulkan1 "
          "(Debian/Ubuntu) for the interactive viewer. Showing the initial X-ray in a plain window.", file=sys.stderr)
    import matplotlib.pyplot as plt

    from .viewer import ViewerState
    from .viewer.render import SceneRenderer, display

    r = SceneRenderer(volume, meshes)
    state = ViewerState(isocenter=tuple(float(x) for x in r.center))
    plt.imshow(display(r.image(state), state))
    plt.title(state.angles_text())
    plt.show()
    return 0
