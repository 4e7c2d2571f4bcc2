"""X-ray tube spectra: spekpy models binned to a few energies, cached, with shipped presets.

A :class:`Spectrum` holds bin-centre energies (keV) and the photon fluence in each
bin, in photons / mm^2 per mAs at 1 m from the focal spot (spekpy's
photons / cm^2 / mAs / keV times the bin width, converted to mm^2).  Bins are
equal-width between the lowest energy with non-negligible fluence and the kVp.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..assets import asset_path

PRESETS_DIR = asset_path("spectra", must_exist=False)  # where write_presets writes by default
PRESETS = {  # name: (kVp, anode angle deg, filtration {material: mm})
    "fluoro60": (60.0, 12.0, {"Al": 3.0}),
    "fluoro90": (90.0, 12.0, {"Al": 3.0, "Cu": 0.1}),
    "fluoro120": (120.0, 12.0, {"Al": 3.0, "Cu": 0.2}),
}


@dataclass(frozen=True, kw_only=True, eq=False)
class Spectrum:
    """A binned X-ray spectrum.

    Attributes
    ----------
    energies_kev : (N,) float64, bin centres, keV.
    fluence : (N,) float64, photons / mm^2 / mAs at 1 m in each bin.
    kvp : float, tube voltage, kV.
    description : str
    """

    energies_kev: np.ndarray = field(repr=False)
    fluence: np.ndarray = field(repr=False)
    kvp: float
    description: str = ""

    def __post_init__(self):
        e = np.array(self.energies_kev, np.float64).ravel()
        f = np.array(self.fluence, np.float64).ravel()
        if e.shape != f.shape or e.size < 1:
            raise ValueError("energies_kev and fluence must be equal-length, non-empty")
        if np.any(e <= 0) or not np.all(np.isfinite(e)):
            raise ValueError("energies must be positive keV")
        if np.any(f < 0) or not np.all(np.isfinite(f)) or f.sum() <= 0:
            raise ValueError("fluence must be finite, >= 0, and not all zero")
        for a in (e, f):
            a.setflags(write=False)
        object.__setattr__(self, "energies_kev", e)
        object.__setattr__(self, "fluence", f)

    @property
    def weights(self) -> np.ndarray:
        """Photon fraction in each bin (sums to 1)."""
        return self.fluence / self.fluence.sum()

    @property
    def mean_energy_kev(self) -> float:
        """Fluence-weighted mean energy, keV."""
        return float(self.weights @ self.energies_kev)

    @classmethod
    def monochromatic(cls, energy_kev: float, fluence: float = 1.0) -> "Spectrum":
        """A single-energy beam."""
        return cls(energies_kev=[energy_kev], fluence=[fluence], kvp=float(energy_kev),
                   description=f"mono {energy_kev:g} keV")

    def save(self, path) -> None:
        np.savez(path, energies_kev=self.energies_kev, fluence=self.fluence, kvp=self.kvp,
                 description=self.description)

    @classmethod
    def load(cls, path) -> "Spectrum":
        with np.load(path, allow_pickle=False) as z:
            return cls(energies_kev=z["energies_kev"], fluence=z["fluence"], kvp=float(z["kvp"]),
                       description=str(z["description"]))

    def __repr__(self) -> str:
        return (f"Spectrum({self.description or f'{self.kvp:g} kVp'}, {self.energies_kev.size} bins, "
                f"mean {self.mean_energy_kev:.1f} keV)")


def rebin(energies_kev, fluence_per_kev, bins: int, lo_kev: float | None = None, hi_kev: float | None = None):
    """Integrate a fine spectrum (per keV, at ``energies_kev``) into ``bins`` equal bins.

    Returns bin centres (keV) and the fluence in each bin (per-keV values times width).
    The mean energy inside each bin is used as its centre, so the total fluence and
    the mean energy of the spectrum are preserved exactly.
    """
    e = np.asarray(energies_kev, np.float64)
    f = np.asarray(fluence_per_kev, np.float64)
    de = np.gradient(e)
    if lo_kev is None:
        lo_kev = float(e[np.argmax(f > 1e-4 * f.max())] - de[0] / 2)
    if hi_kev is None:
        hi_kev = float(e[-1] + de[-1] / 2)
    edges = np.linspace(lo_kev, hi_kev, bins + 1)
    idx = np.clip(np.searchsorted(edges, e, side="right") - 1, 0, bins - 1)
    inside = (e >= lo_kev) & (e <= hi_kev)
    n = np.bincount(idx[inside], weights=(f * de)[inside], minlength=bins)
    ne = np.bincount(idx[inside], weights=(f * de * e)[inside], minlength=bins)
    centres = np.where(n > 0, ne / np.maximum(n, 1e-300), 0.5 * (edges[:-1] + edges[1:]))
    return centres, n


@functools.lru_cache(maxsize=64)
def _spekpy_fine(kvp: float, anode_angle: float, filtration: tuple):
    import spekpy

    s = spekpy.Spek(kvp=kvp, th=anode_angle, dk=0.5)
    for mat, mm in filtration:
        if mm > 0:
            s.filter(mat, mm)
    k, f = s.get_spectrum()
    return np.asarray(k, np.float64), np.asarray(f, np.float64) / 100.0  # per cm^2 -> per mm^2


def tube_spectrum(kvp: float = 90.0, *, anode_angle: float = 12.0, filtration: dict | None = None,
                  bins: int = 32) -> Spectrum:
    """A tungsten-anode tube spectrum from spekpy (cached), binned to ``bins`` energies.

    Parameters
    ----------
    kvp : float
        Tube voltage, 50-150 kV.
    anode_angle : float
        Anode angle, degrees.
    filtration : dict, optional
        Added filtration {material: thickness mm}, e.g. ``{"Al": 3.0, "Cu": 0.1}``
        (spekpy material names); default 2.5 mm Al.
    bins : int
        Number of energy bins (1-256).
    """
    if not 50 <= kvp <= 150:
        raise ValueError(f"kvp must be within 50-150 kV, got {kvp}")
    if not 1 <= int(bins) <= 256:
        raise ValueError(f"bins must be in 1..256, got {bins}")
    filt = tuple(sorted((filtration if filtration is not None else {"Al": 2.5}).items()))
    if any(mm < 0 for _, mm in filt):
        raise ValueError(f"filtration thicknesses must be >= 0 mm, got {dict(filt)}")
    try:
        e, f = _spekpy_fine(float(kvp), float(anode_angle), filt)
    except ImportError:
        raise ImportError("spekpy is needed to compute tube spectra (pip install spekpy); "
                          f"or use a shipped preset: {sorted(PRESETS)}") from None
    centres, n = rebin(e, f, int(bins))
    desc = f"{kvp:g} kVp, anode {anode_angle:g} deg, " + ", ".join(f"{mm:g} mm {m}" for m, mm in filt)
    return Spectrum(energies_kev=centres[n > 0], fluence=n[n > 0], kvp=float(kvp), description=desc)


def preset(name: str, bins: int = 32) -> Spectrum:
    """A named fluoroscopy spectrum ("fluoro60", "fluoro90", "fluoro120").

    Read from the fine (0.5 keV) tables shipped in ``assets/spectra`` (made by
    ``python -m engine.physics.spectrum``), so it works where spekpy cannot run.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown spectrum preset {name!r}; choose from {sorted(PRESETS)}")
    path = asset_path(f"spectra/{name}.npz", must_exist=False)
    if not path.is_file():
        kvp, angle, filt = PRESETS[name]
        return tube_spectrum(kvp, anode_angle=angle, filtration=filt, bins=bins)
    with np.load(path, allow_pickle=False) as z:
        e, f, kvp, desc = z["energies_kev"], z["fluence_per_kev"], float(z["kvp"]), str(z["description"])
    centres, n = rebin(e, f, bins)
    return Spectrum(energies_kev=centres[n > 0], fluence=n[n > 0], kvp=kvp, description=f"{name}: {desc}")


def write_presets(folder=PRESETS_DIR) -> list[Path]:
    """Compute the preset tables with spekpy and write them as ``<name>.npz``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (kvp, angle, filt) in PRESETS.items():
        e, f = _spekpy_fine(kvp, angle, tuple(sorted(filt.items())))
        desc = f"{kvp:g} kVp, anode {angle:g} deg, " + ", ".join(f"{mm:g} mm {m}" for m, mm in filt.items())
        p = folder / f"{name}.npz"
        np.savez_compressed(p, energies_kev=e, fluence_per_kev=f, kvp=kvp, description=desc)
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write_presets():
        print(f"wrote {p}")
