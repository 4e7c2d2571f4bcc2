"""The viewer's pictures: the X-ray of a state (the engine's own Simulator) and an overview of the C-arm.

``SceneRenderer`` uploads the CT once (one :class:`VolumeProjector`) and keeps the meshes on the device (one
:class:`MeshProjector`); the physics of each combination of settings (kVp, scatter, dose, output) is a
:class:`engine.Simulator` over those same projectors, built on first use and kept, so a frame is one render.

The overview is drawn in software from a fixed oblique viewpoint (world RAS+, mm): the CT's box, the meshes'
vertices, the source, the detector's outline and the four rays to its corners (the frustum), each in its own
colour, so it looks the same in a window and in a headless screenshot.
"""
from __future__ import annotations

import numpy as np

from ..geometry import Camera
from ..mesh.topology import edges

# overview colours (RGB 0..1)
BOX, MESH, SOURCE, DETECTOR, FRUSTUM = (0.55, 0.55, 0.6), (1.0, 0.75, 0.2), (1.0, 0.3, 0.3), (0.3, 0.8, 1.0), \
    (0.4, 0.9, 0.4)


class SceneRenderer:
    """X-ray images of a CT and/or meshes for viewer states.

    Parameters
    ----------
    volume : engine Volume or None
    meshes : list of (Mesh, material name), may be empty
    """

    def __init__(self, volume=None, meshes=()):
        from ..mesh import MeshProjector
        from ..volume import VolumeProjector

        if volume is None and not meshes:
            raise ValueError("nothing to view: give a CT and/or meshes")
        self.volume = volume
        self.mesh_list = list(meshes)
        self.ct = VolumeProjector(volume) if volume is not None else None
        self.meshes = MeshProjector([m for m, _ in meshes], [mat for _, mat in meshes]) if meshes else None
        self.mesh_points = np.concatenate([m.vertices for m, _ in meshes]) if meshes else np.zeros((0, 3))
        # outline edges of small meshes for the overview (large ones are drawn as points)
        self.mesh_edges = []
        for m, _ in meshes:
            if len(m.faces) <= 4000:
                self.mesh_edges.append(m.vertices[edges(m.faces)])
        self._sims = {}
        self.center = volume.center if volume is not None else self.mesh_points.mean(axis=0)

    def simulator(self, state, photons: float | None = None):
        """The Simulator of the state's physics settings (built once per combination: cached by its
        :class:`engine.XrayConfig`); ``photons`` replaces the state's dose (per pixel) when noise is on."""
        from ..simulator import Simulator
        from ..xray_config import XrayConfig

        dose = float(state.photons if photons is None else photons) if state.noise else None
        config = XrayConfig(spectrum=self._spectrum(round(state.kvp)), scatter=bool(state.scatter), noise=dose,
                            output="line_integral" if state.line_integral else "intensity")
        return self._cached(config, lambda: Simulator(self.ct, self.meshes, config))

    def _spectrum(self, kvp):
        """The spectrum of a kVp, computed once (spekpy takes ~1 s)."""
        from ..physics import tube_spectrum

        return self._cached(("spectrum", kvp), lambda: tube_spectrum(float(kvp), bins=32))

    def _cached(self, key, make, keep: int = 12):
        """A small least-recently-used cache (settings change often in a session; each Simulator holds device
        buffers)."""
        if key in self._sims:
            self._sims[key] = self._sims.pop(key)  # most recent last
        else:
            self._sims[key] = make()
            while len(self._sims) > keep:
                self._sims.pop(next(iter(self._sims)))
        return self._sims[key]

    def image(self, state, resolution: int | None = None) -> np.ndarray:
        """(n, n) float32 image of the state (``resolution`` pixels per side; default the state's)."""
        cam = state.camera(resolution)
        if resolution is None or not state.noise:
            return self.simulator(state)(cam, seed=state.seed)[0]
        # a coarser preview keeps the full-resolution dose per area: photons scale with the pixel area
        f = (state.resolution / cam.rows) ** 2
        return self.simulator(state, photons=state.photons * f)(cam, seed=state.seed)[0]

    def close(self) -> None:
        self._sims.clear()
        if self.ct is not None:
            self.ct.close()
        if self.meshes is not None:
            self.meshes.close()


def display(image: np.ndarray, state) -> np.ndarray:
    """(rows, cols, 3) float32 RGB in 0..1 of an image: the automatic window of the body's pixels
    (:func:`engine.display.auto_window`), widened or narrowed about its
    centre by ``state.window_scale``; bone bright in both output units."""
    from ..display import attenuation, auto_window

    img = np.asarray(image, np.float64) if state.line_integral else attenuation(np.asarray(image, np.float64))
    lo, hi = auto_window(img)
    mid, half = (lo + hi) / 2, max(hi - lo, 1e-9) / 2 * state.window_scale
    g = np.clip((img - (mid - half)) / (2 * half), 0, 1).astype(np.float32)
    return np.repeat(g[..., None], 3, axis=2)


def resize_nearest(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of (rows, cols[, channels]) to (h, w[, channels])."""
    r = np.arange(h) * img.shape[0] // h
    c = np.arange(w) * img.shape[1] // w
    return img[r][:, c]


def _overview_camera(center, size: int) -> Camera:
    """A fixed oblique camera looking at ``center`` from the front-left, above (world RAS+)."""
    from ..geometry import carm

    return carm(primary=-35, secondary=25, sid=2600, sdd=3200, isocenter=np.asarray(center, np.float64),
                rows=size, cols=size, pixel_size=2600.0 / size)


def _draw_line(img, a, b, color):
    n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)) * 2
    t = np.linspace(0, 1, n)
    u = np.round(a[0] + t * (b[0] - a[0])).astype(int)
    v = np.round(a[1] + t * (b[1] - a[1])).astype(int)
    ok = (u >= 0) & (u < img.shape[1]) & (v >= 0) & (v < img.shape[0])
    img[v[ok], u[ok]] = color


def _draw_points(img, uv, color, radius=0):
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    for du in range(-radius, radius + 1):
        for dv in range(-radius, radius + 1):
            ok = (u + du >= 0) & (u + du < img.shape[1]) & (v + dv >= 0) & (v + dv < img.shape[0])
            img[v[ok] + dv, u[ok] + du] = color


def overview(renderer: SceneRenderer, state, size: int) -> np.ndarray:
    """(size, size, 3) float32 RGB: the scene and the C-arm of ``state`` seen from a fixed viewpoint."""
    view = _overview_camera(renderer.center, size)
    img = np.full((size, size, 3), 0.08, np.float32)
    if renderer.volume is not None:
        c = renderer.volume.corners()  # 8 corners, index order (i, j, k) bits
        for a in range(8):
            for bit in (1, 2, 4):
                if not a & bit:
                    _draw_line(img, *view.project_points(c[[a, a | bit]]), BOX)
    if len(renderer.mesh_points):
        pts = renderer.mesh_points[:: max(1, len(renderer.mesh_points) // 4000)]
        _draw_points(img, view.project_points(pts), MESH)
        for edges in renderer.mesh_edges:
            uv = view.project_points(edges.reshape(-1, 3)).reshape(-1, 2, 2)
            for a, b in uv:
                _draw_line(img, a, b, MESH)
    cam = state.camera(2)
    src = view.project_points(cam.source[None])[0]
    det = view.project_points(cam.detector_corners())
    for i in range(4):
        _draw_line(img, det[i], det[(i + 1) % 4], DETECTOR)
        _draw_line(img, src, det[i], FRUSTUM)
    _draw_points(img, src[None], SOURCE, radius=3)
    return img
