"""X-ray physics: spectra, mass attenuation, polychromatic Beer-Lambert, scatter, noise.

Turns per-material path lengths (g/cm^2) from the projectors into detector images:
``PhysicsChain`` in NumPy (with the exact VJP), ``DeviceChain`` in Taichi kernels (the image stays on the
device from the projector's field to the final detector value; imported on first use, as it starts Taichi).
"""
from .attenuation import Material, attenuation_table, from_formula, get_material, mixture, register
from .chain import PhysicsChain
from .detector import BeerLambert, Detector
from .noise import NoiseModel, photons_per_pixel, swank_factor
from .scatter import ScatterModel, typical_spr
from .spectrum import Spectrum, preset, tube_spectrum

__all__ = ["BeerLambert", "Detector", "DeviceChain", "Material", "NoiseModel", "PhysicsChain", "ScatterModel", "Spectrum",
           "attenuation_table", "from_formula", "get_material", "mixture", "photons_per_pixel", "preset",
           "register", "swank_factor", "tube_spectrum", "typical_spr"]


def __getattr__(name):
    if name == "DeviceChain":  # importing it initialises Taichi (engine.backend), so only on demand
        from .device_chain import DeviceChain

        return DeviceChain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
