"""The live viewer on the shipped pelvis phantom with a titanium rod (see ``engine view --help``).

    python demos/viewer.py                      # a window: drag to orbit the C-arm, keys in the readout
    python demos/viewer.py --headless           # no display: a scripted orbit, screenshots in out/viewer/

Headless, it replays a short session (orbit to LAO 30, move the detector back, scatter on, noise on, save) and
writes ``out/viewer/step_NNN.png`` after each event, plus the saved view (PNG, float32 TIFF, camera JSON and the
``engine drr`` command that renders it again).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SESSION = [{"type": "drag", "dx": 100, "dy": 0}, {"type": "drag", "dx": 0, "dy": 40},
           {"type": "wheel", "delta": 5}, {"type": "key", "key": "s"}, {"type": "key", "key": "n"},
           {"type": "key", "key": "p"}]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--headless", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "out" / "viewer"))
    args = ap.parse_args(argv)
    from engine.viewer import default_scene, open_viewer

    volume, meshes, ct_path = default_scene()
    viewer = open_viewer(volume, meshes, show_window=not args.headless, out_dir=args.out, drr_source=ct_path)
    if args.headless:
        for p in viewer.run_script(SESSION, args.out):
            print(f"wrote {p}")
    else:
        viewer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
