"""A progress bar on stderr for work over ~2 s: fraction done, elapsed and remaining time, a rate.

``ProgressBar(total, label)`` is called with the amount done so far (any unit: rays, images, iterations);
it draws nothing for work that ends within ``quiet_s`` (0.5 s) or that it expects to take under ``min_s``
(2 s), redraws at most ``fps`` times a second, and ends its line on :meth:`close` (also as a context manager).
"""
from __future__ import annotations

import sys
import time


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class ProgressBar:
    """Progress of ``total`` units of work, drawn on ``stream`` (default stderr).

    Parameters
    ----------
    total : amount of work (> 0)
    label : what is being done (e.g. "rendering")
    unit : name of the unit for the rate (e.g. "rays"); None: no rate shown
    min_s : draw only when the work is expected to take at least this long, s
    quiet_s : and only after this much time has passed, s
    enabled : False: never draw (e.g. ``--quiet``)
    """

    def __init__(self, total: float, label: str, *, unit: str | None = None, stream=None, min_s: float = 2.0,
                 quiet_s: float = 0.5, fps: float = 5.0, enabled: bool = True):
        self.total = float(total)
        self.label = label
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.min_s, self.quiet_s, self.period = float(min_s), float(quiet_s), 1.0 / fps
        self.enabled = enabled and self.total > 0
        self.t0 = time.perf_counter()
        self._last = -1.0
        self.drawn = False

    def __call__(self, done: float) -> None:
        """Report that ``done`` units of the total are finished."""
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        frac = min(max(done / self.total, 0.0), 1.0)
        expected = elapsed / frac if frac > 0 else float("inf")
        if not self.drawn and (elapsed < self.quiet_s or expected < self.min_s):
            return
        if now - self._last < self.period and frac < 1.0:
            return
        self._last = now
        width = 24
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        rate = f", {done / elapsed:.3g} {self.unit}/s" if self.unit and elapsed > 0 else ""
        left = _duration(expected - elapsed) if frac > 0 else "?"
        self.stream.write(f"\r{self.label} [{bar}] {100 * frac:3.0f}% {_duration(elapsed)}, {left} left{rate}  ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the bar's line (if it was drawn)."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
        self.enabled = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
