"""Pictures of a reconstruction: target views with mesh outlines, loss curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..mesh.projector import MeshProjector

COLOURS = {"initial": (60, 140, 255), "result": (255, 50, 40), "truth": (40, 220, 60)}


def silhouettes(mesh, cameras) -> list:
    """Boolean (rows, cols) per camera: pixels whose ray passes through the mesh (one BVH for all views)."""
    proj = MeshProjector(mesh, "bone", max_hits=128)
    return [proj(cam)[0] > 0 for cam in cameras]


def _grey(image) -> np.ndarray:
    a = np.asarray(image, np.float64)
    lo, hi = np.percentile(a, [1, 99.5])
    g = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat((255 * g).astype(np.uint8)[..., None], 3, axis=-1)


def save_overlay(path, images, cameras, meshes: dict) -> Path:
    """One PNG with the views side by side, each with the outline of every mesh in ``meshes`` (name -> Mesh)."""
    from PIL import Image

    imgs = np.asarray(images)
    imgs = imgs[None] if imgs.ndim == 2 else imgs
    cams = list(cameras) if isinstance(cameras, (list, tuple)) else [cameras]
    masks = {name: silhouettes(mesh, cams) for name, mesh in meshes.items()}
    tiles = []
    for k, im in enumerate(imgs):
        rgb = _grey(im)
        for i, name in enumerate(meshes):
            m = masks[name][k]
            edge = m & ~ndimage.binary_erosion(m)
            edge = ndimage.binary_dilation(edge) if max(im.shape) > 300 else edge
            rgb[edge] = COLOURS.get(name, tuple(np.roll((255, 200, 0), i)))
        tiles.append(rgb)
    out = np.concatenate(tiles, axis=1)
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
