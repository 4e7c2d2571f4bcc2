"""One entry point to read a CT from disk, whatever the format."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .ct import CT
from .dicom import read_dicom_series
from .nifti import read_nifti


def load_ct(path) -> CT:
    """Read a CT: a NIfTI file (``.nii``, ``.nii.gz``) or a folder of DICOM slices.

    Raises FileNotFoundError for a missing path and :class:`~engine.errors.InputError` naming the file for one
    that cannot be read (see :func:`read_nifti`, :func:`read_dicom_series`).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CT not found: {p}")
    if p.is_dir():
        return read_dicom_series(p)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(p)
    raise InputError(f"{p}: unknown CT format (expected .nii, .nii.gz or a folder of DICOM slices)")
