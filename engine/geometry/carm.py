"""C-arm geometry in the clinical convention of docs/conventions.md.

At primary 0 / secondary 0 (an "AP" view of a supine patient) the source is
posterior (under the table) and the detector anterior; the image is displayed the
radiological way, as if facing the patient: the patient's right on the image's
left, head towards row 0.  Positive primary = LAO (detector towards the
patient's left), negative = RAO; positive secondary = CRA (detector towards the
head), negative = CAU.  World frame RAS+ (x right, y anterior, z superior), mm.

The detector's direction as seen from the isocentre is
``n = (-sin a cos b, cos a cos b, sin b)`` for primary ``a`` and secondary ``b``,
i.e. ``n = Rz(a) Rx(b) (0, 1, 0)``; the detector's axes turn with it.  LAO 90 is a
left lateral view (source on the patient's right, anterior on the image's left).
"""
from __future__ import annotations

import numpy as np

from .camera import Camera, from_source_detector
from .transforms import axis_rotation


def carm_rotation(primary_deg: float, secondary_deg: float) -> np.ndarray:
    """(3, 3) world rotation taking the AP C-arm to the given angles (degrees)."""
    return axis_rotation("z", np.radians(primary_deg)) @ axis_rotation("x", np.radians(secondary_deg))


def carm_angles(camera: Camera) -> tuple[float, float]:
    """(primary, secondary) C-arm angles (degrees) whose detector direction is ``camera``'s principal axis: the
    inverse of :func:`carm_rotation` on ``n = (-sin a cos b, cos a cos b, sin b)`` (the detector's roll about
    the axis is not recovered)."""
    d = camera.principal_axis  # source -> detector
    return float(np.degrees(np.arctan2(-d[0], d[1]))), float(np.degrees(np.arcsin(np.clip(d[2], -1, 1))))


def carm(*, primary: float = 0.0, secondary: float = 0.0, sid: float = 750.0, sdd: float = 1200.0,
         isocenter=(0.0, 0.0, 0.0), rows: int = 512, cols: int = 512, pixel_size=0.6) -> Camera:
    """A C-arm camera from clinical angles.

    Parameters
    ----------
    primary : float
        LAO (+) / RAO (-) angle, degrees.
    secondary : float
        CRA (+) / CAU (-) angle, degrees.
    sid : float
        Source-to-isocentre distance, mm.
    sdd : float
        Source-to-detector distance, mm (> sid).
    isocenter : (3,) world mm
        The point the central ray passes through (e.g. the centre of the CT).
    rows, cols : int
        Detector pixels.
    pixel_size : float or (float, float)
        Detector pixel pitch, mm: one number (square pixels) or ``(row pitch, column pitch)``.

    Returns
    -------
    Camera, mirrored for radiological display, principal point at the detector centre.
    """
    sid, sdd = float(sid), float(sdd)
    if not (np.isfinite(sid) and sid > 0):
        raise ValueError(f"sid must be a positive distance in mm, got {sid}")
    if not (np.isfinite(sdd) and sdd > sid):
        raise ValueError(f"sdd must exceed sid ({sid} mm), got {sdd}")
    iso = np.asarray(isocenter, dtype=np.float64)
    if iso.shape != (3,) or not np.all(np.isfinite(iso)):
        raise ValueError(f"isocenter must be 3 finite numbers in mm, got {isocenter!r}")
    rot = carm_rotation(primary, secondary)
    n = rot @ np.array([0.0, 1.0, 0.0])  # towards the detector
    u = rot @ np.array([-1.0, 0.0, 0.0])  # columns: towards the patient's left at AP
    v = rot @ np.array([0.0, 0.0, -1.0])  # rows: towards the feet at AP
    return from_source_detector(source=iso - sid * n, detector_center=iso + (sdd - sid) * n,
                                u_axis=u, v_axis=v, rows=rows, cols=cols, pixel_size=pixel_size)
