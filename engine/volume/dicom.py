"""Read a CT from a folder of DICOM slices (pydicom).

Slices are ordered by their position along the slice normal (not by file name or
InstanceNumber); RescaleSlope/RescaleIntercept are applied per slice; the
ImageOrientationPatient and PixelSpacing are honoured, so oblique acquisitions
get an oblique affine.  DICOM's patient frame is LPS+; it is converted to the
engine's RAS+ world by negating x and y.

Voxel index order of the result: ``i`` = DICOM column, ``j`` = DICOM row,
``k`` = slice (sorted along the normal ``row_dir x col_dir``).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .ct import CT

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _read_slices(folder: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    slices, skipped = [], 0
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(str(f))
        except (InvalidDicomError, OSError):
            skipped += 1
            continue
        if not all(hasattr(ds, k) for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")) \
                or "PixelData" not in ds:
            skipped += 1
            continue
        slices.append(ds)
    return slices, skipped


def read_dicom_series(folder, series_uid: str | None = None) -> CT:
    """Read one CT series from a folder of single-slice DICOM files.

    Parameters
    ----------
    folder : path
        Folder holding the slices (other files are ignored).
    series_uid : str, optional
        SeriesInstanceUID to read when the folder holds several series.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing folder, no image slices, several series without ``series_uid``,
        slices of different size or orientation, or uneven slice spacing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    slices, _ = _read_slices(folder)
    if not slices:
        raise ValueError(f"{folder} holds no DICOM image slices with position and orientation")
    series = defaultdict(list)
    for ds in slices:
        series[str(getattr(ds, "SeriesInstanceUID", ""))].append(ds)
    if series_uid is not None:
        if series_uid not in series:
            raise ValueError(f"series {series_uid} not in {folder}; found {sorted(series)}")
        slices = series[series_uid]
    elif len(series) > 1:
        raise ValueError(f"{folder} holds {len(series)} series {sorted(series)}; pass series_uid")

    iop = np.array(slices[0].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (increasing column), along a column
    for ds in slices[1:]:
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=np.float64), iop, atol=1e-4):
            raise ValueError(f"slices in {folder} have different ImageOrientationPatient")
    normal = np.cross(row_dir, col_dir)
    pos = np.array([np.array(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    order = np.argsort(pos @ normal)
    slices = [slices[i] for i in order]
    pos = pos[order]
    shape2d = (int(slices[0].Rows), int(slices[0].Columns))
    if any((int(ds.Rows), int(ds.Columns)) != shape2d for ds in slices):
        raise ValueError(f"slices in {folder} differ in size")
    dr, dc = (float(x) for x in slices[0].PixelSpacing)  # between rows, between columns (mm)

    if len(slices) > 1:
        steps = np.diff(pos, axis=0)
        dist = steps @ normal
        if np.any(dist < 1e-6):
            raise ValueError(f"{folder} has two slices at the same position (duplicate slices?)")
        if np.ptp(dist) > 1e-3 * max(1.0, float(np.mean(dist))) + 1e-4:
            raise ValueError(f"uneven slice spacing in {folder} ({dist.min():.4g}..{dist.max():.4g} mm): "
                             "missing slices? Resample the series first")
        slice_vec = (pos[-1] - pos[0]) / (len(slices) - 1)
    else:
        thick = float(getattr(slices[0], "SliceThickness", 1.0) or 1.0)
        slice_vec = normal * thick

    vol = np.empty((shape2d[1], shape2d[0], len(slices)), dtype=np.float32)
    for k, ds in enumerate(slices):
        slope = float(getattr(ds, "RescaleSlope", 1.0))
        inter = float(getattr(ds, "RescaleIntercept", 0.0))
        vol[:, :, k] = (ds.pixel_array.astype(np.float32) * slope + inter).T

    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = slice_vec
    lps[:3, 3] = pos[0]
    return CT(hu=vol, world_from_index=_LPS_TO_RAS @ lps, source=str(folder))
