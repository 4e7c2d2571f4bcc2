"""A scene and its physics built once, rendered per batch of cameras, forwards and backwards: ``Simulator``.

``Simulator(ct, meshes, XrayConfig(spectrum=..., scatter=..., noise=...))`` uploads the CT (a :class:`Volume`, or a
:class:`VolumeProjector` to share) and holds the meshes (a :class:`MeshProjector`), and keeps one device physics
chain (:class:`engine.physics.DeviceChain`) per detector pixel pitch.  A call renders a batch of cameras:

1. the CT projector's per-material line integrals (g/cm^2) and the meshes' path lengths (mm, supersampled and
   softened on the device: :mod:`engine.mesh.finish`) stay on the device, where each view's frame adds them up
   per material (mesh lengths times density / 10);
2. the device chain turns each frame into the detector image (Beer-Lambert with the spectrum and detector
   response, scatter, noise, output units), written into one batch buffer;
3. the batch crosses to the host once.

:meth:`Simulator.forward` also returns a :class:`SimulatorState` (the stages' explicit states: cameras, the
meshes' recorded hits, each frame's mass thickness on the device) and :meth:`Simulator.vjp` chains the stages'
adjoints: the device chain's (:mod:`engine.physics.device_chain_vjp`), then the CT projector's (rigid pose of
the volume, voxel densities) and the mesh projector's (vertices).  Noise is not differentiated: the gradient of
a noisy image is its noiseless image's.  The per-material gradient images cross to the host once per batch
between the chain's and the projectors' adjoints (the projectors' VJPs take host gradients; the pose
gradient's final sum runs on the host).

Units: images in I/I0 (flat-field normalised) or -ln I/I0; poses in radians and mm (the convention of
:mod:`engine.geometry.transforms`); vertices in mm, world frame; densities in g/cm^3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import backend
from .geometry import Camera, camera_batch
from .volume import Volume, VolumeProjector
from .volume.projection_grad import ProjectionState
from .xray_config import XrayConfig, mesh_scales, noise_model, resolve_spectrum, scatter_model

__all__ = ["Simulator", "SimulatorState", "mesh_scales", "noise_model", "resolve_spectrum"]  # helpers: xray_config


@dataclass(frozen=True, eq=False)
class SimulatorState:
    """What :meth:`Simulator.vjp` needs of one :meth:`Simulator.forward`: its cameras, the CT projector's and the
    meshes' saved states (None where the scene has no CT or no meshes), and each view's frame (device copies of
    its mass thickness)."""

    cameras: tuple
    ct: ProjectionState | None
    mesh: object
    frames: tuple


class Simulator:
    """X-ray images of a CT and/or meshes for batches of cameras, with gradients.

    Parameters
    ----------
    ct : Volume or VolumeProjector, optional
        The CT's per-material densities; a Volume is uploaded here (and freed by :meth:`close`), a
        VolumeProjector is used as it is (shared, not closed here).
    meshes : MeshProjector, optional
        Closed meshes (implants, tools, bones); their path lengths times each material's density.
    config : XrayConfig, optional
        The physics: beam, detector, scatter, noise, output units, mesh densities (default ``XrayConfig()``:
        the ``fluoro90`` preset, no scatter, no noise, ``I/I0``).  Its ``step_mm`` is the sampling of a Volume
        uploaded here; ``physics`` must be ``"device"``.

    Calls take a Camera or a sequence of Cameras sharing the detector shape and always return a leading view
    axis: ``(n, rows, cols)`` float32, n = 1 for one Camera (docs/conventions.md, "Return shapes").

    Examples
    --------
    >>> sim = Simulator(volume, meshes, XrayConfig(spectrum="fluoro90", scatter=True))     # doctest: +SKIP
    >>> images, state = sim.forward(cameras)            # (n, rows, cols)
    >>> grads = sim.vjp(state, dloss_dimages)           # {"ct_pose": (n, 6), "vertices": (V, 3)}
    """

    def __init__(self, ct=None, meshes=None, config: XrayConfig | None = None):
        from .mesh import MeshProjector

        config = XrayConfig() if config is None else config
        if not isinstance(config, XrayConfig):
            raise TypeError(f"config must be an engine.XrayConfig, got {type(config).__name__}")
        if config.physics != "device":
            raise ValueError(f"a Simulator runs the physics on the device: config.physics must be 'device', got "
                             f"{config.physics!r} (physics='numpy' is for engine.simulate)")
        if ct is None and meshes is None:
            raise ValueError("nothing to render: give a CT (Volume or VolumeProjector) and/or meshes")
        if ct is not None and not isinstance(ct, (Volume, VolumeProjector)):
            raise TypeError(f"ct must be a Volume or a VolumeProjector, got {type(ct).__name__}")
        if meshes is not None and not isinstance(meshes, MeshProjector):
            raise TypeError(f"meshes must be a MeshProjector, got {type(meshes).__name__}")
        # everything that can fail is checked before the CT is uploaded
        spectrum = resolve_spectrum(config.spectrum, config.mono_kev, config.bins)
        mesh_scale = mesh_scales(meshes.materials, config.mesh_densities) if meshes is not None else []
        self._owns_ct = isinstance(ct, Volume)
        if self._owns_ct:
            ct = VolumeProjector(ct, step_mm=config.step_mm)
        self.config = config
        self.ct = ct
        self.meshes = meshes
        self.spectrum = spectrum
        self.detector = config.detector
        self.scatter = scatter_model(config.scatter)
        self.noise = noise_model(config.noise)
        self.output = config.output
        self.materials = tuple(dict.fromkeys(list(ct.materials if ct is not None else [])
                                             + list(meshes.materials if meshes is not None else [])))
        self.mesh_scale = mesh_scale
        self._chains = {}
        self._images = None
        self._last_chain = None
        self._closed = False

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the CT's device copy if this simulator uploaded it, and the chains' buffers; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_ct and self.ct is not None:
            self.ct.close()
        self._chains.clear()
        self._images = self._last_chain = None

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chain(self, pixel_size):
        """The device physics chain (:class:`engine.physics.DeviceChain`) of detectors with this pixel pitch (mm:
        one number, or ``(row pitch, column pitch)`` as :attr:`Camera.pixel_spacing`), built on first use."""
        from .geometry.camera import as_pixel_spacing
        from .physics.device_chain import DeviceChain  # kernels: imported when first used, not by ``import engine``

        key = as_pixel_spacing(pixel_size)
        if key not in self._chains:
            self._chains[key] = DeviceChain(self.materials, self.spectrum, detector=self.detector,
                                            scatter=self.scatter, output=self.output, pixel_size=key)
        return self._chains[key]

    def quanta(self, camera: Camera) -> float | None:
        """Effective quanta per pixel of the unattenuated beam at this camera (None without noise)."""
        if self.noise is None:
            return None
        return self.noise.quanta(self.spectrum, self.chain(camera.pixel_spacing).host.bl.detector,
                                 camera.pixel_spacing, camera.sdd)

    # ------------------------------------------------------------------ forward
    def __call__(self, cameras, *, seed=None) -> np.ndarray:
        """Images of a Camera or of a sequence of Cameras sharing the detector shape: (n, rows, cols) float32,
        n = 1 for one Camera, in the output's units.  ``seed`` (int, None or numpy Generator) drives the noise:
        view i of a batch draws from ``seed_u32(seed) + i``, so a batch's view 0 is what one camera gives with
        that seed."""
        return self._run(cameras, seed, record=False)[0]

    def forward(self, cameras, *, seed=None):
        """Render like :meth:`__call__` and return ``(images (n, rows, cols), SimulatorState)`` for :meth:`vjp`."""
        return self._run(cameras, seed, record=True)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Simulator is closed (make a new one)")

    def _cameras(self, cameras) -> list:
        self._check_open()
        return camera_batch(cameras)

    def _ct_fields(self, cams):
        """view i -> (device field, its index there): the CT's (n, M, rows, cols) image in one buffer when it
        fits the device's largest buffer (Vulkan: 128 MiB), else rendered view by view."""
        if self.ct.batch_fits(len(cams), cams[0].rows, cams[0].cols):
            field = self.ct.render_field(cams)
            return lambda i: (field, i)
        return lambda i: (self.ct.render_field([cams[i]]), 0)

    def _run(self, cameras, seed, record: bool, parts: list | None = None):
        """(images (n, rows, cols), SimulatorState or None); ``parts``: a list that receives each view's
        :meth:`DeviceChain.parts` (for :func:`engine.simulate`'s ``return_all``)."""
        from .physics import device_beer_lambert as dbl
        from .physics.device_rng import seed_u32

        cams = self._cameras(cameras)
        n, rows, cols = len(cams), cams[0].rows, cams[0].cols
        ti = backend.ti_module()
        if self._images is None or tuple(self._images.shape) != (n, rows, cols):
            self._images = None
            self._images = ti.ndarray(ti.f32, (n, rows, cols))
        ct_state = mesh_state = None
        ct_view = None
        if self.ct is not None:
            ct_view = self._ct_fields(cams)
            ct_state = ProjectionState(tuple(cams), (n, len(self.ct.materials), rows, cols), self.ct.density_version)
        if self.meshes is not None:
            mesh_field, _ = self.meshes.render_field(cams, record=record)
            if record:
                mesh_state = self.meshes.snapshot()
        key0 = seed_u32(seed) if self.noise is not None else 0
        frames = []
        for i, cam in enumerate(cams):
            chain = self.chain(cam.pixel_spacing)
            chain.reset(rows, cols)
            if ct_view is not None:
                field, view = ct_view(i)
                chain.add_field(field, self.ct.materials, view=view)
            if self.meshes is not None:
                chain.add_flat(mesh_field, self.meshes.materials, view=i, scale=self.mesh_scale)
            dbl.copy_view(self._images, i, self._detect(chain, cam, key0 + i))
            if record:
                frames.append(chain.snapshot())
            if parts is not None:
                parts.append(chain.parts())
        images = self._images.to_numpy()
        if not record:
            return images, None
        return images, SimulatorState(tuple(cams), ct_state, mesh_state, tuple(frames))

    def detector_image(self, paths, cameras, *, seed=None) -> np.ndarray:
        """The physics alone on precomputed mass thickness, e.g. CT line integrals rendered in pieces with a
        progress bar.

        Parameters
        ----------
        paths : (n, M, rows, cols) array_like
            g/cm^2 per material of :attr:`materials`, one stack per camera.
        cameras : Camera or sequence of n Cameras
            Their pixel pitch, distance and detector shape (the dose, the scatter kernels).
        seed : int, None or numpy Generator
            Noise: view i draws from ``seed_u32(seed) + i``, as in :meth:`__call__`.

        Returns
        -------
        (n, rows, cols) float32 images in the output's units.
        """
        from .physics.device_rng import seed_u32

        cams = self._cameras(cameras)
        p = np.asarray(paths, np.float32)
        want = (len(cams), len(self.materials), cams[0].rows, cams[0].cols)
        if p.shape != want:
            raise ValueError(f"paths must be {want} (views, materials {self.materials}, rows, cols), got {p.shape}")
        key0 = seed_u32(seed) if self.noise is not None else 0
        out = np.empty((len(cams), cams[0].rows, cams[0].cols), np.float32)
        for i, cam in enumerate(cams):
            chain = self.chain(cam.pixel_spacing)
            chain.reset(cam.rows, cam.cols)
            chain.add_array(p[i], self.materials)
            out[i] = self._detect(chain, cam, key0 + i).to_numpy()
        return out

    def _detect(self, chain, camera: Camera, key: int):
        """Run ``chain``'s frame to the detector image at ``camera`` (its dose), noise drawn from the device seed
        ``key``; the chain's own (rows, cols) ndarray."""
        q = self.quanta(camera)
        self._last_chain = chain
        return chain.run(quanta=q, electronic_std=0.0 if q is None else self.noise.electronic_std, key=key)

    def parts(self) -> dict:
        """Host copies of the last view's intermediate images (see :meth:`DeviceChain.parts`)."""
        if self._last_chain is None:
            raise RuntimeError("render before asking for parts")
        return self._last_chain.parts()

    # ------------------------------------------------------------------ gradients
    def vjp(self, state: SimulatorState, grad, *, ct_pose: bool = True, density: bool = False,
            vertices: bool = True, center=None) -> dict:
        """Gradients of a loss given d loss / d images of the :meth:`forward` that returned ``state``.

        Parameters
        ----------
        grad : (n, rows, cols), the forward's images' shape, per unit of the output
        ct_pose : return ``"ct_pose"``, (n, 6) per view: d loss / d (rotation vector rad, translation mm) of a
            rigid move of the CT in the world frame about ``center`` (default the volume's centre):
            :meth:`VolumeProjector.vjp`'s convention
        density : return ``"density"``, (M, I, J, K) d loss / d density (per g/cm^3) of the CT's materials
        vertices : return ``"vertices"``, (V, 3) d loss / d mesh vertices (per mm, world frame)

        Also returned: ``"mass_thickness"``, (n, M, rows, cols) d loss / d g/cm^2 per material of
        :attr:`materials` (the chain's adjoint, before the projectors').
        """
        self._check_open()
        if not isinstance(state, SimulatorState):
            raise TypeError("state must be the SimulatorState returned by forward()")
        n = len(state.cameras)
        rows, cols = state.cameras[0].rows, state.cameras[0].cols
        g = np.asarray(grad, np.float64)
        want = (n, rows, cols)
        if g.shape != want:
            raise ValueError(f"grad has shape {g.shape}, the forward's images {want}")
        if not np.all(np.isfinite(g)):
            raise ValueError("grad contains NaN or inf")
        gm = np.stack([self.chain(cam.pixel_spacing).vjp(state.frames[i], g[i])
                       for i, cam in enumerate(state.cameras)]).astype(np.float64)
        out = {"mass_thickness": gm}
        if self.ct is not None and (ct_pose or density):
            idx = [self.materials.index(m) for m in self.ct.materials]
            g_ct = gm[:, idx]
            got = self.ct.vjp(state.ct, g_ct, pose=ct_pose, density=density, center=center)
            if ct_pose:
                out["ct_pose"] = got["pose"]
            if density:
                out["density"] = got["density"]
        if self.meshes is not None and vertices:
            idx = [self.materials.index(m) for m in self.meshes.materials]
            g_len = gm[:, idx] * np.asarray(self.mesh_scale)[None, :, None, None]
            out["vertices"] = self.meshes.vjp(state.mesh, g_len)
        return out
