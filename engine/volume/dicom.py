"""Read a CT from a folder of DICOM slices (pydicom).

Slices are ordered by their position along the slice normal (not by file name or
InstanceNumber); RescaleSlope/RescaleIntercept are applied per slice; the
ImageOrientationPatient and PixelSpacing are honoured, so oblique acquisitions
get an oblique affine.  DICOM's patient frame is LPS+; it is converted to the
engine's RAS+ world by negating x and y.

Voxel index order of the result: ``i`` = DICOM column, ``j`` = DICOM row,
``k`` = slice (sorted along the normal ``row_dir x col_dir``).

Every file of the folder is accounted for: a slice is read, or the file is recognisably something else (a file
that is not DICOM and not named like a DICOM file, a DICOM object without pixels of another kind, such as a
DICOMDIR, or an image of another series), or it is named in the error: a damaged, truncated or incomplete file is
never dropped from the series.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .ct import CT

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
# SOP classes of objects without pixels that may share a folder with a series: DICOMDIR, structured reports,
# presentation states, RT plans/structures, encapsulated documents, registrations, waveforms
_NOT_IMAGES = ("1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
               "1.2.840.10008.5.1.4.1.1.481.", "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.66",
               "1.2.840.10008.5.1.4.1.1.9.")


@dataclass
class _Slice:
    """One image slice: its geometry (LPS mm) and stored pixel values."""

    path: Path
    series: str
    position: np.ndarray  # (3,)
    orientation: np.ndarray  # (6,): along a row, along a column
    spacing: tuple[float, float]  # between rows, between columns
    pixels: np.ndarray  # (rows, columns), as stored
    slope: float
    intercept: float
    thickness: float


@dataclass
class _Problem:
    """A file that is not a usable slice: why, and what is known of it (to tell whether it belongs to the series)."""

    path: Path
    reason: str
    series: str | None = None  # SeriesInstanceUID when it could be read
    sop_class: str | None = None
    has_pixels: bool = False
    readable: bool = True  # pydicom read it as a DICOM dataset


def _looks_like_dicom(f: Path) -> bool:
    """A file named like a DICOM slice (``.dcm``, ``IM.0001``, no suffix) or with the ``DICM`` marker, unless
    it is plain text (notes, a README)."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return True
    if head[128:132] == b"DICM":
        return True
    suffix = f.suffix.lower()
    if f.name.startswith(".") or not (suffix in _DICOM_SUFFIXES or suffix == "" or suffix[1:].isdigit()):
        return False
    return not (head and all(32 <= c < 127 or c in b"\t\r\n" for c in head))


