"""Watching an optimisation: the target X-rays with the current estimate over them, and the loss curve.

``Watcher`` is a callback for :func:`engine.recon.reconstruct` (``callback=watcher``: the current mesh's vertices,
projected, over each target, in red) and, through :meth:`Watcher.registration`, for
:meth:`engine.registration.Registration.run` (the current DRR's edges over each target).  It draws into a GGUI
window (or headless, writing ``watch_NNN.png`` every ``every`` steps) at most every ``period_s`` seconds, so it
costs the optimisation little.  Returns None (never stops the optimisation); closing the window stops
drawing.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import backend
from .render import resize_nearest

SIZE = (1280, 720)
CURVE_H = 200  # pixels of the loss curve at the bottom


def _grey(img) -> np.ndarray:
    a = np.asarray(img, np.float64)
    lo, hi = np.percentile(a, (1.0, 99.5))
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


class Watcher:
    """Shows target images with the current estimate and the loss curve.

    Parameters
    ----------
    targets : (n, rows, cols) target images (any units; each windowed on its own)
    cameras : their Cameras
    show_window : False: headless, screenshots to ``out_dir``
    out_dir : where headless screenshots go (``watch_NNN.png``)
    every : headless: a screenshot every this many steps
    period_s : at most one redraw per this many seconds (the first and the last step are always drawn)
    """

    def __init__(self, targets, cameras, *, show_window: bool = True, out_dir="out/watch", every: int = 10,
                 period_s: float = 0.2):
        self.targets = [_grey(t) for t in targets]
        self.cameras = list(cameras)
        if len(self.targets) != len(self.cameras) or not self.cameras:
            raise ValueError("give one camera per target image")
        self.show_window = show_window
        self.out_dir = Path(out_dir)
        self.every, self.period = int(every), float(period_s)
        self.losses = []
        self.steps = 0
        self.shots = []
        self._last = -np.inf
        ti = backend.ti_module()
        self.ti = ti
        self.window = ti.ui.Window("engine: watching the fit", SIZE, show_window=show_window)
        self.canvas = self.window.get_canvas()
        self.gui = self.window.get_gui()
        self.field = ti.Vector.field(3, ti.f32, shape=SIZE)
        self.title = ""

    # ------------------------------------------------------------------ callbacks
    def __call__(self, info: dict):
        """:func:`engine.recon.reconstruct`'s callback: ``info`` has ``loss``, ``vertices`` (world mm), ``stage``."""
        self._step(float(info["loss"]), f"stage {info.get('stage', 0) + 1}, iteration {info.get('iteration', 0) + 1}",
                   lambda i: ("points", self.cameras[i].project_points(np.asarray(info["vertices"]))))
        return None

    def registration(self, reg):
        """A callback for :meth:`Registration.run` that shows the current DRR's edges over the targets."""
        def cb(level, iteration, loss, pose):
            def overlay(i):
                drr = reg.drrs(pose)[i]
                return "image", drr

            self._step(float(loss), f"binning {level}, iteration {iteration + 1}", overlay)
        return cb

    # ------------------------------------------------------------------ drawing
    def _step(self, loss: float, title: str, overlay) -> None:
        self.losses.append(loss)
        self.steps += 1
        self.title = title
        now = time.perf_counter()
        if self.show_window:
            due = now - self._last >= self.period
        else:
            due = self.every == 1 or self.steps % self.every == 1
        if not due:
            return
        self._last = now
        self.draw(overlay)

    def frame(self, overlay) -> np.ndarray:
        """(720, 1280, 3) float32: the targets side by side with the overlay in red, the loss curve below."""
        w, h = SIZE
        out = np.zeros((h, w, 3), np.float32)
        n = len(self.targets)
        side = min((h - CURVE_H), w // n)
        for i, t in enumerate(self.targets):
            panel = np.repeat(resize_nearest(t, side, side)[..., None], 3, axis=2).astype(np.float32)
            kind, data = overlay(i)
            rows, cols = t.shape
            if kind == "points":
                uv = np.asarray(data)
                u = np.round((uv[:, 0] + 0.5) * side / cols - 0.5).astype(int)
                v = np.round((uv[:, 1] + 0.5) * side / rows - 0.5).astype(int)
                ok = (u >= 0) & (u < side) & (v >= 0) & (v < side)
                panel[v[ok], u[ok]] = (1.0, 0.2, 0.2)
            else:  # an image: its edges (gradient magnitude above its 90th percentile) in red
                g = resize_nearest(_grey(data), side, side)
                mag = np.hypot(*np.gradient(g))
                panel[mag > np.percentile(mag, 90)] = (1.0, 0.2, 0.2)
            out[:side, i * side:(i + 1) * side] = panel
        self._curve(out[h - CURVE_H:, :])
        return out

    def _curve(self, area: np.ndarray) -> None:
        """The loss curve (log scale when it spans more than a decade) into ``area`` (CURVE_H, width, 3)."""
        area[:] = 0.06
        y = np.asarray(self.losses, np.float64)
        if y.size < 2:
            return
        if y.min() > 0 and y.max() / y.min() > 10:
            y = np.log10(y)
        hgt, wid = area.shape[:2]
        x = np.linspace(10, wid - 10, y.size)
        yy = (hgt - 10) - (y - y.min()) / max(np.ptp(y), 1e-12) * (hgt - 20)
        for k in range(y.size - 1):
            t = np.linspace(0, 1, int(abs(x[k + 1] - x[k]) + abs(yy[k + 1] - yy[k])) + 2)
            xs = np.round(x[k] + t * (x[k + 1] - x[k])).astype(int)
            ys = np.round(yy[k] + t * (yy[k + 1] - yy[k])).astype(int)
            area[np.clip(ys, 0, hgt - 1), np.clip(xs, 0, wid - 1)] = (0.4, 0.9, 0.4)

    def draw(self, overlay) -> None:
        frame = self.frame(overlay)
        self.field.from_numpy(np.ascontiguousarray(frame[::-1].transpose(1, 0, 2)))
        self.canvas.set_image(self.field)
        with self.gui.sub_window("fit", 0.5, (SIZE[1] - CURVE_H) / SIZE[1], 0.5, 0.07) as g:
            g.text(f"{self.title}   loss {self.losses[-1]:.5g}   (green: loss curve; red: current estimate)")
        if self.show_window:
            if self.window.running:
                self.window.show()
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            p = self.out_dir / f"watch_{len(self.shots):03d}.png"
            self.window.save_image(str(p))
            self.shots.append(p)
