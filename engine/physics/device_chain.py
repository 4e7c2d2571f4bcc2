"""The physics chain on the device: mass thickness -> detector image without leaving the GPU.

``DeviceChain`` does what :class:`PhysicsChain` (+ :class:`NoiseModel`) does, in Taichi
kernels: polychromatic Beer-Lambert with the detector weighting (:mod:`.device_beer_lambert`),
kernel-superposition scatter with fixed or automatic SPR (:mod:`.device_scatter`), Poisson
and electronic noise from a counter-based per-pixel generator and the output units
(:mod:`.device_noise`).  Its input is added on the device from a projector's field
(:meth:`add_field`, e.g. ``VolumeProjector.render_field``; :meth:`add_flat`, e.g.
``MeshProjector.render_field``, its supersampling and soft edges finished on the device) or uploaded from
the host (:meth:`add_array`).  Only the final image crosses to the host (:meth:`image`),
or it is handed over as a Taichi ndarray (:meth:`run`).

Noiseless images agree with the NumPy chain to float32 rounding (float32 arithmetic here,
float64 there); noisy images have the same distribution, not the same samples.

Gradients on the device: :meth:`DeviceChain.snapshot` keeps the frame's mass thickness (a device
copy: the explicit saved state of this stage) and :meth:`DeviceChain.vjp` maps d loss / d image to
d loss / d mass thickness with the adjoint kernels of :mod:`.device_chain_vjp` (noise is not
differentiated).  :meth:`PhysicsChain.vjp` (NumPy, float64) is the reference the tests hold it to.

Build once per (materials, spectrum, detector, scatter, output, pixel size) and reuse across
frames: buffers are allocated for the first detector shape and kept while it stays the same.
"""
from dataclasses import dataclass

import numpy as np

from .. import backend
from . import device_beer_lambert as dbl
from . import device_chain_vjp as dvjp
from .chain import PhysicsChain
from .detector import Detector
from .device_noise import detect
from .device_rng import seed_u32
from .device_scatter import DeviceScatter
from .scatter import ScatterModel
from .spectrum import Spectrum


@dataclass(frozen=True, eq=False)
class DeviceChainState:
    """What :meth:`DeviceChain.vjp` needs of one frame: a device copy of its mass thickness (M, rows, cols)
    g/cm^2 (the chain's material order)."""

    mass: object
    shape: tuple


