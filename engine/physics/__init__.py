"""X-ray physics: spectra, mass attenuation, polychromatic Beer-Lambert, scatter, noise.

Turns per-material path lengths (g/cm^2) from the projectors into detector images.
"""
from .attenuation import Material, attenuation_table, from_formula, get_material, mixture, register
from .chain import PhysicsChain
from .detector import BeerLambert, Detector
from .noise import NoiseModel, photons_per_pixel, swank_factor
from .scatter import ScatterModel, typical_spr
from .spectrum import Spectrum, preset, tube_spectrum

__all__ = ["BeerLambert", "Detector", "Material", "NoiseModel", "PhysicsChain", "ScatterModel", "Spectrum",
           "attenuation_table", "from_formula", "get_material", "mixture", "photons_per_pixel", "preset",
           "register", "swank_factor", "tube_spectrum", "typical_spr"]
