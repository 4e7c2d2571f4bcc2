"""Writing a dataset: shards of images and labels, a manifest, byte for byte the same in every process.

Layout of ``OUT/``::

    dataset.json                 the plan (as given), structure names per CT, mesh materials, counts, layout version
    manifest.jsonl               one row per image, in index order (shard, files, camera, sampled parameters, seed)
    shard_000000/                images 0 .. shard_size - 1
        000000_image.tiff        float32 (rows, cols): -ln(I/I0) or I/I0 (the plan's physics.output)
        000000_image.png         16-bit grey: the image between the window in the metadata (low -> 0, high -> 65535)
        000000_labels.npz        masks (S, rows, cols) uint8; structure_line_integrals (S, rows, cols) float32 g/cm^2;
                                 mesh_lengths (M, rows, cols) float32 mm
        000000_meta.json         camera (engine Camera JSON), C-arm angles and distances, landmarks (u, v, visible,
                                 structure, world mm), structures, mesh materials, PNG window, sampled parameters
        manifest.jsonl           this shard's rows

A shard is written in ``shard_NNNNNN.part-<random>/`` and renamed when complete: a folder named ``shard_NNNNNN``
is always whole, so a run that was interrupted resumes by skipping those (and deleting stale ``.part`` folders).
NPZ archives are written with fixed timestamps and JSON with sorted keys, so the same plan gives the same bytes.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np

LAYOUT_VERSION = 1


def save_npz(path, arrays: dict) -> None:
    """An uncompressed ``.npz`` (``np.load`` reads it) with fixed entry timestamps: the same arrays, the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, buf.getvalue())


def png16(image: np.ndarray, window) -> np.ndarray:
    lo, hi = window
    return np.round(np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1) * 65535).astype(np.uint16)


def shard_name(k: int) -> str:
    return f"shard_{k:06d}"


def write_image(folder: Path, index: int, shard: int, sample, out: dict) -> dict:
    """Write one image's files into ``folder``; returns its manifest row."""
    import tifffile
    from PIL import Image

    from ..display import attenuation, auto_window

    stem = f"{index:06d}"
    img = out["image"]
    tifffile.imwrite(folder / f"{stem}_image.tiff", img, photometric="minisblack", software=None)
    shown = img if out["line_integral"] else attenuation(img)  # the PNG: attenuation bright
    window = [float(x) for x in auto_window(shown)]
    Image.fromarray(png16(shown, window)).save(folder / f"{stem}_image.png", format="PNG")
    save_npz(folder / f"{stem}_labels.npz", {"masks": out["masks"],
                                              "structure_line_integrals": out["structure_line_integrals"],
                                              "mesh_lengths": out["mesh_lengths"]})
    cam = out["camera"]
    meta = {"index": index, "shard": shard, "camera": json.loads(cam.to_json()), "sample": sample.to_dict(),
            "kvp_used": out["kvp_used"], "landmarks": out["landmarks"], "structures": out["structures"],
            "mesh_materials": out["mesh_materials"], "png_window": window,
            "png_shows": "-ln(I/I0)", "image_units": out["units"]}
    (folder / f"{stem}_meta.json").write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n")
    files = {k: f"{shard_name(shard)}/{stem}_{k}" for k in ("image.tiff", "image.png", "labels.npz", "meta.json")}
    return {"index": index, "shard": shard, "ct": sample.ct, "files": files, "sample": sample.to_dict(),
            "camera": meta["camera"]}


def shard_indices(plan, k: int) -> range:
    return range(k * plan.shard_size, min((k + 1) * plan.shard_size, plan.n_images))


def plan_key(plan) -> str:
    """A digest of the plan as given (scenes are cached per plan and CT: one process may run several plans)."""
    import hashlib

    return hashlib.sha256(json.dumps(plan.source, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scene_for(plan, ct: int, scenes: dict):
    """This process's CTScene of CT ``ct`` of ``plan`` (built on first use; the cache keeps the last plan's)."""
    from .scene import CTScene

    key = (plan_key(plan), int(ct))
    if key not in scenes:
        for old in [k for k in scenes if k[0] != key[0]]:
            scenes.pop(old).close()  # another plan's scenes: free their device memory
        scenes[key] = CTScene(plan.inputs[ct], plan)
    return scenes[key]


def render_shard(plan, k: int, out_dir, scenes: dict) -> list:
    """Render and write shard ``k`` (skipped when complete); returns its manifest rows.  ``scenes``: this
    process's cache {ct index: CTScene}."""
    from .plan import sample

    out = Path(out_dir)
    final = out / shard_name(k)
    if final.is_dir():
        return [json.loads(line) for line in (final / "manifest.jsonl").read_text().splitlines()]
    tmp = out / f"{shard_name(k)}.part-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    rows = []
    try:
        for i in shard_indices(plan, k):
            s = sample(plan, i)
            res = scene_for(plan, s.ct, scenes).render(s)
            res["line_integral"] = plan.output == "line_integral"
            res["units"] = "-ln(I/I0)" if res["line_integral"] else "I/I0"
            rows.append(write_image(tmp, i, k, s, res))
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def finish(plan, out_dir, rows: list, scenes_info: dict) -> None:
    """The top-level ``manifest.jsonl`` (index order) and ``dataset.json``, written atomically."""
    from ..outputs import write_text

    out = Path(out_dir)
    rows = sorted(rows, key=lambda r: r["index"])
    write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    info = {"layout_version": LAYOUT_VERSION, "n_images": plan.n_images, "n_shards": plan.n_shards,
            "shard_size": plan.shard_size, "rows": plan.rows, "cols": plan.cols, "output": plan.output,
            "plan": plan.source, **scenes_info}
    write_text(out / "dataset.json", json.dumps(info, sort_keys=True, indent=1) + "\n")


def clean_parts(out_dir) -> int:
    """Delete ``.part`` folders an interrupted run left; returns how many."""
    n = 0
    for p in Path(out_dir).glob("shard_*.part-*"):
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n
