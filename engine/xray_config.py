"""The X-ray physics of a simulation in one frozen object: ``XrayConfig``, and the helpers that resolve it.

``engine.simulate(scene, cameras, meshes, config)`` and ``engine.Simulator(ct, meshes, config)`` take the beam,
detector, scatter, noise, output units and mesh densities as one :class:`XrayConfig` instead of a dozen keyword
arguments, checked once, when it is made (an error names the field).  It is frozen and hashable, so a viewer or a
dataset can key a cache of simulators by it, and ``config.replace(noise=None)`` makes a variant.

The helpers turn its fields into the physics objects: :func:`resolve_spectrum` (a :class:`Spectrum` from a
preset name, a kVp or ``mono_kev``), :func:`scatter_model`, :func:`noise_model`, :func:`mesh_scales` (mesh path
length to mass thickness).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .physics import Detector, NoiseModel, ScatterModel, Spectrum, get_material, preset, tube_spectrum
from .physics.spectrum import PRESETS

OUTPUTS = ("intensity", "line_integral")
PHYSICS = ("device", "numpy")
KVP_RANGE = (50.0, 150.0)  # what engine.physics.tube_spectrum (spekpy) computes, kV


def _number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _check_bins(bins, where: str = "") -> None:
    """``where``: the owner named in the message (``"XrayConfig."``)."""
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"{where}bins must be a positive whole number of energy bins, got {bins!r}")


def _check_mono(mono_kev, spectrum, where: str = "") -> None:
    if mono_kev is None:
        return
    if not (_number(mono_kev) and math.isfinite(mono_kev) and mono_kev > 0):
        raise ValueError(f"{where}mono_kev must be a positive energy in keV, got {mono_kev!r}")
    if spectrum is not None:
        raise ValueError(f"{where}mono_kev: give either spectrum or mono_kev, not both")


def resolve_spectrum(spectrum=None, mono_kev: float | None = None, bins: int = 32) -> Spectrum:
    """A Spectrum from a Spectrum, a preset name, a kVp (spekpy, 2.5 mm Al), or ``mono_kev`` (keV);
    default the ``fluoro90`` preset.  ``bins``: energy bins of a preset or kVp spectrum."""
    _check_bins(bins)
    _check_mono(mono_kev, spectrum)
    if mono_kev is not None:
        return Spectrum.monochromatic(float(mono_kev))
    if spectrum is None:
        return preset("fluoro90", bins=bins)
    if isinstance(spectrum, Spectrum):
        return spectrum
    if isinstance(spectrum, str):
        return preset(spectrum, bins=bins)
    return tube_spectrum(float(spectrum), bins=bins)


def scatter_model(scatter) -> ScatterModel | None:
    """None (no scatter) from False or None, the default :class:`ScatterModel` from True, or the model given."""
    sc = ScatterModel() if scatter is True else (scatter or None)
    if sc is not None and not isinstance(sc, ScatterModel):
        raise TypeError(f"scatter must be a bool or a ScatterModel, got {type(scatter).__name__}")
    return sc


def noise_model(noise) -> NoiseModel | None:
    """None, a NoiseModel, or a number of detected photons per pixel of the unattenuated beam."""
    return noise if isinstance(noise, NoiseModel) or noise is None else NoiseModel(photons=float(noise))


def mesh_scales(materials, densities) -> list:
    """g/cm^2 per mm of each mesh material: density (g/cm^3) / 10; ``densities`` ({material: g/cm^3}, or
    (material, g/cm^3) pairs as :attr:`XrayConfig.mesh_densities` holds them) overrides the nominal ones of
    :func:`engine.physics.get_material` (e.g. titanium 4.506, cortical bone 1.92)."""
    given = dict(densities or {})
    out = []
    for name in materials:
        rho = given.get(name, None)
        rho = get_material(name).density if rho is None else float(rho)
        if not (np.isfinite(rho) and rho >= 0):
            raise ValueError(f"density of {name!r} must be a finite number >= 0 g/cm^3, got {rho!r}")
        out.append(rho / 10.0)
    return out


@dataclass(frozen=True, kw_only=True)
class XrayConfig:
    """How a scene becomes an X-ray image: beam, detector, scatter, noise, output units (frozen, hashable).

    Parameters
    ----------
    spectrum : Spectrum, preset name ("fluoro60", "fluoro90", "fluoro120"), a tube voltage in kVp (a number in
        50-150: computed with spekpy, 2.5 mm Al), or None (default: the ``"fluoro90"`` preset).
    mono_kev : float, optional
        A monochromatic beam at this photon energy, keV, instead of a spectrum (not with ``spectrum``).
    bins : int
        Energy bins of a preset or kVp spectrum (default 32).
    detector : Detector, optional
        The detector's response (default: energy-integrating, CsI 0.6 mm).
    scatter : bool or ScatterModel
        Scatter by kernel superposition: False (default), True (the default :class:`ScatterModel`) or a model.
    noise : None, NoiseModel or a number
        Quantum and electronic noise; a number is the dose in detected photons per pixel of the unattenuated
        beam (:class:`NoiseModel` ``photons``).  None (default): noiseless.
    output : "intensity" or "line_integral"
        ``I/I0`` (flat-field normalised, 1 = unattenuated beam; default) or ``-ln(I/I0)`` (dimensionless).
    mesh_densities : {material: g/cm^3}, optional
        Densities of the mesh materials (default: nominal, :func:`engine.physics.get_material`); held as a
        tuple of (material, g/cm^3) pairs sorted by name (``dict(config.mesh_densities)`` gives the mapping).
    step_mm : float, optional
        For a :class:`engine.Volume` scene that is uploaded here: sample rays trilinearly every ``step_mm`` mm
        (midpoint rule) instead of once per voxel plane (the projector's default, which has the CT gradients).
        Not used for a :class:`engine.VolumeProjector`, which keeps its own sampling.
    physics : "device" or "numpy"
        Where :func:`engine.simulate` runs the physics: on the device (default; :class:`engine.Simulator`) or
        on the host (NumPy :class:`engine.physics.PhysicsChain`, float64).  A Simulator is always "device".

    Raises
    ------
    ValueError or TypeError naming the field, e.g. ``XrayConfig.output must be 'intensity' or ...``.

    Examples
    --------
    >>> cfg = XrayConfig(spectrum="fluoro90", scatter=True, noise=2e4, output="line_integral")
    >>> cfg.replace(noise=None).noise is None
    True
    """

    spectrum: Spectrum | str | float | None = None
    mono_kev: float | None = None
    bins: int = 32
    detector: Detector | None = None
    scatter: bool | ScatterModel = False
    noise: NoiseModel | float | None = None
    output: str = "intensity"
    mesh_densities: tuple | None = None
    step_mm: float | None = None
    physics: str = "device"

    def __post_init__(self):
        name = type(self).__name__
        s = self.spectrum
        if isinstance(s, str):
            if s not in PRESETS:
                raise ValueError(f"{name}.spectrum: unknown spectrum preset {s!r}; choose from {sorted(PRESETS)}, "
                                 "or give a kVp or a Spectrum")
        elif _number(s):
            if not KVP_RANGE[0] <= s <= KVP_RANGE[1]:
                raise ValueError(f"{name}.spectrum: a tube voltage must be within {KVP_RANGE[0]:g}-"
                                 f"{KVP_RANGE[1]:g} kVp, got {s!r}")
        elif s is not None and not isinstance(s, Spectrum):
            raise TypeError(f"{name}.spectrum must be a Spectrum, a preset name, a kVp or None, got "
                            f"{type(s).__name__}")
        _check_mono(self.mono_kev, s, where=f"{name}.")
        _check_bins(self.bins, where=f"{name}.")
        if self.detector is not None and not isinstance(self.detector, Detector):
            raise TypeError(f"{name}.detector must be a Detector or None, got {type(self.detector).__name__}")
        if not isinstance(self.scatter, (bool, np.bool_, ScatterModel)):
            raise TypeError(f"{name}.scatter must be a bool or a ScatterModel, got {type(self.scatter).__name__}")
        n = self.noise
        if n is not None and not isinstance(n, NoiseModel):
            if not (_number(n) and math.isfinite(n) and n > 0):
                raise ValueError(f"{name}.noise must be None, a NoiseModel or a positive number of photons per "
                                 f"pixel, got {n!r}")
            object.__setattr__(self, "noise", float(n))
        if self.output not in OUTPUTS:
            raise ValueError(f"{name}.output must be 'intensity' or 'line_integral', got {self.output!r}")
        object.__setattr__(self, "mesh_densities", self._densities(self.mesh_densities, name))
        st = self.step_mm
        if st is not None and not (_number(st) and math.isfinite(st) and st > 0):
            raise ValueError(f"{name}.step_mm must be a positive length in mm or None, got {st!r}")
        if self.physics not in PHYSICS:
            raise ValueError(f"{name}.physics must be 'device' or 'numpy', got {self.physics!r}")

    @staticmethod
    def _densities(given, name: str):
        """A mapping or (material, g/cm^3) pairs -> sorted tuple of pairs (hashable), checked; None stays."""
        if given is None:
            return None
        try:
            pairs = dict(given.items() if isinstance(given, Mapping) else given)
        except (TypeError, ValueError):
            raise TypeError(f"{name}.mesh_densities must be a {{material: g/cm^3}} mapping, got "
                            f"{type(given).__name__}") from None
        out = []
        for mat, rho in sorted(pairs.items()):
            if not isinstance(mat, str):
                raise TypeError(f"{name}.mesh_densities: material names must be strings, got {mat!r}")
            if not (_number(rho) and math.isfinite(rho) and rho >= 0):
                raise ValueError(f"{name}.mesh_densities: density of {mat!r} must be a finite number >= 0 "
                                 f"g/cm^3, got {rho!r}")
            out.append((mat, float(rho)))
        return tuple(out)

    def replace(self, **changes) -> "XrayConfig":
        """A copy with ``changes`` (field=value), checked like a new one (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)
