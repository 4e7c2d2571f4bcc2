"""The live viewer: a Taichi GGUI window with the X-ray large, the C-arm overview beside it and a readout.

One code path for people and scripts: mouse and keys become the events of :mod:`engine.viewer.state`, and a
headless session (``show_window=False``, Mesa's lavapipe where there is no GPU) replays a list of such events,
writing a screenshot after each.  Controls: left drag orbits the C-arm (right = LAO, up = CRA), shift + drag
(or right drag) pans the table, the up/down arrows change the source-to-detector distance (Taichi 1.7's GGUI
reports no mouse wheel; scripts may send ``wheel`` events), keys as in :mod:`engine.viewer.state`, ``p`` saves
the X-ray (PNG + float32 TIFF), its camera (JSON) and the ``engine drr`` command that renders it again.
While the mouse drags, frames render at 128 pixels; when it stops, at the full resolution.
"""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import numpy as np

from .. import backend
from .render import display, overview, resize_nearest
from .state import ViewerState, apply

WINDOW = (1280, 720)  # pixels: X-ray panel 720 x 720 on the left, overview 560 x 560 top right, readout below
PANEL = 720
OVERVIEW = 560
PREVIEW = 128


def compose(xray_rgb: np.ndarray, over_rgb: np.ndarray) -> np.ndarray:
    """(720, 1280, 3) float32 frame, top row first: the X-ray scaled to 720 x 720 (nearest) on the left, the
    overview at the top right."""
    frame = np.zeros((WINDOW[1], WINDOW[0], 3), np.float32)
    frame[:PANEL, :PANEL] = resize_nearest(xray_rgb, PANEL, PANEL)
    frame[:OVERVIEW, PANEL:PANEL + OVERVIEW] = over_rgb
    return frame


