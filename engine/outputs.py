"""Writing output files safely: checked before the work, written whole or not at all, never lost.

* :func:`check_output` validates an output path before any long work: its format, that it is not a folder,
  and that its folder exists (it is created) and is writable; the error names the option and the path.
* :func:`atomic_output` yields a temporary path in the target's folder (a hidden name ending in the target's
  own name, so writers that pick the format from the extension still work) and renames it onto the target
  when the block ends normally; on any error or interrupt (Ctrl-C) the temporary file is removed, so the
  target path is either the complete new file or what was there before, never a half-written file.
* :func:`save_or_rescue` writes a result computed at length: if the target cannot be written after all (disk
  full, permissions changed), the result goes to a file in the system's temporary folder and the error says
  where.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path

from .errors import InputError


def check_output(path, *, suffixes=None, option: str = "--out") -> Path:
    """Validate an output path before work starts; returns it as a Path.

    Parameters
    ----------
    path : str or Path
    suffixes : the accepted file endings (e.g. ``(".png", ".tiff")``, case-insensitive), or None for any
    option : the option the path came from, named in the error
    """
    p = Path(path)
    name = p.name.lower()
    if suffixes is not None and not any(name.endswith(s.lower()) for s in suffixes):
        raise InputError(f"{option} {path}: unsupported file type; use one of {', '.join(suffixes)}")
    if p.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    folder = p.parent if str(p.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot create its folder {folder} ({e.strerror or e})") from None
    if not folder.is_dir():
        raise InputError(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: the folder {folder} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{option} {path}: the file exists and is not writable")
    return p


@contextlib.contextmanager
def atomic_output(path):
    """Context manager: write to the yielded temporary path; it replaces ``path`` when the block succeeds.

    >>> with atomic_output("image.tiff") as tmp:      # doctest: +SKIP
    ...     tifffile.imwrite(tmp, img)
    """
    p = Path(path)
    tmp = p.with_name(f".{uuid.uuid4().hex[:12]}.part.{p.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"nothing was written to {p}")
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8); returns the path."""
    p = Path(path)
    with atomic_output(p) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return p


def save_or_rescue(path, write, *, what: str = "result") -> Path:
    """Write a result that took long to compute: ``write(tmp_path)`` atomically to ``path``; if that fails with an
    OSError, write it to the system's temporary folder instead and raise :class:`InputError` naming both.

    Returns the path written (``path`` on success).
    """
    p = Path(path)
    try:
        with atomic_output(p) as tmp:
            write(tmp)
        return p
    except OSError as e:
        rescue = Path(tempfile.gettempdir()) / f"engine-rescued-{os.getpid()}-{p.name}"
        try:
            with atomic_output(rescue) as tmp:
                write(tmp)
        except OSError as e2:
            raise InputError(f"could not write the {what} to {p} ({e}), nor to {rescue} ({e2})") from None
        raise InputError(f"could not write the {what} to {p} ({e.strerror or e}); it was saved to {rescue}") from None
