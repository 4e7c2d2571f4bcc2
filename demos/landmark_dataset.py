"""A small landmark dataset and its contact sheet: the shipped pelvis phantom (LLP26 landmarks, bone masks, a
titanium rod) and, where it is present, the real chest CT (vertebra-centroid landmarks and vertebra masks).

    python demos/landmark_dataset.py [--out out/landmark_dataset] [--images 8] [--workers 1]

Writes each dataset with ``engine.dataset`` (the documented layout: shards, manifest) and ``contact_sheet.png``:
the images with their visible landmarks (crosses) and mask outlines drawn.  The chest CT is looked for in
``$ENGINE_DATA/chest_ct`` (default ``../shared/data/chest_ct`` beside the checkout); no real fluoroscopy exists
here: the images are simulated.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VERTEBRAE = [f"vertebrae_T{i}" for i in range(1, 13)] + [f"vertebrae_L{i}" for i in range(1, 4)]


def chest_plan(ct_dir: Path, n: int) -> dict:
    return {"seed": 1, "images_per_ct": n, "shard_size": 4, "detector": {"rows": 160, "cols": 160, "pixel_size": 2.6},
            "carm": {"primary": {"min": -30, "max": 30}, "secondary": {"min": -10, "max": 10},
                     "sid": {"min": 700, "max": 800}, "sdd": {"min": 1100, "max": 1200}, "isocenter_jitter": 15},
            "physics": {"kvp": {"min": 80, "max": 110}, "bins": 16, "scatter": True, "noise": True,
                        "photons": {"min": 1e4, "max": 5e4, "dist": "loguniform"}},
            "inputs": [{"ct": str(ct_dir / "ct.nii.gz"), "labels": str(ct_dir / "labels.nii.gz"),
                        "label_names": str(ct_dir / "labels.csv"), "structures": VERTEBRAE,
                        "landmarks": "centroids", "label_downsample": 2}]}


def contact_sheet(folders, path, per_row: int = 4) -> Path:
    """Tiles of each dataset's images (16-bit PNGs scaled to 8 bits) with landmarks and mask outlines."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_erosion

    tiles = []
    for folder in folders:
        rows = [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]
        for r in rows:
            f = {k: folder / v for k, v in r["files"].items()}
            img = np.asarray(Image.open(f["image.png"]), np.float64) / 257.0
            rgb = np.repeat(img[..., None], 3, axis=2).astype(np.uint8)
            with np.load(f["labels.npz"]) as z:
                masks = z["masks"]
            colours = [(255, 200, 0), (0, 200, 255), (255, 80, 200), (120, 255, 120)]
            for k, m in enumerate(masks):
                edge = m.astype(bool) & ~binary_erosion(m.astype(bool))
                rgb[edge] = colours[k % len(colours)]
            im = Image.fromarray(rgb).resize((256, 256), Image.NEAREST)
            d = ImageDraw.Draw(im)
            s = 256 / img.shape[1]
            meta = json.loads(f["meta.json"].read_text())
            for lm in meta["landmarks"]:
                if lm["visible"]:
                    u, v = (lm["u"] + 0.5) * s, (lm["v"] + 0.5) * s
                    d.line([(u - 5, v), (u + 5, v)], fill=(255, 40, 40), width=2)
                    d.line([(u, v - 5), (u, v + 5)], fill=(255, 40, 40), width=2)
            d.text((4, 4), f"{folder.name} #{r['index']}  {meta['sample']['primary_deg']:+.0f}/"
                           f"{meta['sample']['secondary_deg']:+.0f} deg", fill=(255, 255, 255))
            tiles.append(np.asarray(im))
    n = len(tiles)
    cols = min(per_row, n)
    sheet = np.zeros((256 * -(-n // cols), 256 * cols, 3), np.uint8)
    for i, t in enumerate(tiles):
        sheet[256 * (i // cols):256 * (i // cols + 1), 256 * (i % cols):256 * (i % cols + 1)] = t
    Image.fromarray(sheet).save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "landmark_dataset"))
    ap.add_argument("--images", type=int, default=8, help="images per CT")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    from engine.dataset import load_plan, parse_plan, run

    out = Path(args.out)
    import yaml

    quick = yaml.safe_load((ROOT / "assets" / "plans" / "quick.yaml").read_text())
    quick["images_per_ct"] = args.images
    folders = []
    plan = parse_plan(quick, base=ROOT / "assets" / "plans")
    print(f"phantom: {plan.n_images} images ...")
    run(plan, out / "phantom", workers=args.workers)
    folders.append(out / "phantom")
    ct_dir = Path(os.environ.get("ENGINE_DATA", ROOT.parent / "shared" / "data")) / "chest_ct"
    if (ct_dir / "labels.nii.gz").is_file():
        plan = parse_plan(chest_plan(ct_dir, args.images), base=ct_dir)
        print(f"chest CT: {plan.n_images} images ...")
        run(plan, out / "chest_ct", workers=args.workers)
        folders.append(out / "chest_ct")
    else:
        print(f"chest CT not found in {ct_dir} (set ENGINE_DATA): the phantom only")
    p = contact_sheet(folders, out / "contact_sheet.png")
    print(f"wrote {p}")
    for f in folders:
        print(f"wrote {f}/manifest.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