def _read_file(f: Path):
    """A :class:`_Slice`, a :class:`_Problem`, or None for a file that is not DICOM (and not named like it)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(f))
    except InvalidDicomError:
        why = "an empty file" if f.stat().st_size == 0 else "not a DICOM file: no 'DICM' marker at byte 128"
        return _Problem(f, why, readable=False) if _looks_like_dicom(f) else None
    except Exception as e:  # pydicom on damaged data: OSError, EOFError, struct.error, ValueError, ...
        return _Problem(f, f"damaged DICOM file ({type(e).__name__}: {e})", readable=False)
    try:
        series = str(ds.get("SeriesInstanceUID", "") or "")
        meta = getattr(ds, "file_meta", None)
        sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")
    except Exception as e:
        return _Problem(f, f"damaged DICOM file ({type(e).__name__}: {e})")
    has_pixels = "PixelData" in ds
    missing = [k for k in _GEOMETRY if k not in ds] + ([] if has_pixels else ["PixelData"])
    if missing:
        return _Problem(f, f"lacks {', '.join(missing)} (truncated or not a CT slice)", series, sop, has_pixels)
    try:
        return _slice(f, ds, series)
    except Exception as e:  # unparsable values (pydicom converts lazily), undecodable pixel data
        return _Problem(f, str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}", series, sop,
                        has_pixels)


def _slice(f: Path, ds, series: str) -> _Slice:
    """The slice of a dataset that has the image attributes; ValueError naming what is wrong with them."""
    pos = np.array([float(x) for x in ds.ImagePositionPatient], np.float64)
    iop = np.array([float(x) for x in ds.ImageOrientationPatient], np.float64)
    spacing = np.array([float(x) for x in ds.PixelSpacing], np.float64)
    if pos.shape != (3,) or iop.shape != (6,) or spacing.shape != (2,):
        raise ValueError("ImagePositionPatient, ImageOrientationPatient, PixelSpacing need 3, 6, 2 numbers")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(iop)) and np.all(np.isfinite(spacing))):
        raise ValueError("NaN/inf in the position, orientation or pixel spacing")
    if np.any(spacing <= 0):
        raise ValueError(f"PixelSpacing {spacing.tolist()} is not positive")
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(r @ c) > 1e-3:
        raise ValueError(f"ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    rows, cols = int(ds.Rows), int(ds.Columns)
    slope = float(getattr(ds, "RescaleSlope", 1.0))
    intercept = float(getattr(ds, "RescaleIntercept", 0.0))
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise ValueError("RescaleSlope/RescaleIntercept is NaN or inf")
    thickness = float(getattr(ds, "SliceThickness", 1.0) or 1.0)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom's decoders on damaged pixel data
        raise ValueError(f"pixel data cannot be decoded: {e}") from None
    if pixels.shape != (rows, cols):
        raise ValueError(f"pixel data of shape {pixels.shape}, not one greyscale frame of {rows} x {cols}")
    return _Slice(f, series, pos, iop, (float(spacing[0]), float(spacing[1])), pixels, slope, intercept,
                  thickness if np.isfinite(thickness) and thickness > 0 else 1.0)


def _names(items, n: int = 5) -> str:
    """'a.dcm (why), b.dcm (why)' for the first ``n`` problems, and how many more."""
    shown = "; ".join(f"{p.path.name} ({p.reason})" for p in items[:n])
    return shown + (f"; and {len(items) - n} more" if len(items) > n else "")


def _belongs(problem: _Problem, series: str) -> bool:
    """Whether a file that is not a usable slice may be part of the series being read (then it is an error)."""
    if not problem.readable:
        return True
    if not problem.has_pixels:  # a truncated slice, or an object of a kind that has no pixels (DICOMDIR, report)
        return not (problem.sop_class or "").startswith(_NOT_IMAGES)
    return not problem.series or problem.series == series  # an image, e.g. a screen capture of another series


def _select(folder: Path, slices: list, problems: list, series_uid: str | None) -> list:
    """The slices of the series to read; InputError naming the files of it that cannot be used."""
    series = defaultdict(list)
    for s in slices:
        series[s.series].append(s)
    if not slices:
        if problems:
            raise InputError(f"{folder}: no usable DICOM image slices; {len(problems)} files cannot be used: "
                             f"{_names(problems)}")
        raise InputError(f"{folder} holds no DICOM image slices with position and orientation")
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"series {series_uid} not in {folder}; found {sorted(series)}")
        uid = series_uid
    elif len(series) > 1:
        found = "; ".join(f"{uid!r} ({len(v)} files, e.g. {v[0].path.name})" for uid, v in sorted(series.items()))
        raise InputError(f"{folder} holds {len(series)} series: {found}; pass series_uid")
    else:
        uid = next(iter(series))
    chosen = series[uid]
    bad = [p for p in problems if _belongs(p, uid)]
    if bad:
        raise InputError(f"{folder}: {len(bad)} of the {len(bad) + len(chosen)} files of the series cannot be used: "
                         f"{_names(bad)}. Replace or remove them (no slice is silently left out)")
    return chosen


def _check_alike(folder: Path, slices: list) -> None:
    """All slices share the orientation and size of the first."""
    first = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise InputError(f"slices in {folder} have different ImageOrientationPatient ({s.path.name}: "
                             f"{s.orientation.tolist()}, {first.path.name}: {first.orientation.tolist()})")
        if s.pixels.shape != first.pixels.shape:
            raise InputError(f"slices in {folder} differ in size ({s.path.name}: {s.pixels.shape}, "
                             f"{first.path.name}: {first.pixels.shape})")


def _slice_vector(folder: Path, slices: list, pos: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """(3,) step between consecutive slices (LPS mm); InputError for duplicates or uneven spacing."""
    if len(slices) == 1:
        return normal * slices[0].thickness
    dist = np.diff(pos, axis=0) @ normal
    if np.any(dist < 1e-6):
        i = int(np.argmin(dist))
        raise InputError(f"{folder} has two slices at the same position (duplicate slices?): "
                         f"{slices[i].path.name} and {slices[i + 1].path.name}")
    if np.ptp(dist) > 1e-3 * max(1.0, float(np.mean(dist))) + 1e-4:
        i = int(np.argmax(dist))
        raise InputError(f"uneven slice spacing in {folder} ({dist.min():.4g}..{dist.max():.4g} mm; the largest "
                         f"gap, {dist[i]:.4g} mm, lies between {slices[i].path.name} and "
                         f"{slices[i + 1].path.name}): missing slices? Resample the series first")
    return (pos[-1] - pos[0]) / (len(slices) - 1)


def read_dicom_series(folder, series_uid: str | None = None) -> CT:
    """Read one CT series from a folder of single-slice DICOM files.

    Parameters
    ----------
    folder : path
        Folder holding the slices.  Files that are not DICOM and not named like DICOM files (notes), and DICOM
        objects of other kinds or series, are ignored; any other file that is not a usable slice is an error.
    series_uid : str, optional
        SeriesInstanceUID to read when the folder holds several series.

    Raises
    ------
    FileNotFoundError
        Missing folder.
    InputError (a ValueError)
        No image slices; damaged, truncated or incomplete files (all named); several series without
        ``series_uid``; slices of different size or orientation; duplicate slices or uneven slice spacing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    read = [_read_file(f) for f in sorted(p for p in folder.iterdir() if p.is_file())]
    slices = _select(folder, [r for r in read if isinstance(r, _Slice)],
                     [r for r in read if isinstance(r, _Problem)], series_uid)
    _check_alike(folder, slices)
    iop = slices[0].orientation
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (increasing column), along a column
    normal = np.cross(row_dir, col_dir)
    pos = np.array([s.position for s in slices])
    order = np.argsort(pos @ normal)
    slices = [slices[i] for i in order]
    pos = pos[order]
    slice_vec = _slice_vector(folder, slices, pos, normal)
    dr, dc = slices[0].spacing  # between rows, between columns (mm)

    rows, cols = slices[0].pixels.shape
    vol = np.empty((cols, rows, len(slices)), dtype=np.float32)
    for k, s in enumerate(slices):
        vol[:, :, k] = (s.pixels.astype(np.float32) * s.slope + s.intercept).T

    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = slice_vec
    lps[:3, 3] = pos[0]
    try:
        return CT(hu=vol, world_from_index=_LPS_TO_RAS @ lps, source=str(folder))
    except ValueError as e:  # NaN/inf values after rescaling
        raise InputError(str(e) if str(folder) in str(e) else f"{folder}: {e}") from None
