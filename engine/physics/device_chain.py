"""The physics chain on the device: mass thickness -> detector image without leaving the GPU.

``DeviceChain`` does what :class:`PhysicsChain` (+ :class:`NoiseModel`) does, in Taichi
kernels: polychromatic Beer-Lambert with the detector weighting (:mod:`.device_beer_lambert`),
kernel-superposition scatter with fixed or automatic SPR (:mod:`.device_scatter`), Poisson
and electronic noise from a counter-based per-pixel generator and the output units
(:mod:`.device_noise`).  Its input is added on the device from a projector's field
(:meth:`add_field`, e.g. ``VolumeProjector.render_field``) or uploaded from the host
(:meth:`add_array`, e.g. mesh path lengths, which the mesh projector finishes on the host:
supersampling and soft edges).  Only the final image crosses to the host (:meth:`image`),
or it is handed over as a Taichi ndarray (:meth:`run`).

Noiseless images agree with the NumPy chain to float32 rounding (float32 arithmetic here,
float64 there); noisy images have the same distribution, not the same samples.  There is
no device VJP: gradients go through :meth:`PhysicsChain.vjp`.

Build once per (materials, spectrum, detector, scatter, output, pixel size) and reuse across
frames: buffers are allocated for the first detector shape and kept while it stays the same.
"""
import numpy as np

from .. import backend
from . import device_beer_lambert as dbl
from .chain import PhysicsChain
from .detector import Detector
from .device_noise import detect
from .device_rng import seed_u32
from .device_scatter import DeviceScatter
from .scatter import ScatterModel
from .spectrum import Spectrum


class DeviceChain:
    """Noiseless or noisy detector images from per-material mass thickness, on the device.

    Parameters
    ----------
    materials : material names of the mass-thickness channels (in the chain's order)
    spectrum : Spectrum (one bin = monochromatic)
    detector : Detector (default energy-integrating CsI 0.6 mm)
    scatter : ScatterModel or None
    output : "intensity" (I/I0) or "line_integral" (-ln I/I0)
    pixel_mm : detector pixel pitch, mm (scatter kernel widths, field size for the automatic SPR)
    """

    def __init__(self, materials, spectrum: Spectrum, *, detector: Detector | None = None,
                 scatter: ScatterModel | None = None, output: str = "intensity", pixel_mm: float = 1.0):
        self.host = PhysicsChain(materials, spectrum, detector=detector, scatter=scatter, output=output,
                                 pixel_mm=pixel_mm)  # the tables (and validation) are the NumPy chain's
        self.materials = self.host.bl.materials
        self.output = output
        self.scatter = scatter
        ti = backend.ti_module()
        self._ti = ti
        self._mu = self._upload(self.host.bl.mu)  # (M, E) cm^2/g
        self._w = self._upload(self.host.bl.w)  # (E,)
        self._water = self._upload(self.host.water_equivalent)  # (M,) cm per g/cm^2
        self._shape = None

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
            self._sc = DeviceScatter(self.scatter, (rows, cols), self.host.pixel_mm, self.host.spectrum.kvp)
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

    def run(self, *, quanta: float | None = None, electronic_std: float = 0.0, seed=None):
        """Compute the frame on the device; returns the image as a (rows, cols) float32 Taichi ndarray
        (overwritten by the next run).

        quanta : effective quanta per pixel of the unattenuated beam (``NoiseModel.quanta``); None = no noise
        electronic_std : electronic noise, quanta per pixel
        seed : int, None (fresh entropy) or numpy Generator; same seed, same image
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
               seed_u32(seed) if quanta else 0, int(self.output == "line_integral"), self.scatter_image,
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

    def parts(self) -> dict:
        """Host copies of the last run's intermediate images: ``paths`` (M, rows, cols) g/cm^2, ``primary``,
        ``scatter`` (I/I0), ``noiseless`` (output units), all float32, and ``spr``."""
        spr = self._sc.spr() if self.scatter is not None else 0.0
        return dict(paths=self.mass.to_numpy(), primary=self.primary.to_numpy(),
                    scatter=self.scatter_image.to_numpy(), noiseless=self.clean.to_numpy(), spr=spr)
