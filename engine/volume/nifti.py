"""Read and write CT volumes as NIfTI (nibabel); the affine is honoured as stored."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .ct import CT


def read_nifti(path) -> CT:
    """Read a 3D NIfTI file (``.nii`` / ``.nii.gz``) of Hounsfield units.

    The voxel -> world affine is nibabel's best affine (sform, else qform),
    NIfTI's RAS+ mm world frame; scaling (``scl_slope``/``scl_inter``) is applied.
    A 4D file with a single volume is accepted; other shapes raise ValueError.
    """
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CT file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder; for DICOM series use read_dicom_series")
    try:
        img = nib.load(str(p))
    except Exception as e:  # nibabel raises several types for non-NIfTI data
        raise ValueError(f"{p} is not a readable NIfTI file: {e}") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{p} is not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        data = np.asarray(img.dataobj[..., 0], dtype=np.float32)
    elif len(shape) == 3:
        data = np.asarray(img.dataobj, dtype=np.float32)
    else:
        raise ValueError(f"{p} is not a 3D volume: shape {shape}")
    return CT(hu=data, world_from_index=img.affine, source=str(p))


def write_nifti(path, values: np.ndarray, world_from_index: np.ndarray, dtype=None) -> Path:
    """Write a 3D array with its voxel -> world (RAS+ mm) affine as NIfTI."""
    import nibabel as nib

    arr = np.asarray(values if dtype is None else np.asarray(values).astype(dtype))
    img = nib.Nifti1Image(arr, np.asarray(world_from_index, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    p = Path(path)
    nib.save(img, str(p))
    return p
