"""What the viewer shows, as one immutable value, and how input events change it.

``ViewerState`` holds the virtual C-arm (angles in degrees, distances in mm, the table position in mm, world
RAS+ frame), the detector (rows, cols, pixel pitch at full resolution) and the imaging settings (kVp, scatter,
noise dose, output units, display window).  :func:`apply` maps one input event (a dict, the form the headless
script uses) to the next state; the GGUI loop turns mouse and keys into the same events, so a scripted session
and a person's session go through one code path.

Events (``{"type": ...}``):

- ``drag``: ``dx``, ``dy`` in window pixels; orbits the C-arm (0.3 degrees per pixel: right = towards LAO,
  up = towards CRA), or with ``"pan": true`` moves the table (``pan_mm_per_px`` mm per pixel across the image);
- ``wheel``: ``delta`` steps; each moves the detector 20 mm (source-to-detector distance; the source stays, so
  the magnification changes; at least 100 mm beyond the isocentre, at most 2000 mm);
- ``key``: ``key`` one of ``s`` (scatter on/off), ``n`` (noise on/off), ``l`` (line integral / intensity),
  ``+``/``-`` (dose x2 / /2), ``k``/``j`` (kVp +-10), ``[``/``]`` (window narrower/wider), ``r`` (detector
  resolution: cycles 128/256/512), ``0`` (reset to the initial view), and ``p`` (save: handled by the app);
- ``set``: any field of the state by name (``{"type": "set", "primary": 30}``), for scripts and sliders.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

DEG_PER_PX = 0.3
SDD_STEP_MM = 20.0
RESOLUTIONS = (128, 256, 512)


@dataclass(frozen=True)
class ViewerState:
    """The viewer's state (see the module doc for units and frames)."""

    primary: float = 0.0  # LAO(+)/RAO(-), degrees
    secondary: float = 0.0  # CRA(+)/CAU(-), degrees
    sdd: float = 1150.0  # source to detector, mm
    sid: float = 750.0  # source to isocentre, mm
    isocenter: tuple = (0.0, 0.0, 0.0)  # world mm (the table moves it)
    detector_mm: float = 400.0  # detector side, mm (square)
    resolution: int = 256  # detector pixels per side at full resolution
    kvp: float = 90.0
    scatter: bool = False
    noise: bool = False
    photons: float = 2e4  # detected photons per pixel of the open beam, at full resolution
    line_integral: bool = True  # -ln(I/I0) (bright bone) or I/I0
    window_scale: float = 1.0  # display window width relative to the automatic window
    seed: int = 0

    def camera(self, resolution: int | None = None):
        """The engine Camera of this state (``resolution`` pixels per side; default the full one)."""
        from ..geometry import carm

        n = int(resolution or self.resolution)
        return carm(primary=self.primary, secondary=self.secondary, sid=self.sid, sdd=self.sdd,
                    isocenter=np.asarray(self.isocenter, np.float64), rows=n, cols=n,
                    pixel_size=self.detector_mm / n)

    def angles_text(self) -> str:
        """``LAO 30.0 CRA 10.0``-style angles in the clinical convention."""
        p = f"{'LAO' if self.primary >= 0 else 'RAO'} {abs(self.primary):.1f}"
        s = f"{'CRA' if self.secondary >= 0 else 'CAU'} {abs(self.secondary):.1f}"
        return f"{p}  {s}"

    def readout(self, frame_ms: float | None = None, backend: str = "") -> list:
        """Lines of the on-screen readout."""
        lines = [self.angles_text(), f"SDD {self.sdd:.0f} mm  SID {self.sid:.0f} mm",
                 f"{self.resolution} px, {self.kvp:.0f} kVp, scatter {'on' if self.scatter else 'off'}, "
                 f"noise {'%.3g photons' % self.photons if self.noise else 'off'}",
                 f"{'-ln(I/I0)' if self.line_integral else 'I/I0'}, window x{self.window_scale:.2f}"]
        if frame_ms is not None:
            lines.append(f"frame {frame_ms:.0f} ms  ({backend})")
        return lines


def _clip_angle(a: float, lo: float = -180.0, hi: float = 180.0) -> float:
    return float(np.clip(a, lo, hi))


def apply(state: ViewerState, event: dict, initial: ViewerState | None = None) -> ViewerState:
    """The state after one event (see the module doc); unknown events raise ValueError naming them."""
    kind = event.get("type")
    if kind == "drag":
        dx, dy = float(event.get("dx", 0.0)), float(event.get("dy", 0.0))
        if event.get("pan"):
            cam = state.camera()
            mm = state.detector_mm / 512.0 * state.sid / state.sdd  # per window pixel, at the isocentre
            move = (-dx * cam.u_axis + dy * cam.v_axis) * mm
            return dataclasses.replace(state, isocenter=tuple(np.asarray(state.isocenter) + move))
        return dataclasses.replace(state, primary=_clip_angle(state.primary + DEG_PER_PX * dx),
                                   secondary=_clip_angle(state.secondary + DEG_PER_PX * dy, -90.0, 90.0))
    if kind == "wheel":
        sdd = float(np.clip(state.sdd + SDD_STEP_MM * float(event.get("delta", 0.0)), state.sid + 100.0, 2000.0))
        return dataclasses.replace(state, sdd=sdd)
    if kind == "key":
        k = str(event.get("key", ""))
        if k == "s":
            return dataclasses.replace(state, scatter=not state.scatter)
        if k == "n":
            return dataclasses.replace(state, noise=not state.noise)
        if k == "l":
            return dataclasses.replace(state, line_integral=not state.line_integral)
        if k in ("+", "="):
            return dataclasses.replace(state, photons=min(state.photons * 2.0, 1e7))
        if k == "-":
            return dataclasses.replace(state, photons=max(state.photons / 2.0, 10.0))
        if k in ("k", "j"):
            kvp = float(np.clip(state.kvp + (10.0 if k == "k" else -10.0), 50.0, 150.0))
            return dataclasses.replace(state, kvp=kvp)
        if k in ("[", "]"):
            return dataclasses.replace(state, window_scale=state.window_scale * (0.8 if k == "[" else 1.25))
        if k == "r":
            i = RESOLUTIONS.index(state.resolution) if state.resolution in RESOLUTIONS else 0
            return dataclasses.replace(state, resolution=RESOLUTIONS[(i + 1) % len(RESOLUTIONS)])
        if k == "0":
            return initial if initial is not None else ViewerState(isocenter=state.isocenter)
        if k == "p":
            return state  # saving is the app's
        raise ValueError(f"unknown key {k!r} (keys: s n l + - k j [ ] r 0 p)")
    if kind == "set":
        fields = {f.name for f in dataclasses.fields(ViewerState)}
        values = {k: v for k, v in event.items() if k != "type"}
        bad = sorted(set(values) - fields)
        if bad:
            raise ValueError(f"unknown viewer setting(s) {bad}; known: {sorted(fields)}")
        if "isocenter" in values:
            values["isocenter"] = tuple(float(x) for x in values["isocenter"])
        return dataclasses.replace(state, **values)
    raise ValueError(f"unknown event type {kind!r} (drag, wheel, key, set)")
