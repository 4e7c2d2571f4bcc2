"""Targets of reconstruction: X-ray intensities as line integrals, which grow with the amount of bone like the
model's renders do."""
from __future__ import annotations

import numpy as np


def line_integral(intensity, i0: float | None = None) -> np.ndarray:
    """``-log(I / I0)`` of an X-ray (I0: default the largest value, i.e. an unattenuated pixel)."""
    i = np.asarray(intensity, np.float64)
    if np.any(~np.isfinite(i)) or np.any(i <= 0):
        raise ValueError("intensities must be finite and positive to take a line integral")
    return -np.log(i / (i.max() if i0 is None else float(i0)))
