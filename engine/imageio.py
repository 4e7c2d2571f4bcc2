"""Writing rendered images: PNG for viewing, NPY / TIFF float32 for analysis.

Physical values are never changed by saving to NPY or TIFF.  PNG output is a
display: values are windowed to 8 bits between two percentiles of the pixels
behind the body, open beam left out (:mod:`engine.display`; default 5 and
99.9 %), high line integrals bright, as on a radiograph.
"""
from pathlib import Path

import numpy as np

FORMATS = (".png", ".npy", ".tif", ".tiff")


def output_format(path) -> str:
    """The file suffix of ``path`` if the engine can write it, else ValueError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported output format {suffix!r}; use one of {', '.join(FORMATS)}")
    return suffix


def window_to_uint8(img: np.ndarray, window: tuple[float, float] | None = None,
                    percentiles: tuple[float, float] | None = None) -> np.ndarray:
    """Map ``img`` linearly to 0..255 between ``window`` (low, high), in the image's units.

    Without ``window``: :func:`engine.display.auto_window`, i.e. ``percentiles`` (default
    5 and 99.9) of the pixels behind the body, the open beam (air) left out.
    """
    img = np.asarray(img, np.float64)
    if window is None:
        from .display import DEFAULT_PERCENTILES, auto_window

        lo, hi = auto_window(img, DEFAULT_PERCENTILES if percentiles is None else percentiles)
    else:
        lo, hi = window
    if hi <= lo:
        hi = lo + 1.0
    return np.round(np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def save_image(path, img: np.ndarray, window=None) -> list[Path]:
    """Write a 2D image, or a stack (n, rows, cols), to ``path``.

    A stack goes into one NPY/TIFF file; as PNG it becomes one file per slice,
    named ``<stem>_<i>.png``.  Every file is written atomically (:func:`engine.outputs.atomic_output`):
    an error or Ctrl-C leaves no partial file at its path.  Returns the paths written.
    """
    from .outputs import atomic_output, check_output

    path = Path(path)
    fmt = output_format(path)
    img = np.asarray(img, np.float32)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected a (rows, cols) image or an (n, rows, cols) stack, got shape {img.shape}")
    check_output(path, option="output")
    if fmt == ".npy":
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.save(f, img)
        return [path]
    if fmt in (".tif", ".tiff"):
        import tifffile

        with atomic_output(path) as tmp:
            tifffile.imwrite(tmp, img, photometric="minisblack")
        return [path]
    from PIL import Image

    slices = [(path, img)] if img.ndim == 2 else [(path.with_name(f"{path.stem}_{i}{path.suffix}"), sl)
                                                  for i, sl in enumerate(img)]
    for p, sl in slices:
        with atomic_output(p) as tmp:
            Image.fromarray(window_to_uint8(sl, window)).save(tmp, format="PNG")
    return [p for p, _ in slices]


def load_image(path) -> np.ndarray:
    """Read a 2D image as float64: NPY or TIFF as stored (physical values), PNG as grey levels 0..255.

    Raises ValueError naming the problem for other formats, stacks and colour images.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    fmt = output_format(p)
    try:
        if fmt == ".npy":
            img = np.load(p, allow_pickle=False)
        elif fmt in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(p)
        else:
            from PIL import Image

            with Image.open(p) as im:
                img = np.asarray(im.convert("F") if im.mode in ("L", "I", "I;16", "F") else im)
    except (ValueError, OSError) as e:
        raise ValueError(f"{p}: not a readable {fmt[1:].upper()} image ({e})") from None
    img = np.asarray(img, np.float64)
    if img.ndim != 2:
        raise ValueError(f"{p}: expected a single grey image, got an array of shape {img.shape}")
    return img
