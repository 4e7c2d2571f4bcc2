"""Pictures of a reconstruction: target views with mesh outlines (and a legend of their colours), loss curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..mesh.projector import MeshProjector

COLOURS = {"initial": (60, 140, 255), "result": (255, 50, 40), "truth": (40, 220, 60)}
LABELS = {"initial": "initial (start)", "result": "reconstruction", "truth": "true shape"}
LEGEND_ROWS = 18  # pixel rows of each line of the legend strip under the views


def silhouettes(mesh, cameras) -> list:
    """Boolean (rows, cols) per camera: pixels whose ray passes through the mesh (one BVH for all views)."""
    proj = MeshProjector(mesh, "bone", max_hits=128)
    return [proj(cam)[0, 0] > 0 for cam in cameras]


def _grey(image) -> np.ndarray:
    a = np.asarray(image, np.float64)
    lo, hi = np.percentile(a, [1, 99.5])
    g = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat((255 * g).astype(np.uint8)[..., None], 3, axis=-1)


def outline_colours(names) -> dict:
    """RGB (0..255) of each outline: :data:`COLOURS` for the known names, distinct yellows/cyans otherwise."""
    return {name: COLOURS.get(name, tuple(int(c) for c in np.roll((255, 200, 0), i))) for i, name in enumerate(names)}


def legend_strip(colours: dict, width: int, rows: int = LEGEND_ROWS) -> np.ndarray:
    """(rows * lines, width, 3) uint8: on black, for each outline a short line of its colour and its label in white.

    Labels are :data:`LABELS` where known, else the name; Pillow's default font.  Entries
    that do not fit on a line of ``width`` pixels go on the next line (``rows`` pixels each).
    """
    from PIL import Image, ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [("outlines:", None)] + [(LABELS.get(n, str(n)), tuple(int(c) for c in rgb)) for n, rgb in colours.items()]
    placed, x, line = [], 4, 0
    for label, rgb in items:
        w = int(measure.textlength(label)) + (21 if rgb else 0) + 12
        if x > 4 and x + w > width:
            x, line = 4, line + 1
        placed.append((x, line, label, rgb))
        x += w
    strip = Image.new("RGB", (int(width), int(rows) * (line + 1)), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for x, line, label, rgb in placed:
        mid = line * rows + rows // 2
        if rgb:
            draw.line([(x, mid), (x + 16, mid)], fill=rgb, width=3)
            x += 21
        draw.text((x, mid - 5), label, fill=(255, 255, 255))
    return np.asarray(strip)


def save_overlay(path, images, cameras, meshes: dict) -> Path:
    """One PNG with the views side by side, each with the outline of every mesh in ``meshes`` (name -> Mesh),
    and under them a legend strip naming each outline's colour (:func:`legend_strip`)."""
    from PIL import Image

    imgs = np.asarray(images)
    imgs = imgs[None] if imgs.ndim == 2 else imgs
    cams = list(cameras) if isinstance(cameras, (list, tuple)) else [cameras]
    masks = {name: silhouettes(mesh, cams) for name, mesh in meshes.items()}
    colours = outline_colours(meshes)
    tiles = []
    for k, im in enumerate(imgs):
        rgb = _grey(im)
        for name in meshes:
            m = masks[name][k]
            edge = m & ~ndimage.binary_erosion(m)
            edge = ndimage.binary_dilation(edge) if max(im.shape) > 300 else edge
            rgb[edge] = colours[name]
        tiles.append(rgb)
    out = np.concatenate(tiles, axis=1)
    out = np.concatenate([out, legend_strip(colours, out.shape[1])], axis=0)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(p)
    return p


def save_loss_curve(path, result) -> Path:
    """PNG of the loss against iteration, stages marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(result.loss_history - min(0.0, result.loss_history.min()) + 1e-9)
    for b in np.flatnonzero(np.diff(result.stage_history)) + 1:
        ax.axvline(b, color="0.7", lw=0.8)
    ax.set(xlabel="iteration", ylabel="loss", title="reconstruction loss (stages marked)")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
