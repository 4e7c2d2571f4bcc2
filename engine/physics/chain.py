"""The detector-side chain: path lengths -> primary -> (+ scatter) -> intensity or -ln, with its VJP.

``PhysicsChain.forward(paths)`` maps per-material mass thicknesses (M, rows, cols)
in g/cm^2 to the noiseless, flat-field-normalised image (1 = unattenuated beam),
or to its negative log.  ``vjp(state, grad_image)`` returns d(loss)/d(paths) for the
forward that returned ``state`` (``forward(paths, return_state=True)``), so image losses flow
back into the CT projector or the mesh renderer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import as_pixel_spacing, square_pitch
from .attenuation import attenuation_table
from .detector import BeerLambert, Detector
from .scatter import ScatterModel, field_cm2
from .spectrum import Spectrum


@dataclass(frozen=True, eq=False)
class PhysicsState:
    """What :meth:`PhysicsChain.vjp` needs of one forward: its paths (g/cm^2), primary + scatter image, and the
    scatter model's saved values (None without scatter)."""

    paths: np.ndarray
    total: np.ndarray
    scatter: object


class PhysicsChain:
    """Noiseless physics for one material set, spectrum, detector and scatter model.

    Parameters
    ----------
    materials : material names of the path-length channels
    spectrum : Spectrum (one bin = monochromatic)
    detector : Detector
    scatter : ScatterModel or None
    output : "intensity" (I / I0) or "line_integral" (-ln of it)
    pixel_size : detector pixel pitch (for the scatter kernels), mm: one number (square pixels) or
        ``(row pitch, column pitch)``; kept as :attr:`pixel_spacing` (row, column)
    """

    def __init__(self, materials, spectrum: Spectrum, *, detector: Detector | None = None,
                 scatter: ScatterModel | None = None, output: str = "intensity", pixel_size=1.0):
        if output not in ("intensity", "line_integral"):
            raise ValueError(f"output must be 'intensity' or 'line_integral', got {output!r}")
        self.bl = BeerLambert(materials, spectrum, detector)
        self.spectrum = spectrum
        self.scatter = scatter
        self.output = output
        self.pixel_spacing = as_pixel_spacing(pixel_size)
        e_eff = float(self.bl.w @ spectrum.energies_kev)  # detector-weighted mean energy
        mu = attenuation_table(list(self.bl.materials) + ["water"], [e_eff])[:, 0]
        self.water_equivalent = mu[:-1] / mu[-1]  # cm of water per g/cm^2 of each material

    def water_cm(self, paths) -> np.ndarray:
        """Water-equivalent thickness (cm) at the effective energy."""
        return np.tensordot(self.water_equivalent, np.asarray(paths, np.float64), axes=1)

    @property
    def pixel_size(self) -> float:
        """The pitch of square pixels, mm (``ValueError`` for rectangular ones: see :attr:`pixel_spacing`)."""
        return square_pitch(self.pixel_spacing, "pixel_size")

    def field_cm2(self, shape) -> float:
        """Detector field area (cm^2) of a (rows, cols) image, for the automatic SPR."""
        return field_cm2(shape, self.pixel_spacing)

    def forward(self, paths, return_parts: bool = False, return_state: bool = False):
        """Noiseless image from (M, rows, cols) g/cm^2; with ``return_parts`` also a dict of
        ``primary``, ``scatter``, ``water_cm``, ``spr``; with ``return_state`` also the state :meth:`vjp`
        needs (last in the returned tuple): forwards and VJPs may then interleave in any order."""
        paths = np.asarray(paths, np.float64)
        if paths.ndim != 3:
            raise ValueError(f"paths must be (materials, rows, cols), got {paths.shape}")
        primary = self.bl.transmission(paths)
        scatter = np.zeros_like(primary)
        parts = {"primary": primary, "scatter": scatter, "water_cm": None, "spr": 0.0}
        sc_cache = None
        if self.scatter is not None:
            w = self.water_cm(paths)
            spr = self.scatter.resolve_spr(self.spectrum.kvp, self.field_cm2(paths.shape[1:]), w)
            scatter, sc_cache = self.scatter.forward(primary, w, self.pixel_spacing, spr)
            parts.update(scatter=scatter, water_cm=w, spr=spr)
        image = primary + scatter
        if self.output == "line_integral":
            image = -np.log(np.maximum(image, 1e-300))
        state = PhysicsState(paths, primary + scatter, sc_cache)
        out = (image,) + ((parts,) if return_parts else ()) + ((state,) if return_state else ())
        return out[0] if len(out) == 1 else out

    def vjp(self, state: PhysicsState, grad_image) -> np.ndarray:
        """d(loss)/d(paths), (M, rows, cols), for d(loss)/d(image) of the forward that returned ``state``."""
        if not isinstance(state, PhysicsState):
            raise TypeError("vjp(state, grad): state must be the PhysicsState returned by "
                            "forward(..., return_state=True)")
        paths, total, sc_cache = state.paths, state.total, state.scatter
        g = np.asarray(grad_image, np.float64)
        if g.shape != total.shape:
            raise ValueError(f"gradient shape {g.shape} differs from the image's {total.shape}")
        if self.output == "line_integral":
            g = -g / total
        g_primary = g.copy()
        g_paths = np.zeros_like(paths)
        if sc_cache is not None:
            gp, gw, g_spr = self.scatter.vjp(sc_cache, g)
            w = sc_cache[1]  # the automatic SPR depends on the mean water thickness, hence on the paths
            gw = gw + self.scatter.resolve_spr_vjp(self.spectrum.kvp, self.field_cm2(w.shape), w, g_spr)
            g_primary += gp
            g_paths += self.water_equivalent[:, None, None] * gw[None]
        return g_paths + self.bl.transmission_vjp(paths, g_primary)
