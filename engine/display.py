"""Display windows for rendered images: which values map to black and to white in an 8-bit picture.

A radiograph's picture should spend its grey levels on the patient, not on the open beam
around it.  :func:`auto_window` therefore takes its percentiles over the pixels *behind
the body* only: it drops the open-beam (air) pixels first, then windows the rest.  It
never changes the image's values; it only chooses two of them.

The images it is meant for are attenuation-like, as the engine writes them: density line
integrals (g/cm^2), per-material path lengths (mm or g/cm^2), ``-ln(I/I0)``.  In them the
open beam is the lowest value (0 up to noise) and more attenuation is brighter.  For
intensity-like images (``I/I0``, open beam brightest) pass ``background="high"``.
"""
from __future__ import annotations

import numpy as np

DEFAULT_PERCENTILES = (5.0, 99.9)  # the thin body edges: black; the densest 0.1 %: white
AIR_FRACTION = 0.05  # open beam: within 5 % of the image's robust span of its open-beam end


def body_mask(img, *, air_fraction: float = AIR_FRACTION, background: str = "low") -> np.ndarray:
    """Boolean mask (same shape as ``img``) of the finite pixels behind the body: not open beam, not NaN/inf.

    The open-beam level ``b`` is the 0.5th percentile of the finite values (the 99.5th with
    ``background="high"``), the far end ``e`` the 99.9th (the 0.1th).  A pixel is open beam
    when it lies within ``air_fraction * |e - b|`` of ``b``, in the image's own units; e.g. for
    an AP density line integral of a pelvis (``e`` about 27 g/cm^2) everything under about
    1.35 g/cm^2 (1.35 cm of water) counts as air.  An image with no open beam loses only its
    thinnest ``air_fraction`` of the span.  ``background=None`` keeps every finite pixel.
    """
    a = np.asarray(img, np.float64)
    finite = np.isfinite(a)
    if background is None or not finite.any():
        return finite
    if background not in ("low", "high"):
        raise ValueError(f"background must be 'low', 'high' or None, got {background!r}")
    v = a[finite]
    b, e = np.percentile(v, [0.5, 99.9] if background == "low" else [99.5, 0.1])
    cut = air_fraction * abs(e - b)
    with np.errstate(invalid="ignore"):
        return finite & ((a > b + cut) if background == "low" else (a < b - cut))


def auto_window(img, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, *, air_fraction: float = AIR_FRACTION,
                background: str | None = "low") -> tuple[float, float]:
    """(low, high), in the units of ``img``: robust percentiles of the pixels behind the body.

    Parameters
    ----------
    img : array (any shape; a stack is windowed as one)
        An attenuation-like image (see the module docstring).  NaN and inf are ignored.
    percentiles : (float, float)
        Percentiles (0..100) of the body pixels (:func:`body_mask`) that become black and
        white; default 5 and 99.9: the thinnest 5 % of the body (its edges, where the
        line integral falls to 0 along the skin) go black rather than spending grey
        levels on that long tail, and at most the densest 0.1 % saturates.
    air_fraction, background
        Which pixels are open beam, see :func:`body_mask`.

    Returns
    -------
    (low, high) : floats with ``high > low``.  If fewer than 16 pixels are behind the body
    the percentiles are taken over all finite pixels instead; a constant image gives
    ``(v, v + 1)``, an image with no finite value ``(0, 1)``.
    """
    a = np.asarray(img, np.float64)
    body = body_mask(a, air_fraction=air_fraction, background=background)
    v = a[body] if body.sum() >= 16 else a[np.isfinite(a)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, percentiles))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def shared_window(images, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, **kw) -> tuple[float, float]:
    """One window for several images (e.g. the views of a panel): :func:`auto_window` of their body pixels pooled.

    Each image's open beam is found on its own (:func:`body_mask`), then the percentiles are
    taken over all the images' body pixels together.
    """
    pooled = [np.asarray(im, np.float64)[body_mask(im, **kw)] for im in images]
    v = np.concatenate([p.ravel() for p in pooled]) if pooled else np.zeros(0)
    return auto_window(v, percentiles, background=None) if v.size >= 16 else auto_window(
        np.concatenate([np.ravel(im) for im in images]), percentiles, background=None)


def attenuation(intensity) -> np.ndarray:
    """-ln(I/I0) of an intensity image for display (attenuation bright, as on a radiograph); I/I0 floored at 1e-6."""
    return -np.log(np.maximum(np.asarray(intensity), 1e-6))  # keeps the input's float type
