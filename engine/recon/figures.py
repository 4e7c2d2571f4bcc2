"""A 3D picture of a mesh coloured by its distance to a reference surface (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics


def save_error_mesh(path, mesh, reference, *, vmax: float = 5.0, title: str = "") -> Path:
    """PNG of ``mesh`` from the front (AP) and the side, faces coloured by distance (mm) to ``reference``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    d = metrics.point_to_surface(mesh.vertices, reference)
    face_err = d[mesh.faces].mean(1)
    cmap = plt.get_cmap("viridis")
    colours = cmap(np.clip(face_err / vmax, 0, 1))
    tris = mesh.vertices[mesh.faces]
    fig = plt.figure(figsize=(10, 4.6))
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2
    for k, (elev, azim, name) in enumerate(((0, -90, "anterior"), (0, 0, "right lateral"))):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        ax.add_collection3d(Poly3DCollection(tris, facecolors=colours, edgecolor="none"))
        ax.set(xlim=(c[0] - r, c[0] + r), ylim=(c[1] - r, c[1] + r), zlim=(c[2] - r, c[2] + r))
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
        ax.set_title(name)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, vmax))
    fig.colorbar(sm, ax=fig.axes, shrink=0.7, label="distance to truth (mm)")
    fig.suptitle(title or f"surface error: mean {d.mean():.2f} mm, max {d.max():.1f} mm")
    p = Path(path)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
