"""Read and write CT volumes as NIfTI (nibabel); the affine is honoured as stored.

Reading refuses, with an :class:`~engine.errors.InputError` naming the file and the reason, what nibabel would
read with a guess or fail on with its own exception: a missing or truncated header, voxel data cut short or
corrupt (gzip), a volume with no usable voxel spacing (zero ``pixdim`` and no sform affine, where nibabel
substitutes 1 mm), and voxel types that are not real numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .ct import CT

# (header size, offset of the magic, magics) of NIfTI-1 and NIfTI-2
_HEADERS = ((348, 344, (b"n+1\0", b"ni1\0")), (540, 4, (b"n+2\0", b"ni2\0")))


def read_nifti(path) -> CT:
    """Read a 3D NIfTI file (``.nii`` / ``.nii.gz``) of Hounsfield units.

    The voxel -> world affine is nibabel's best affine (sform, else qform),
    NIfTI's RAS+ mm world frame; scaling (``scl_slope``/``scl_inter``) is applied.
    A 4D file with a single volume is accepted; other shapes, and files that are
    not NIfTI, are truncated or corrupt, or state no voxel spacing, raise
    :class:`~engine.errors.InputError` naming the file.
    """
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CT file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder; for DICOM series use read_dicom_series")
    header = _stored_header(p)
    _check_header(p, header)
    try:
        img = nib.load(str(p))
    except Exception as e:  # nibabel raises several types for non-NIfTI data
        raise InputError(f"{p}: not a readable NIfTI file ({_gzip_problem(p) or e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{p}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InputError(f"{p}: not a 3D volume: shape {shape}")
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise InputError(f"{p}: voxel type {dtype} is not a real number type (a CT holds Hounsfield units)")
    data = _voxels(p, img, header)
    try:
        return CT(hu=data, world_from_index=img.affine, source=str(p))
    except ValueError as e:  # NaN/inf voxels, a singular affine
        raise InputError(str(e) if str(p) in str(e) else f"{p}: {e}") from None


def _stored_header(p: Path):
    """The file's NIfTI-1/2 header as stored (nibabel's, unchecked: no values fixed up)."""
    import zlib

    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(p)) as f:  # decompresses .gz
            head = f.read(540)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{p}: not a readable NIfTI file ({_gzip_problem(p) or f'cannot read its header: {e}'})") \
            from None
    for (size, at, magics), klass in zip(_HEADERS, (nib.Nifti1Header, nib.Nifti2Header)):
        if len(head) >= size and head[at:at + 4] in magics and size in (int.from_bytes(head[:4], "little"),
                                                                          int.from_bytes(head[:4], "big")):
            endian = "<" if int.from_bytes(head[:4], "little") == size else ">"  # as sizeof_hdr tells
            try:
                return klass(head[:size], endianness=endian, check=False)
            except Exception as e:  # nibabel's header errors
                raise InputError(f"{p}: not a readable NIfTI file (bad header: {e})") from None
    why = f"{len(head)} bytes, shorter than a NIfTI header" if len(head) < 348 else "no NIfTI-1/2 header"
    raise InputError(f"{p}: not a readable NIfTI file ({why})")


def _check_header(p: Path, header) -> None:
    """Refuse a damaged header that nibabel would "fix" with a guess, and one with no usable voxel spacing.

    nibabel guesses the byte order from ``dim[0]`` (a damaged one swaps every value), drops invalid sform/qform
    codes (another affine is then used), and, without an sform, builds the affine (qform or base) from
    ``pixdim[1:4]`` with zeros replaced by 1 mm; each with only a logged warning.
    """
    import nibabel as nib

    if not 1 <= int(header["dim"][0]) <= 7:
        raise InputError(f"{p}: damaged NIfTI header: dim[0] = {int(header['dim'][0])}, not a number of "
                         "dimensions (1..7)")
    for key in ("sform_code", "qform_code"):
        if int(header[key]) not in nib.nifti1.xform_codes.value_set():
            raise InputError(f"{p}: damaged NIfTI header: {key} = {int(header[key])} is not a NIfTI "
                             f"xform code {sorted(nib.nifti1.xform_codes.value_set())}")
    if int(header["sform_code"]) > 0:
        return  # the sform matrix states the spacing; check_affine tests it
    pixdim = np.asarray(header["pixdim"][1:4], np.float64)
    if np.all(np.isfinite(pixdim)) and np.all(pixdim != 0):
        return
    other = "no sform" if int(header["qform_code"]) > 0 else "no sform or qform affine"
    raise InputError(f"{p}: no usable voxel spacing: pixdim[1:4] = {pixdim.tolist()} and {other} "
                     "(nibabel would assume 1 mm); fix the spacing in the file's header")


def _voxels(p: Path, img, header) -> np.ndarray:
    """The voxel values as float32 (scaling applied), refusing truncated or corrupt data."""
    nbytes = int(np.prod(img.shape, dtype=np.float64)) * img.get_data_dtype().itemsize
    offset = int(header.get_data_offset())
    if not p.name.lower().endswith(".gz") and p.stat().st_size < offset + nbytes:
        raise InputError(f"{p}: truncated NIfTI file: the header declares {nbytes} bytes of voxel data at offset "
                         f"{offset}, the file has {p.stat().st_size} bytes")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel/gzip/zlib: OSError, EOFError, zlib.error, ValueError, MemoryError
        raise InputError(f"{p}: the voxel data cannot be read ({_gzip_problem(p) or f'{type(e).__name__}: {e}'})") \
            from None
    return data[..., 0] if data.ndim == 4 else data


def _gzip_problem(p: Path) -> str | None:
    """Why the gzip stream of a ``.gz`` file cannot be read to its end (truncated, corrupt), else None."""
    import gzip
    import zlib

    if not p.name.lower().endswith(".gz"):
        return None
    try:
        with gzip.open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        return f"truncated or corrupt gzip data: {e}"
    return None


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
