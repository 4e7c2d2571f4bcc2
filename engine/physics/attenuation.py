"""Materials and their mass attenuation coefficients (xraydb: Elam et al. / NIST-derived tables).

Compositions are mass fractions by element.  Tissue compositions and densities
are those of ICRU Report 44 (1989) as tabulated by NIST (physics.nist.gov,
"X-Ray Mass Attenuation Coefficients", table 2); cancellous bone is the adult
spongiosa of ICRU Report 46 / Woodard & White (1986); stainless steel is
316L nominal; "iodine_contrast" is an iodinated contrast agent with
350 mg iodine / mL (iohexol-like), modelled as iodine in water.

Units: energies in keV at this interface (xraydb takes eV: converted here);
mass attenuation mu/rho in cm^2/g; densities g/cm^3.  The projector's path
lengths are mass thicknesses in g/cm^2, so ``(mu/rho) * (rho L)`` is dimensionless.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Material:
    """A material: name, elemental mass fractions and nominal density (g/cm^3)."""

    name: str
    composition: dict = field(repr=False)  # element symbol -> mass fraction (normalised here)
    density: float  # g/cm^3

    def __post_init__(self):
        if not self.composition:
            raise ValueError(f"material {self.name!r} has an empty composition")
        tot = float(sum(self.composition.values()))
        if tot <= 0 or any(v < 0 for v in self.composition.values()):
            raise ValueError(f"material {self.name!r}: mass fractions must be >= 0 and not all zero")
        object.__setattr__(self, "composition", {k: v / tot for k, v in self.composition.items()})
        if not self.density > 0:
            raise ValueError(f"material {self.name!r}: density must be > 0 g/cm^3")

    def mass_attenuation(self, energies_kev) -> np.ndarray:
        """mu/rho (cm^2/g) at the given energies (keV), total with coherent scattering."""
        e = tuple(float(x) for x in np.atleast_1d(np.asarray(energies_kev, np.float64)))
        return _mass_attenuation(tuple(sorted(self.composition.items())), e).copy()

    def linear_attenuation(self, energies_kev) -> np.ndarray:
        """mu (1/mm) at the nominal density."""
        return self.mass_attenuation(energies_kev) * self.density / 10.0


@functools.lru_cache(maxsize=512)
def _mass_attenuation(composition: tuple, energies_kev: tuple) -> np.ndarray:
    import xraydb

    e_ev = np.asarray(energies_kev) * 1000.0
    if np.any(e_ev < 1000) or np.any(e_ev > 500_000):
        raise ValueError("energies must be within 1-500 keV")
    mu = np.zeros(len(e_ev))
    for element, w in composition:
        try:
            mu += w * np.asarray(xraydb.mu_elam(element, e_ev, kind="total"), np.float64)
        except Exception as err:  # xraydb raises ValueError/KeyError for unknown symbols
            raise ValueError(f"unknown element {element!r} in material composition: {err}") from None
    mu.setflags(write=False)
    return mu


def from_formula(name: str, formula: str, density: float) -> Material:
    """A material from a chemical formula such as ``"Ca5(PO4)3OH"`` (xraydb's parser)."""
    import xraydb

    try:
        counts = xraydb.chemparse(formula)
    except Exception as err:
        raise ValueError(f"cannot parse chemical formula {formula!r}: {err}") from None
    if not counts:
        raise ValueError(f"empty chemical formula {formula!r}")
    masses = {el: n * xraydb.atomic_mass(el) for el, n in counts.items()}
    return Material(name, masses, density)


def mixture(name: str, parts: dict, density: float) -> Material:
    """A mixture of materials by mass fraction: ``{Material: fraction}``."""
    comp: dict = {}
    for mat, frac in parts.items():
        for el, w in mat.composition.items():
            comp[el] = comp.get(el, 0.0) + frac * w
    return Material(name, comp, density)


_STANDARD = {
    "air": ({"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, 0.001205),
    "water": ({"H": 0.111894, "O": 0.888106}, 1.0),
    "soft_tissue": ({"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003,
                     "Cl": 0.002, "K": 0.003}, 1.06),
    "muscle": ({"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.710, "Na": 0.001, "P": 0.002, "S": 0.003,
                "Cl": 0.001, "K": 0.004}, 1.05),
    "adipose": ({"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001}, 0.95),
    "lung": ({"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002, "S": 0.003, "Cl": 0.003,
              "K": 0.002}, 1.05),
    "bone": ({"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003,
              "Ca": 0.225}, 1.92),  # cortical bone, ICRU-44
    "cancellous_bone": ({"H": 0.085, "C": 0.404, "N": 0.028, "O": 0.367, "Na": 0.001, "Mg": 0.001, "P": 0.034,
                         "S": 0.002, "Cl": 0.002, "K": 0.001, "Ca": 0.074, "Fe": 0.001}, 1.18),
    "titanium": ({"Ti": 1.0}, 4.506),
    "stainless_steel": ({"Fe": 0.655, "Cr": 0.17, "Ni": 0.12, "Mo": 0.025, "Mn": 0.02, "Si": 0.01}, 8.0),
    "iodine_contrast": ({"I": 0.2602, "H": 0.111894 * 0.7398, "O": 0.888106 * 0.7398}, 1.345),
}
ALIASES = {"cortical_bone": "bone", "soft": "soft_tissue", "tissue": "soft_tissue", "fat": "adipose",
           "steel": "stainless_steel", "contrast": "iodine_contrast"}
_user: dict = {}


def register(material: Material) -> Material:
    """Make a user material available by name to :func:`get_material` (and the simulator)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", material.name):
        raise ValueError(f"material names are identifiers, got {material.name!r}")
    _user[material.name] = material
    return material


def get_material(name: str) -> Material:
    """A standard or registered material by name (see ``standard_materials()``)."""
    key = ALIASES.get(name, name)
    if key in _user:
        return _user[key]
    if key not in _STANDARD:
        raise ValueError(f"unknown material {name!r}; known: {sorted(set(_STANDARD) | set(_user))} "
                         "(add one with engine.physics.register(from_formula(...)))")
    comp, rho = _STANDARD[key]
    return Material(key, comp, rho)


def standard_materials() -> list[str]:
    return sorted(_STANDARD)


def attenuation_table(materials, energies_kev) -> np.ndarray:
    """(n_materials, n_energies) mu/rho in cm^2/g for names or Material objects."""
    mats = [m if isinstance(m, Material) else get_material(m) for m in materials]
    return np.stack([m.mass_attenuation(energies_kev) for m in mats])