class Viewer:
    """A viewer window over a :class:`engine.viewer.render.SceneRenderer`.

    Parameters
    ----------
    renderer : SceneRenderer
    state : ViewerState (the initial view; key ``0`` returns to it)
    show_window : False for headless (screenshots with :meth:`screenshot`)
    out_dir : where the save key writes (default ``out/viewer``)
    drr_source : the CT path and mesh arguments for the saved ``engine drr`` command (text)
    """

    def __init__(self, renderer, state: ViewerState, *, show_window: bool = True, out_dir="out/viewer",
                 drr_source: str = "CT"):
        self.ti = backend.ti_module()
        self.renderer = renderer
        self.initial = self.state = state
        self.out_dir = Path(out_dir)
        self.drr_source = drr_source
        self.window = self.ti.ui.Window("engine viewer: a virtual C-arm", WINDOW, show_window=show_window,
                                        vsync=show_window)
        self.canvas = self.window.get_canvas()
        self.gui = self.window.get_gui()
        self.field = self.ti.Vector.field(3, self.ti.f32, shape=WINDOW)
        self.frame_ms = float("nan")
        self.image = None  # the last full-resolution X-ray (float32, output units)
        self.saved = 0
        self.arch = backend.current().arch

    # ------------------------------------------------------------------ drawing
    def render(self, preview: bool = False) -> None:
        """Render the X-ray of the current state (at 128 px when ``preview``) and the overview into the canvas."""
        t = time.perf_counter()
        res = min(PREVIEW, self.state.resolution) if preview else None
        img = self.renderer.image(self.state, res)
        if not preview:
            self.image = img
        frame = compose(display(img, self.state), overview(self.renderer, self.state, OVERVIEW))
        self.field.from_numpy(np.ascontiguousarray(frame[::-1].transpose(1, 0, 2)))
        self.frame_ms = (time.perf_counter() - t) * 1e3

    def draw(self) -> None:
        """Put the frame and the readout (and the controls) on the window."""
        self.canvas.set_image(self.field)
        with self.gui.sub_window("C-arm", PANEL / WINDOW[0] + 0.005, OVERVIEW / WINDOW[1] + 0.01, 0.43, 0.2) as g:
            for line in self.state.readout(self.frame_ms, self.arch):
                g.text(line)
            g.text("drag: orbit  shift+drag: pan  up/down: SDD  s n l + - k j [ ] r 0  p: save")

    def screenshot(self, path) -> Path:
        """Write what the window shows (PNG)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.draw()
        self.window.save_image(str(p))
        return p

    # ------------------------------------------------------------------ events
    def handle(self, event: dict) -> None:
        """Apply one event: the state changes (:func:`engine.viewer.state.apply`) or the save key saves."""
        if event.get("type") == "key" and event.get("key") == "p":
            self.save()
            return
        self.state = apply(self.state, event, self.initial)

    def save(self) -> list:
        """Save the full-resolution X-ray as PNG and float32 TIFF, its camera as JSON and the ``engine drr``
        command that renders the same image from them; returns the paths."""
        from ..imageio import save_image
        from ..outputs import write_text

        if self.image is None or self.image.shape[0] != self.state.resolution:
            self.render()
        self.saved += 1
        stem = self.out_dir / f"view_{self.saved:03d}"
        cam = self.state.camera()
        paths = save_image(stem.with_suffix(".png"), self.image) + save_image(stem.with_suffix(".tiff"), self.image)
        paths.append(write_text(stem.with_suffix(".json"), cam.to_json() + "\n"))
        paths.append(write_text(stem.with_suffix(".txt"), " ".join(self.drr_command(stem)) + "\n"))
        return paths

    def drr_command(self, stem) -> list:
        """The ``engine drr`` arguments that render the saved image again (same camera, physics and seed)."""
        s = self.state
        cmd = ["engine", "drr", *shlex.split(self.drr_source), "--camera", f"{stem}.json", "--out",
               f"{stem}_drr.tiff", "--kvp", f"{s.kvp:g}", "--seed", str(s.seed)]
        for path, material in self._scene_meshes():
            cmd += ["--mesh", str(path), "--material", material]
        if s.scatter:
            cmd.append("--scatter")
        if s.noise:
            cmd += ["--noise", "--photons", f"{s.photons:g}"]
        if s.line_integral:
            cmd.append("--line-integral")
        return cmd

    def _scene_meshes(self) -> list:
        """The scene's meshes written once to ``out_dir/scene_mesh_N.ply`` (so the saved command has them)."""
        from ..mesh import save_mesh

        if getattr(self, "_mesh_files", None) is None:
            self._mesh_files = []
            for i, (mesh, material) in enumerate(self.renderer.mesh_list):
                p = self.out_dir / f"scene_mesh_{i}.ply"
                save_mesh(p, mesh)
                self._mesh_files.append((p, material))
        return self._mesh_files

    # ------------------------------------------------------------------ loops
    def run_script(self, events, out_dir) -> list:
        """Headless: render, then per event apply it, render (full resolution) and write ``step_NNN.png``;
        returns the screenshot paths (``step_000.png`` is the initial view)."""
        out = Path(out_dir)
        self.render()
        shots = [self.screenshot(out / "step_000.png")]
        for i, ev in enumerate(events, 1):
            self.handle(ev)
            if ev.get("type") == "drag":
                self.render(preview=True)  # what a drag shows, then the refined frame when it stops
            self.render()
            shots.append(self.screenshot(out / f"step_{i:03d}.png"))
        return shots

    def run(self) -> None:
        """The interactive loop (until the window closes or Escape)."""
        ti = self.ti
        w = self.window
        self.render()
        last = None
        dragging = False
        while w.running:
            for e in w.get_events(ti.ui.PRESS):
                if e.key == ti.ui.ESCAPE:
                    w.running = False
                elif e.key == ti.ui.UP:
                    self.handle({"type": "wheel", "delta": 1})
                elif e.key == ti.ui.DOWN:
                    self.handle({"type": "wheel", "delta": -1})
                elif isinstance(e.key, str) and len(e.key) == 1:
                    try:
                        self.handle({"type": "key", "key": e.key})
                    except ValueError:
                        continue
                else:
                    continue
                self.render()
            pressed = w.is_pressed(ti.ui.LMB) or w.is_pressed(ti.ui.RMB)
            x, y = w.get_cursor_pos()
            if pressed and last is not None and x < PANEL / WINDOW[0]:
                dx, dy = (x - last[0]) * WINDOW[0], (y - last[1]) * WINDOW[1]
                if dx or dy:
                    pan = w.is_pressed(ti.ui.SHIFT) or w.is_pressed(ti.ui.RMB)
                    self.handle({"type": "drag", "dx": dx, "dy": dy, "pan": pan})
                    self.render(preview=True)
                    dragging = True
            elif dragging and not pressed:
                self.render()  # the mouse is still: refine
                dragging = False
            last = (x, y) if pressed else None
            self.draw()
            w.show()
