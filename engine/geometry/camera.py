"""Projective X-ray camera: a point source and a flat detector.

Frames (see docs/conventions.md):

* **world**: the CT's patient frame, RAS+ (x to the patient's right, y anterior,
  z superior), mm.
* **camera**: origin at the X-ray source; +z along the principal ray, from the
  source towards the detector; +y along increasing detector rows (down the
  displayed image); +x = y cross z (so the frame is right-handed).  The detector
  plane is ``z = sdd``.
* **pixel**: ``(col, row)`` = ``(u, v)``, continuous; the centre of pixel
  ``[row, col]`` of an image array is at ``u = col, v = row`` (integer centres,
  as in OpenCV).  Row 0 is the top of the displayed image.

Pixels may be rectangular: ``pixel_spacing = (row pitch, column pitch)`` in mm, in the order of DICOM's
Pixel Spacing (0028,0030): the first number is the distance between the centres of adjacent rows (the
pixel's height, along ``v``), the second between adjacent columns (its width, along ``u``).
``pixel_size`` is the one pitch of square pixels.

A world point projects as ``x ~ K [R | t] X`` with ``[R | t]`` the rigid
``camera_from_world`` and

``K = [[s * fu, 0, cu], [0, fv, cv], [0, 0, 1]]``, ``fu = sdd / column pitch``, ``fv = sdd / row pitch``,

where ``s = -1`` when the detector is *mirrored* (its columns run along -x of
the camera frame) and ``+1`` otherwise.  Radiological display (the image seen
from the detector side, as if facing the patient, which is what the C-arm
constructor produces) is mirrored: a projective camera at the source with a
proper rotation would otherwise show the patient's right on the image's right.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

_JSON_VERSION = 1


def as_pixel_spacing(value, name: str = "pixel_size") -> tuple[float, float]:
    """``(row pitch, column pitch)`` (mm) from one pitch (square pixels) or a pair ``(row, column)``; raises
    ``ValueError`` naming ``name`` for anything else than one or two positive finite lengths."""
    v = np.atleast_1d(np.asarray(value, dtype=object))
    if v.ndim != 1 or v.size not in (1, 2):
        raise ValueError(f"{name} must be one pitch (square pixels) or a pair (row pitch, column pitch) in mm, "
                         f"got {value!r}")
    try:
        out = tuple(float(x) for x in (v if v.size == 2 else (v[0], v[0])))
    except (TypeError, ValueError):
        out = (float("nan"),)
    if not all(np.isfinite(out)) or min(out) <= 0:
        raise ValueError(f"{name} must be a positive length in mm (or a pair: row pitch, column pitch), "
                         f"got {value!r}")
    return out


def square_pitch(spacing, what: str) -> float:
    """The pitch of square pixels ``spacing = (row, column)``; ``ValueError`` for rectangular pixels, naming
    ``what`` (the quantity that needs one pitch)."""
    r, c = spacing
    if r != c:
        raise ValueError(f"{what} is defined for square pixels only; these are {r:g} mm (rows) x {c:g} mm "
                         "(columns): use pixel_spacing (row pitch, column pitch)")
    return r


def _as_rigid(m) -> np.ndarray:
    m = np.array(m, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"camera_from_world must be a 4x4 matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("camera_from_world contains NaN or inf")
    r = m[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise ValueError("camera_from_world[:3, :3] must be a proper rotation (orthonormal, det +1)")
    if not np.allclose(m[3], [0, 0, 0, 1]):
        raise ValueError("camera_from_world's last row must be [0, 0, 0, 1]")
    return m


@dataclass(frozen=True, kw_only=True, eq=False, init=False)
class Camera:
    """Point source + flat detector.  World = CT patient frame (RAS+, mm).

    Parameters
    ----------
    rows, cols : int
        Detector shape in pixels; row 0 is the top of the displayed image.
    pixel_size : float or (float, float)
        Detector pixel pitch, mm: one number for square pixels, or a pair ``(row pitch, column pitch)``
        (the height and the width of a pixel, DICOM's Pixel Spacing order; see the module doc).
    pixel_spacing : (float, float), optional
        The same pair, ``(row pitch, column pitch)``; give ``pixel_size`` or ``pixel_spacing``, not both.
        :attr:`pixel_spacing` is always the pair; :attr:`pixel_size` is the one pitch of square pixels (a
        ``ValueError`` for rectangular ones).
    sdd : float
        Source-to-detector distance along the principal ray, mm.
    camera_from_world : (4, 4) array
        Rigid transform from world (mm) to the camera frame (mm), see module doc.
    principal_point : (2,) float, optional
        ``(u, v)`` pixel coordinates of the foot of the perpendicular from the
        source to the detector; default the detector centre
        ``((cols - 1) / 2, (rows - 1) / 2)``.
    mirrored : bool
        True when the detector's columns run along -x of the camera frame
        (radiological display, see module doc).
    """

    rows: int
    cols: int
    pixel_spacing: tuple[float, float]
    sdd: float
    camera_from_world: np.ndarray = field(repr=False)
    principal_point: tuple[float, float] | None = None
    mirrored: bool = False

    def __init__(self, *, rows: int, cols: int, sdd: float, camera_from_world, pixel_size=None, pixel_spacing=None,
                 principal_point=None, mirrored: bool = False):
        if (pixel_size is None) == (pixel_spacing is None):
            raise ValueError("give the detector pixel pitch as pixel_size (one pitch, or row and column pitch) or "
                             "as pixel_spacing (row pitch, column pitch), not both" if pixel_size is not None else
                             "a camera needs its pixel pitch: pixel_size (mm) or pixel_spacing (row, column mm)")
        if pixel_spacing is not None and np.size(np.asarray(pixel_spacing, dtype=object)) != 2:
            raise ValueError(f"pixel_spacing must be a pair (row pitch, column pitch) in mm, got {pixel_spacing!r}")
        spacing = as_pixel_spacing(pixel_size if pixel_spacing is None else pixel_spacing,
                                   "pixel_size" if pixel_spacing is None else "pixel_spacing")
        for name, v in (("rows", rows), ("cols", cols), ("sdd", sdd), ("camera_from_world", camera_from_world),
                        ("principal_point", principal_point), ("mirrored", mirrored), ("pixel_spacing", spacing)):
            object.__setattr__(self, name, v)
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if int(v) != v or v <= 0:
                raise ValueError(f"detector {name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        v = float(self.sdd)
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"sdd must be a positive length in mm, got {v!r}")
        object.__setattr__(self, "sdd", v)
        pp = self.principal_point
        if pp is None:
            pp = ((self.cols - 1) / 2.0, (self.rows - 1) / 2.0)
        pp = tuple(float(x) for x in pp)
        if len(pp) != 2 or not all(np.isfinite(pp)):
            raise ValueError(f"principal_point must be two finite pixel coordinates, got {pp!r}")
        object.__setattr__(self, "principal_point", pp)
        object.__setattr__(self, "mirrored", bool(self.mirrored))
        m = _as_rigid(self.camera_from_world)
        m.setflags(write=False)
        object.__setattr__(self, "camera_from_world", m)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return ((self.rows, self.cols, self.pixel_spacing, self.sdd, self.principal_point, self.mirrored)
                == (other.rows, other.cols, other.pixel_spacing, other.sdd, other.principal_point, other.mirrored)
                and np.array_equal(self.camera_from_world, other.camera_from_world))

    __hash__ = None

    # ------------------------------------------------------------------ pixels
    @property
    def pixel_size(self) -> float:
        """The pitch of square pixels, mm; ``ValueError`` for rectangular ones (use :attr:`pixel_spacing`)."""
        return square_pitch(self.pixel_spacing, "pixel_size")

    @property
    def square_pixels(self) -> bool:
        """True when rows and columns have the same pitch."""
        return self.pixel_spacing[0] == self.pixel_spacing[1]

    @property
    def pixel_area(self) -> float:
        """Area of one detector pixel, mm^2 (row pitch x column pitch)."""
        return self.pixel_spacing[0] * self.pixel_spacing[1]

    # ------------------------------------------------------------------ matrices
    @property
    def focal_px(self) -> float:
        """Focal length in pixels of square pixels, ``sdd / pixel_size`` (see :attr:`focal_uv`)."""
        return self.sdd / square_pitch(self.pixel_spacing, "focal_px")

    @property
    def focal_uv(self) -> tuple[float, float]:
        """Focal lengths in pixels along columns and rows, ``(sdd / column pitch, sdd / row pitch)``."""
        return self.sdd / self.pixel_spacing[1], self.sdd / self.pixel_spacing[0]

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix (pixels), with ``K[0, 0] < 0`` when mirrored."""
        fu, fv = self.focal_uv
        cu, cv = self.principal_point
        return np.array([[-fu if self.mirrored else fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])

    @property
    def R(self) -> np.ndarray:
        """(3, 3) rotation part of ``camera_from_world``."""
        return self.camera_from_world[:3, :3]

    @property
    def world_from_camera(self) -> np.ndarray:
        """(4, 4) inverse of ``camera_from_world``."""
        out = np.eye(4)
        out[:3, :3] = self.R.T
        out[:3, 3] = -self.R.T @ self.camera_from_world[:3, 3]
        return out

    @property
    def P(self) -> np.ndarray:
        """(3, 4) projection matrix ``K [R | t]``: world mm -> homogeneous pixels."""
        return self.K @ self.camera_from_world[:3, :]

    @property
    def source(self) -> np.ndarray:
        """(3,) X-ray source position, world mm."""
        return self.world_from_camera[:3, 3].copy()

    @property
    def principal_axis(self) -> np.ndarray:
        """(3,) unit vector from the source towards the detector plane, world frame."""
        return self.R[2].copy()

    @property
    def u_axis(self) -> np.ndarray:
        """(3,) unit vector along increasing detector columns, world frame."""
        return -self.R[0] if self.mirrored else self.R[0].copy()

    @property
    def v_axis(self) -> np.ndarray:
        """(3,) unit vector along increasing detector rows (down the image), world frame."""
        return self.R[1].copy()

    def detector_point(self, u, v) -> np.ndarray:
        """World position (mm) of detector pixel coordinates ``(u, v)`` (arrays broadcast)."""
        u = np.asarray(u, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        cu, cv = self.principal_point
        row_mm, col_mm = self.pixel_spacing
        foot = self.source + self.sdd * self.principal_axis
        return (foot + ((u - cu) * col_mm)[..., None] * self.u_axis
                + ((v - cv) * row_mm)[..., None] * self.v_axis)

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(source, centre of pixel [0, 0], step per column, step per row): world mm, each (3,).

        The centre of pixel [r, c] is ``p00 + c * du + r * dv``; kernels build their rays from these
        (:mod:`engine.geometry.rays`).
        """
        row_mm, col_mm = self.pixel_spacing
        return (self.source, self.detector_point(0.0, 0.0), self.u_axis * col_mm, self.v_axis * row_mm)

    @property
    def detector_center(self) -> np.ndarray:
        """(3,) world position of the centre of the detector (mm)."""
        return self.detector_point((self.cols - 1) / 2.0, (self.rows - 1) / 2.0)

    def detector_corners(self) -> np.ndarray:
        """(4, 3) world positions (mm) of the detector's outer corners: top left, top right, bottom right,
        bottom left as displayed (pixel coordinates ``(-1/2, -1/2)``, ``(cols - 1/2, -1/2)``, ...)."""
        u0, u1, v0, v1 = -0.5, self.cols - 0.5, -0.5, self.rows - 0.5
        return self.detector_point(np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))

    def depth(self, points) -> np.ndarray:
        """Distance (mm) of world points (..., 3) in front of the source along the principal axis (the camera
        frame's z; <= 0 on or behind the source's plane)."""
        return (np.asarray(points, np.float64) - self.source) @ self.principal_axis

    def on_detector(self, uv) -> np.ndarray:
        """Boolean (...,): pixel coordinates (..., 2) ``(u, v)`` that fall on the detector,
        ``-1/2 <= u <= cols - 1/2`` and ``-1/2 <= v <= rows - 1/2`` (NaN: False)."""
        uv = np.asarray(uv, np.float64)
        u, v = uv[..., 0], uv[..., 1]
        return (u >= -0.5) & (u <= self.cols - 0.5) & (v >= -0.5) & (v <= self.rows - 0.5)

    def sees(self, points) -> np.ndarray:
        """Boolean (...,): world points (..., 3) in front of the source that project onto the detector."""
        return self.on_detector(self.project_points(points))

    def may_see(self, points) -> bool:
        """Whether some part of the convex hull of world points (n, 3) (e.g. a box's corners) may project onto
        the detector: conservative (True when the hull straddles the source's plane)."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        z = self.depth(p)
        if np.all(z <= 0):
            return False
        if np.any(z <= 0):  # straddles the source plane: its projection is unbounded
            return True
        uv = self.project_points(p)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        return bool(hi[0] >= -0.5 and lo[0] <= self.cols - 0.5 and hi[1] >= -0.5 and lo[1] <= self.rows - 0.5)

    # ------------------------------------------------------------------- rays
    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and per-pixel ray ends.

        Returns
        -------
        source : (3,) float64, world mm
        targets : (rows, cols, 3) float64
            World position of the centre of each detector pixel; the ray of pixel
            ``[r, c]`` runs from ``source`` to ``targets[r, c]``.
        """
        v, u = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        return self.source, self.detector_point(u, v)

    def project_points(self, points) -> np.ndarray:
        """Project world points (mm) to continuous pixel coordinates.

        Parameters
        ----------
        points : (..., 3) array, world mm

        Returns
        -------
        (..., 2) float64 array of ``(u, v)`` = ``(col, row)``; NaN for points on
        or behind the source plane (``z_camera <= 0``).
        """
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1] != 3:
            raise ValueError(f"points must have shape (..., 3), got {p.shape}")
        h = p @ self.P[:, :3].T + self.P[:, 3]
        z = h[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = h[..., :2] / z
        return np.where(z > 0, uv, np.nan)

    # --------------------------------------------------------------- transforms
    def moved(self, world_from_world) -> "Camera":
        """The same camera after moving it rigidly by ``world_from_world`` (4x4)."""
        t = _as_rigid(world_from_world)
        return self.replace(camera_from_world=self.camera_from_world @ np.linalg.inv(t))

    def binned(self, factor: int) -> "Camera":
        """The detector read out in ``factor x factor`` bins: ``rows // factor`` x ``cols // factor`` pixels of
        ``factor`` times the pitch along each axis, covering the same area (trailing rows/columns that do not fill
        a bin are dropped, as :func:`bin_image` does).  Used for coarse-to-fine optimisation."""
        f = int(factor)
        if f < 1 or f != factor:
            raise ValueError(f"bin factor must be a positive integer, got {factor!r}")
        if self.rows < f or self.cols < f:
            raise ValueError(f"cannot bin a {self.rows}x{self.cols} detector by {f}")
        cu, cv = self.principal_point
        # pixel centre u maps to (u + 0.5) / f - 0.5 in bin coordinates
        return self.replace(rows=self.rows // f, cols=self.cols // f,
                            pixel_spacing=tuple(p * f for p in self.pixel_spacing),
                            principal_point=((cu + 0.5) / f - 0.5, (cv + 0.5) / f - 0.5))

    def subdivided(self, factor: int) -> "Camera":
        """Each pixel split into ``factor x factor`` sub-pixels of the pitch / ``factor`` over the same area:
        the inverse of :meth:`binned` (``cam.subdivided(f).binned(f) == cam``).  Used for supersampling."""
        f = int(factor)
        if f < 1 or f != factor:
            raise ValueError(f"subdivision factor must be a positive integer, got {factor!r}")
        cu, cv = self.principal_point
        return self.replace(rows=self.rows * f, cols=self.cols * f,
                            pixel_spacing=tuple(p / f for p in self.pixel_spacing),
                            principal_point=(f * (cu + 0.5) - 0.5, f * (cv + 0.5) - 0.5))

    def replace(self, **changes) -> "Camera":
        """A copy with some fields changed (``pixel_size`` or ``pixel_spacing`` for the pitch)."""
        kw = dict(rows=self.rows, cols=self.cols, sdd=self.sdd, camera_from_world=self.camera_from_world,
                  principal_point=self.principal_point, mirrored=self.mirrored)
        if "pixel_size" not in changes:
            kw["pixel_spacing"] = self.pixel_spacing
        kw.update(changes)
        return Camera(**kw)

    # --------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """A JSON-serialisable dict; K, P, source and axes are included for readers.

        The pitch: ``pixel_spacing`` ``[row, column]`` (mm) always, and ``pixel_size`` too for square pixels
        (what readers of square-pixel cameras read)."""
        pitch = {"pixel_size": self.pixel_size} if self.square_pixels else {}
        return {
            "type": "engine.Camera",
            "version": _JSON_VERSION,
            "units": "mm",
            "rows": self.rows,
            "cols": self.cols,
            **pitch,
            "pixel_spacing": list(self.pixel_spacing),
            "sdd": self.sdd,
            "principal_point": list(self.principal_point),
            "mirrored": self.mirrored,
            "camera_from_world": self.camera_from_world.tolist(),
            "K": self.K.tolist(),
            "source": self.source.tolist(),
            "detector_center": self.detector_center.tolist(),
            "u_axis": self.u_axis.tolist(),
            "v_axis": self.v_axis.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "camera JSON") -> "Camera":
        """Inverse of :meth:`to_dict` (derived entries are ignored).

        Raises :class:`~engine.errors.InputError` naming ``source`` (the file) and the entry that is missing, of
        the wrong JSON type or out of range.
        """
        if not isinstance(d, dict):
            raise InputError(f"{source}: not a camera description (a JSON {_json_kind(d)}, expected an object "
                             "with rows, cols, pixel_size or pixel_spacing, sdd and camera_from_world)")
        if d.get("type", "engine.Camera") != "engine.Camera":
            raise InputError(f"{source}: not a camera description (type {_brief(d.get('type'))})")
        version = d.get("version", _JSON_VERSION)
        if not _is_number(version) or int(version) != version:
            raise InputError(f"{source}: 'version' must be an integer, got {_brief(version)}")
        if version > _JSON_VERSION:
            raise InputError(f"{source}: camera JSON version {version} is newer than this engine reads "
                             f"({_JSON_VERSION})")
        missing = [k for k in ("rows", "cols", "sdd", "camera_from_world") if k not in d]
        if "pixel_size" not in d and "pixel_spacing" not in d:
            missing.insert(2, "pixel_size")
        if missing:
            raise InputError(f"{source}: the camera description lacks {missing}")
        for key, what in (("rows", "a positive integer"), ("cols", "a positive integer"),
                          ("pixel_size", "a positive number (mm)"), ("sdd", "a positive number (mm)")):
            if key in d and not _is_number(d[key]):
                raise InputError(f"{source}: '{key}' must be {what}, got {_brief(d[key])}")
        spacing = None
        if "pixel_spacing" in d:
            spacing = tuple(_json_array(d, "pixel_spacing", (2,), source))
            if "pixel_size" in d and spacing != (float(d["pixel_size"]),) * 2:
                raise InputError(f"{source}: 'pixel_size' {_brief(d['pixel_size'])} and 'pixel_spacing' "
                                 f"{_brief(d['pixel_spacing'])} disagree")
        mirrored = d.get("mirrored", False)
        if not isinstance(mirrored, bool):
            raise InputError(f"{source}: 'mirrored' must be true or false, got {_brief(mirrored)}")
        m = _json_array(d, "camera_from_world", (4, 4), source)
        pp = None if d.get("principal_point") is None else _json_array(d, "principal_point", (2,), source)
        try:
            pitch = {"pixel_size": d["pixel_size"]} if spacing is None else {"pixel_spacing": spacing}
            return cls(rows=d["rows"], cols=d["cols"], sdd=d["sdd"], camera_from_world=m, principal_point=pp,
                       mirrored=mirrored, **pitch)
        except ValueError as e:  # the constructor's checks (sizes, lengths, rotation)
            raise InputError(f"{source}: {e}") from None

    def to_json(self, path=None) -> str:
        """JSON text of the camera; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text) -> "Camera":
        """Read a camera from a JSON file path or a JSON string (text starting with ``{`` or ``[``).

        Raises FileNotFoundError for a missing file and :class:`~engine.errors.InputError` naming the file
        for one that is not UTF-8 JSON text or not a camera description (see :meth:`from_dict`).
        """
        text, source = _json_source(path_or_text)
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: not valid JSON ({e})") from None
        except RecursionError:
            raise InputError(f"{source}: not a camera description (JSON nested too deeply)") from None
        return cls.from_dict(d, source=source)

    def __repr__(self) -> str:
        s = np.array2string(self.source, precision=2, separator=", ")
        pitch = (f"pixel_size={self.pixel_size:g}" if self.square_pixels else
                 "pixel_spacing=({:g}, {:g})".format(*self.pixel_spacing))
        return (f"Camera(rows={self.rows}, cols={self.cols}, {pitch}, "
                f"sdd={self.sdd:g}, mirrored={self.mirrored}, source={s})")


def _json_source(path_or_text) -> tuple[str, str]:
    """(JSON text, name for messages) of a camera given as a file path or as JSON text."""
    s = str(path_or_text)
    if s.lstrip().startswith(("{", "[")):
        return s, "camera JSON"
    p = Path(s)
    try:
        if not p.is_file():
            raise FileNotFoundError(f"camera file not found: {p}")
        data = p.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise InputError(f"{_brief(s)}: cannot read the camera file ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig"), str(p)
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not a camera JSON file (not UTF-8 text: byte 0x{data[e.start]:02x} at offset "
                         f"{e.start})") from None


def _is_real(v) -> bool:
    """A JSON number (not a boolean) that converts to float64 (NaN and inf included)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:  # an integer beyond float64
        return False
    return True


def _is_number(v) -> bool:
    """A finite JSON number (not a boolean)."""
    return _is_real(v) and math.isfinite(v)


def _json_kind(v) -> str:
    """The JSON type name of a decoded value."""
    for t, name in ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), ((int, float), "number")):
        if isinstance(v, t):
            return name
    return "null" if v is None else type(v).__name__


def _brief(v, n: int = 60) -> str:
    """A value for a message: JSON spelling, cut to ``n`` characters."""
    try:
        s = json.dumps(v)
    except (TypeError, ValueError, RecursionError):
        s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."


def _json_array(d: dict, key: str, shape: tuple, source: str) -> np.ndarray:
    """``d[key]`` as a float64 array of ``shape``, from nested JSON lists of numbers only."""
    v = d[key]

    def numbers(x, depth):
        if depth == len(shape):
            return _is_real(x)  # NaN/inf: refused by the camera's own checks
        return isinstance(x, list) and len(x) == shape[depth] and all(numbers(y, depth + 1) for y in x)

    if not numbers(v, 0):
        what = f"a {' x '.join(str(n) for n in shape)} array of" if len(shape) > 1 else f"a list of {shape[0]}"
        raise InputError(f"{source}: '{key}' must be {what} numbers, got {_brief(v)}")
    return np.array(v, dtype=np.float64)


def camera_batch(cameras) -> list:
    """A Camera or a non-empty sequence of Cameras sharing the detector shape -> a list of Cameras (one for a
    Camera): the batch every renderer takes, with a view axis even for one camera (docs/conventions.md,
    "Return shapes").  TypeError for something that is not a Camera, ValueError for no camera or mixed shapes."""
    cams = [cameras] if isinstance(cameras, Camera) else list(cameras)
    if not cams:
        raise ValueError("no cameras given")
    for i, c in enumerate(cams):
        if not isinstance(c, Camera):
            raise TypeError(f"camera {i} is a {type(c).__name__}, not an engine.Camera")
    if any((c.rows, c.cols) != (cams[0].rows, cams[0].cols) for c in cams):
        raise ValueError("all cameras of a batch must share the detector shape (rows, cols)")
    return cams


def bin_image(image, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` pixel blocks over the last two axes (the image of :meth:`Camera.binned`)."""
    f = int(factor)
    a = np.asarray(image)
    r, c = a.shape[-2] // f, a.shape[-1] // f
    a = a[..., :r * f, :c * f]
    return a.reshape(*a.shape[:-2], r, f, c, f).mean(axis=(-3, -1))


def from_source_detector(*, source, detector_center, u_axis, v_axis, rows: int, cols: int,
                         pixel_size) -> Camera:
    """A camera from a source point, a detector centre and the detector's in-plane axes.

    This is how calibrated systems and other simulators usually state geometry.

    Parameters
    ----------
    source : (3,) world mm
    detector_center : (3,) world mm, centre of the detector (between the middle pixels
        for even sizes).
    u_axis, v_axis : (3,) world vectors along increasing columns and increasing rows
        (down the displayed image); normalised here, must be orthogonal.
    rows, cols : int
    pixel_size : float or (float, float)
        Pixel pitch, mm: one number (square pixels) or ``(row pitch, column pitch)``.

    The source need not face the detector centre: an offset principal point follows.
    """
    s = np.asarray(source, dtype=np.float64)
    c = np.asarray(detector_center, dtype=np.float64)
    u = np.asarray(u_axis, dtype=np.float64)
    v = np.asarray(v_axis, dtype=np.float64)
    for name, a in (("source", s), ("detector_center", c), ("u_axis", u), ("v_axis", v)):
        if a.shape != (3,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be 3 finite numbers, got {a!r}")
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        raise ValueError("detector axes must be non-zero vectors")
    u, v = u / nu, v / nv
    if abs(u @ v) > 1e-6:
        raise ValueError(f"detector axes must be orthogonal (u.v = {u @ v:.3g})")
    n = np.cross(u, v)  # detector normal
    sdd_signed = (c - s) @ n
    if abs(sdd_signed) < 1e-9:
        raise ValueError("the source lies in the detector plane")
    z = n if sdd_signed > 0 else -n  # principal axis, source -> detector plane
    mirrored = sdd_signed < 0  # u x v points back to the source: image seen from the detector side
    x = -u if mirrored else u
    r = np.stack([x, v, z])  # rows: camera axes in world
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ s
    sdd = abs(sdd_signed)
    foot = s + sdd * z
    row_mm, col_mm = spacing = as_pixel_spacing(pixel_size)
    cu = (cols - 1) / 2.0 + (foot - c) @ u / col_mm
    cv = (rows - 1) / 2.0 + (foot - c) @ v / row_mm
    return Camera(rows=rows, cols=cols, pixel_spacing=spacing, sdd=sdd, camera_from_world=m,
                  principal_point=(cu, cv), mirrored=mirrored)


def central_rays_meet(cameras) -> np.ndarray:
    """(3,) the point closest (least squares) to all cameras' central rays (the lines from the source along the
    principal axis); one camera: the point of its central ray closest to the world origin (mm)."""
    a, b = np.zeros((3, 3)), np.zeros(3)
    for c in cameras:
        d = c.principal_axis
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ c.source
    if len(cameras) == 1:
        c = cameras[0]
        d = c.principal_axis
        return c.source + d * float(d @ (0.0 - c.source))
    return np.linalg.solve(a, b)