class DeviceChain:
    """Noiseless or noisy detector images from per-material mass thickness, on the device.

    Parameters
    ----------
    materials : material names of the mass-thickness channels (in the chain's order)
    spectrum : Spectrum (one bin = monochromatic)
    detector : Detector (default energy-integrating CsI 0.6 mm)
    scatter : ScatterModel or None
    output : "intensity" (I/I0) or "line_integral" (-ln I/I0)
    pixel_size : detector pixel pitch, mm (scatter kernel widths, field size for the automatic SPR): one number
        (square pixels) or ``(row pitch, column pitch)``
    """

    def __init__(self, materials, spectrum: Spectrum, *, detector: Detector | None = None,
                 scatter: ScatterModel | None = None, output: str = "intensity", pixel_size=1.0):
        self.host = PhysicsChain(materials, spectrum, detector=detector, scatter=scatter, output=output,
                                 pixel_size=pixel_size)  # the tables (and validation) are the NumPy chain's
        self.materials = self.host.bl.materials
        self.output = output
        self.scatter = scatter
        ti = backend.ti_module()
        self._ti = ti
        self._mu = self._upload(self.host.bl.mu)  # (M, E) cm^2/g
        self._w = self._upload(self.host.bl.w)  # (E,)
        self._water = self._upload(self.host.water_equivalent)  # (M,) cm per g/cm^2
        self._shape = None
        self._adj = None  # the VJP's buffers, made on first use

    def _upload(self, a):
        a = np.ascontiguousarray(a, np.float32)
        out = self._ti.ndarray(self._ti.f32, a.shape)
        out.from_numpy(a)
        return out

    def _buffers(self, rows: int, cols: int):
        if self._shape == (rows, cols):
            return
        ti = self._ti
        m = len(self.materials)
        self.mass = ti.ndarray(ti.f32, (m, rows, cols))
        self._staging = ti.ndarray(ti.f32, (1, rows, cols))
        self.primary, self.water, self.scatter_image, self.clean, self.out = (
            ti.ndarray(ti.f32, (rows, cols)) for _ in range(5))
        if self.scatter is not None:
            self._sc = DeviceScatter(self.scatter, (rows, cols), self.host.pixel_spacing, self.host.spectrum.kvp)
        else:  # placeholders for the detector kernel's scatter arguments
            z = np.zeros(1, np.float32)
            self._nosc = (self._upload(np.zeros((1, 1))), self._ti.ndarray(ti.i32, (1,)), self._upload(z),
                          self._ti.ndarray(ti.i32, (1,)), self._upload(z), self._upload(np.zeros(5)))
        self._shape = (rows, cols)

    def reset(self, rows: int, cols: int) -> None:
        """Start a frame of ``rows x cols`` pixels: mass thickness zero everywhere."""
        self._buffers(int(rows), int(cols))
        self.mass.fill(0.0)

    def _channel(self, name) -> int:
        if name not in self.materials:
            raise ValueError(f"material {name!r} is not one of the chain's {self.materials}")
        return self.materials.index(name)

    def add_field(self, field, materials, *, scale: float = 1.0, view: int = 0) -> None:
        """Add a projector's device field (n, M', rows, cols) (view ``view``), channel by material name,
        times ``scale`` (1 for g/cm^2; density / 10 for mm of a material of density g/cm^3)."""
        if self._shape is None or tuple(field.shape[2:]) != self._shape:
            raise ValueError(f"field of shape {tuple(field.shape)} does not match the frame {self._shape}: "
                             "call reset(rows, cols) first")
        for k, name in enumerate(materials):
            dbl.add_channel(self.mass, self._channel(name), field, int(view), k, float(scale))

    def add_flat(self, field, materials, *, view: int = 0, scale=1.0) -> None:
        """Add a flat device array holding (n, M', rows, cols) values (any float type; e.g. a mesh projector's
        ``render_field``, mm) for view ``view``, channel by material name, times ``scale`` (a number or one per
        channel: density / 10 turns mm into g/cm^2)."""
        if self._shape is None:
            raise RuntimeError("call reset(rows, cols) before adding mass thickness")
        rows, cols = self._shape
        m = len(materials)
        if field.shape[0] < (view + 1) * m * rows * cols:
            raise ValueError(f"the flat field holds {field.shape[0]} values, fewer than view {view} of "
                             f"({m}, {rows}, {cols}) needs")
        scales = np.broadcast_to(np.asarray(scale, np.float64), (m,))
        for k, name in enumerate(materials):
            dbl.add_flat(self.mass, self._channel(name), field, (view * m + k) * rows * cols, float(scales[k]))

    def add_array(self, paths, materials, *, scale=1.0) -> None:
        """Add host path lengths (M', rows, cols) (g/cm^2 times ``scale``), channel by material name;
        ``scale`` a number or one per channel."""
        p = np.asarray(paths, np.float32)
        if p.ndim != 3 or p.shape[0] != len(materials) or (self._shape is not None and p.shape[1:] != self._shape):
            raise ValueError(f"paths must be ({len(materials)}, rows, cols) matching the frame {self._shape}, "
                             f"got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("path lengths contain NaN or inf")
        scales = np.broadcast_to(np.asarray(scale, np.float64), (len(materials),))
        for k, name in enumerate(materials):
            self._staging.from_numpy(p[k:k + 1])
            dbl.add_array(self.mass, self._channel(name), self._staging, 0, float(scales[k]))

    def run(self, *, quanta: float | None = None, electronic_std: float = 0.0, seed=None, key: int | None = None):
        """Compute the frame on the device; returns the image as a (rows, cols) float32 Taichi ndarray
        (overwritten by the next run).

        quanta : effective quanta per pixel of the unattenuated beam (``NoiseModel.quanta``); None = no noise
        electronic_std : electronic noise, quanta per pixel
        seed : int, None (fresh entropy) or numpy Generator; same seed, same image
        key : the 32-bit device seed itself (instead of ``seed``; :class:`engine.Simulator` gives view i of a
            batch ``seed_u32(seed) + i``)
        """
        if self._shape is None:
            raise RuntimeError("call reset() and add mass thickness before run()")
        if quanta is not None and not quanta > 0:
            raise ValueError(f"quanta must be positive, got {quanta}")
        if electronic_std < 0:
            raise ValueError("electronic_std must be >= 0")
        dbl.primary_and_water(self.mass, self._mu, self._w, self._water, self.primary, self.water,
                              len(self.materials))
        if self.scatter is not None:
            sc = self._sc
            sc.run(self.primary, self.water)
            tables = (sc.fc, *sc.up, sc.scalars)
        else:
            tables = self._nosc
        detect(self.primary, *tables, int(self.scatter is not None), float(quanta or 0.0), float(electronic_std),
               (seed_u32(seed) if key is None else int(key) % 2**32) if quanta else 0, int(self.output == "line_integral"), self.scatter_image,
               self.clean, self.out)
        return self.out

    def image(self, **noise) -> np.ndarray:
        """:meth:`run` and copy the image to the host: (rows, cols) float32."""
        return self.run(**noise).to_numpy()

    def forward(self, paths, **noise) -> np.ndarray:
        """Host convenience: (M, rows, cols) g/cm^2 in the chain's material order -> (rows, cols) float32."""
        p = np.asarray(paths)
        if p.ndim != 3 or p.shape[0] != len(self.materials):
            raise ValueError(f"paths must be (materials={len(self.materials)}, rows, cols), got {p.shape}")
        self.reset(*p.shape[1:])
        self.add_array(p, self.materials)
        return self.image(**noise)

    def snapshot(self) -> DeviceChainState:
        """The current frame's saved state for :meth:`vjp` (a device copy of its mass thickness)."""
        if self._shape is None:
            raise RuntimeError("call reset() and add mass thickness before snapshot()")
        mass = self._ti.ndarray(self._ti.f32, self.mass.shape)
        mass.copy_from(self.mass)
        return DeviceChainState(mass, self._shape)

    def _adjoint_buffers(self, rows: int, cols: int):
        if self._adj is not None and self._adj["shape"] == (rows, cols):
            return self._adj
        ti = self._ti
        a = {"shape": (rows, cols), "grad": ti.ndarray(ti.f32, (rows, cols)),
             "primary": ti.ndarray(ti.f32, (rows, cols)), "water": ti.ndarray(ti.f32, (rows, cols)),
             "g_total": ti.ndarray(ti.f32, (rows, cols)), "gf_rows": ti.ndarray(ti.f32, (rows,)),
             "g_scalars": ti.ndarray(ti.f32, (3,)), "g_mass": ti.ndarray(ti.f32, (len(self.materials), rows, cols))}
        if self.scatter is not None:  # a scatter instance of its own: the forward's buffers stay as they were
            sc = a["sc"] = DeviceScatter(self.scatter, (rows, cols), self.host.pixel_spacing, self.host.spectrum.kvp)
            a["g_fc"] = ti.ndarray(ti.f32, sc.fc.shape)
            a["g_coarse"] = ti.ndarray(ti.f32, sc.coarse.shape)
        else:  # placeholders for the kernels' scatter arguments
            z = np.zeros(1, np.float32)
            a["nosc"] = (self._upload(np.zeros((1, 1))), ti.ndarray(ti.i32, (1,)), self._upload(z),
                         ti.ndarray(ti.i32, (1,)), self._upload(z), self._upload(np.zeros(5)))
            a["g_coarse"], a["centres"] = self._upload(np.zeros((1, 1, 1))), self._upload(np.array([0.0, 1.0]))
        self._adj = a
        return a

    def vjp(self, state: DeviceChainState, grad, *, host: bool = True):
        """d loss / d mass thickness of the frame ``state`` was taken from, for d loss / d image ``grad``.

        Parameters
        ----------
        state : DeviceChainState from :meth:`snapshot`
        grad : (rows, cols) array_like or float32 Taichi ndarray, per unit of the output (I/I0 or -ln)
        host : return a NumPy array (default), else the chain's own (M, rows, cols) float32 Taichi ndarray
            (overwritten by the next VJP)

        Returns
        -------
        (M, rows, cols) float32, per g/cm^2, the chain's material order.  The noiseless image's gradient
        (noise is not differentiated).
        """
        if not isinstance(state, DeviceChainState):
            raise TypeError("state must be the DeviceChainState returned by snapshot()")
        rows, cols = state.shape
        a = self._adjoint_buffers(rows, cols)
        if isinstance(grad, self._ti.Ndarray):
            if tuple(grad.shape) != (rows, cols):
                raise ValueError(f"gradient shape {tuple(grad.shape)} differs from the image's {(rows, cols)}")
            g = grad
        else:
            gn = np.asarray(grad, np.float32)
            if gn.shape != (rows, cols):
                raise ValueError(f"gradient shape {gn.shape} differs from the image's {(rows, cols)}")
            if not np.all(np.isfinite(gn)):
                raise ValueError("gradient contains NaN or inf")
            g = a["grad"]
            g.from_numpy(np.ascontiguousarray(gn))
        m = len(self.materials)
        dbl.primary_and_water(state.mass, self._mu, self._w, self._water, a["primary"], a["water"], m)
        line = int(self.output == "line_integral")
        if self.scatter is None:
            fc, rj, rt, cj, ct, scalars = a["nosc"]
            dvjp.total_grad(g, a["primary"], fc, rj, rt, cj, ct, scalars, 0, line, a["g_total"], a["gf_rows"])
            dvjp.pixel_grad(state.mass, self._mu, self._w, self._water, a["primary"], a["water"], a["g_total"],
                            a["g_coarse"], a["g_scalars"], a["centres"], 1.0, 1, 1, 0.0, 0, a["g_mass"], m, 1)
        else:
            sc = a["sc"]
            sc.run(a["primary"], a["water"])
            dvjp.total_grad(g, a["primary"], sc.fc, *sc.up, sc.scalars, 1, line, a["g_total"], a["gf_rows"])
            dvjp.scale_grad(a["gf_rows"], sc.scalars, sc.block_sums, float(sc.spr_slope), a["g_scalars"])
            a["g_fc"].fill(0.0)
            dvjp.upsample_adjoint(a["g_total"], a["water"], *sc.up, sc.scalars, a["g_scalars"], sc.min_water_cm,
                                  a["g_fc"])
            dvjp.convolve_each(a["g_fc"], *sc.taps, sc.tmp, a["g_coarse"])
            dvjp.pixel_grad(state.mass, self._mu, self._w, self._water, a["primary"], a["water"], a["g_total"],
                            a["g_coarse"], a["g_scalars"], sc.centres, float(self.scatter.tau_cm), *sc.f,
                            sc.min_water_cm, 1, a["g_mass"], m, sc.n_groups)
        return a["g_mass"].to_numpy() if host else a["g_mass"]

    def parts(self) -> dict:
        """Host copies of the last run's intermediate images: ``paths`` (M, rows, cols) g/cm^2, ``primary``,
        ``scatter`` (I/I0), ``noiseless`` (output units), all float32, and ``spr``."""
        spr = self._sc.spr() if self.scatter is not None else 0.0
        return dict(paths=self.mass.to_numpy(), primary=self.primary.to_numpy(),
                    scatter=self.scatter_image.to_numpy(), noiseless=self.clean.to_numpy(), spr=spr)
