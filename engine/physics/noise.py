"""Quantum (Poisson) and electronic (Gaussian) detector noise, seeded.

The noiseless image ``I`` is the flat-field-normalised signal (1 = unattenuated
beam).  A pixel receives on average ``N0 * I`` photons, ``N0`` from the dose: the
spectrum's fluence (photons / mm^2 / mAs at 1 m) times mAs, pixel area, the
inverse-square law to the detector, and the detector's absorption efficiency.

* Photon-counting detector: counts ~ Poisson(N0 I); image = counts / N0.
* Energy-integrating detector: the signal is compound Poisson (each photon adds
  its energy).  It is drawn as a scaled Poisson with the same mean and variance:
  ``N_eff = N0 <E>^2 / <E^2>`` quanta (Swank factor of the detected spectrum),
  image = Poisson(N_eff I) / N_eff.
* Electronic noise: Gaussian with standard deviation ``electronic_std`` in
  photon-equivalents (quanta of the mean energy) per pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import as_pixel_spacing
from .detector import Detector
from .spectrum import Spectrum


def photons_per_pixel(spectrum: Spectrum, detector: Detector, *, mas: float, pixel_size, sdd_mm: float) -> float:
    """Detected photons per pixel for the unattenuated beam: fluence times the pixel's area, ``pixel_size`` one
    pitch (square pixels) or ``(row pitch, column pitch)``, mm."""
    if mas <= 0 or sdd_mm <= 0:
        raise ValueError("mAs and sdd must be positive")
    row_mm, col_mm = as_pixel_spacing(pixel_size)  # checks the pitch, naming pixel_size
    eta = detector.efficiency(spectrum.energies_kev)
    return float((spectrum.fluence * eta).sum() * mas * (row_mm * col_mm) * (1000.0 / sdd_mm) ** 2)


def swank_factor(spectrum: Spectrum, detector: Detector) -> float:
    """<E>^2 / <E^2> of the detected spectrum (1 for photon counting)."""
    if detector.kind == "photon_counting":
        return 1.0
    n = spectrum.fluence * detector.efficiency(spectrum.energies_kev)
    e = spectrum.energies_kev
    return float((n @ e) ** 2 / ((n @ (e * e)) * n.sum()))


@dataclass(frozen=True, kw_only=True)
class NoiseModel:
    """Dose and electronic noise.  Give ``photons`` (detected photons per pixel of the
    unattenuated beam) or ``mas`` (tube current-time product, with the spectrum's
    absolute fluence)."""

    photons: float | None = None
    mas: float | None = None
    electronic_std: float = 0.0  # photon-equivalents per pixel

    def __post_init__(self):
        if (self.photons is None) == (self.mas is None):
            raise ValueError("give exactly one of photons (per pixel) or mas")
        if (self.photons is not None and self.photons <= 0) or (self.mas is not None and self.mas <= 0):
            raise ValueError("photons / mas must be positive")
        if self.electronic_std < 0:
            raise ValueError("electronic_std must be >= 0")

    def quanta(self, spectrum, detector, pixel_size, sdd_mm) -> float:
        """Effective quanta per pixel of the unattenuated beam (after the Swank factor); ``pixel_size`` one pitch
        or ``(row pitch, column pitch)``, mm (with ``mas``, the dose per pixel grows with the pixel's area)."""
        n0 = self.photons if self.photons is not None else photons_per_pixel(
            spectrum, detector, mas=self.mas, pixel_size=pixel_size, sdd_mm=sdd_mm)
        return n0 * swank_factor(spectrum, detector)

    def apply(self, image, n_eff: float, rng: np.random.Generator) -> np.ndarray:
        """A noisy draw of ``image`` (flat-field-normalised) for ``n_eff`` quanta per pixel."""
        img = np.asarray(image, np.float64)
        if np.any(img < 0) or not np.all(np.isfinite(img)):
            raise ValueError("noiseless image must be finite and >= 0")
        out = rng.poisson(img * n_eff).astype(np.float64)
        if self.electronic_std > 0:
            out += rng.normal(0.0, self.electronic_std, img.shape)
        return out / n_eff
