"""Polychromatic Beer-Lambert on a flat-panel detector, with its vector-Jacobian product.

For per-material mass thicknesses ``L_m(p)`` (g/cm^2, the projector's output) the
flat-field-normalised detector signal of pixel p is

``T(p) = sum_E w_E exp(-sum_m mu_mE L_m(p)) / sum_E w_E``

with ``mu_mE`` the mass attenuation (cm^2/g) and the weights
``w_E = N_E eta_E E`` (energy-integrating) or ``N_E eta_E`` (photon-counting),
``N_E`` the photons in bin E and ``eta_E = 1 - exp(-mu_det(E) rho_det t_det)`` the
absorption efficiency of the scintillator (CsI, 0.6 mm by default; ``None`` = ideal).
A monochromatic beam is a one-bin spectrum.  The line-integral image most learning
pipelines use is ``-ln T``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attenuation import Material, attenuation_table, from_formula
from .spectrum import Spectrum


@dataclass(frozen=True, kw_only=True)
class Detector:
    """Flat-panel detector response.

    Parameters
    ----------
    kind : "energy_integrating" (default) or "photon_counting"
    scintillator : chemical formula of the converter ("CsI", "Gd2O2S"), or None for an
        ideal absorber (eta = 1).
    scintillator_density : g/cm^3
    thickness_mm : scintillator thickness, mm
    """

    kind: str = "energy_integrating"
    scintillator: str | None = "CsI"
    scintillator_density: float = 4.51
    thickness_mm: float = 0.6

    def __post_init__(self):
        if self.kind not in ("energy_integrating", "photon_counting"):
            raise ValueError(f"detector kind must be energy_integrating or photon_counting, got {self.kind!r}")
        if self.scintillator is not None and not (self.thickness_mm > 0 and self.scintillator_density > 0):
            raise ValueError("scintillator thickness and density must be positive")

    def efficiency(self, energies_kev) -> np.ndarray:
        """Absorption efficiency eta(E) in [0, 1]."""
        e = np.asarray(energies_kev, np.float64)
        if self.scintillator is None:
            return np.ones_like(e)
        mat: Material = from_formula(self.scintillator, self.scintillator, self.scintillator_density)
        return 1.0 - np.exp(-mat.mass_attenuation(e) * self.scintillator_density * self.thickness_mm / 10.0)

    def weights(self, spectrum: Spectrum) -> np.ndarray:
        """Normalised per-bin signal weights (sum 1) for an unattenuated beam."""
        w = spectrum.fluence * self.efficiency(spectrum.energies_kev)
        if self.kind == "energy_integrating":
            w = w * spectrum.energies_kev
        return w / w.sum()


class BeerLambert:
    """Transmission images from mass thicknesses, for fixed materials, spectrum and detector.

    Parameters
    ----------
    materials : sequence of material names (or Material), matching the projector's channels
    spectrum : Spectrum
    detector : Detector
    """

    def __init__(self, materials, spectrum: Spectrum, detector: Detector | None = None):
        self.spectrum = spectrum
        self.detector = detector or Detector()
        self.materials = tuple(m if isinstance(m, str) else m.name for m in materials)
        self.mu = attenuation_table(materials, spectrum.energies_kev)  # (M, E) cm^2/g
        self.w = self.detector.weights(spectrum)  # (E,)

    def _check(self, paths: np.ndarray) -> np.ndarray:
        p = np.asarray(paths)
        if p.ndim < 1 or p.shape[0] != len(self.materials):
            raise ValueError(f"path lengths must be (materials={len(self.materials)}, ...), got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("path lengths contain NaN or inf")
        return p

    def transmission(self, paths) -> np.ndarray:
        """T = I / I0 in (0, 1], shape ``paths.shape[1:]``; paths in g/cm^2 per material."""
        p = self._check(paths)
        flat = p.reshape(p.shape[0], -1).astype(np.float64)
        out = np.zeros(flat.shape[1])
        for e in range(self.w.size):  # bin by bin: memory stays O(pixels)
            out += self.w[e] * np.exp(-(self.mu[:, e] @ flat))
        return out.reshape(p.shape[1:])

    def transmission_vjp(self, paths, grad_t) -> np.ndarray:
        """d(loss)/d(paths) given d(loss)/dT; same shape as ``paths`` (g/cm^2)^-1."""
        p = self._check(paths)
        flat = p.reshape(p.shape[0], -1).astype(np.float64)
        g = np.asarray(grad_t, np.float64).reshape(-1)
        out = np.zeros_like(flat)
        for e in range(self.w.size):
            a = self.w[e] * np.exp(-(self.mu[:, e] @ flat)) * g
            out -= self.mu[:, e][:, None] * a[None]
        return out.reshape(p.shape)

    def line_integral(self, paths) -> np.ndarray:
        """-ln T (dimensionless), the 'post-log' image."""
        return -np.log(self.transmission(paths))

    def line_integral_vjp(self, paths, grad_li) -> np.ndarray:
        t = self.transmission(paths)
        return self.transmission_vjp(paths, -np.asarray(grad_li) / t)
