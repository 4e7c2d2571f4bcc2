"""One call from a scene and cameras to X-ray images: ``engine.simulate``."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .physics import PhysicsChain, Spectrum
from .geometry import camera_batch
from .simulator import Simulator, mesh_scales, noise_model, resolve_spectrum, scatter_model
from .volume import Volume, VolumeProjector
from .xray_config import XrayConfig


@dataclass
class Simulation:
    """Result of :func:`simulate` with ``return_all=True``: one entry per camera along a leading view axis n
    (float32 images unless noted)."""

    image: np.ndarray  # (n, rows, cols) the final images (I/I0 or -ln of it)
    paths: np.ndarray  # (n, M, rows, cols) g/cm^2 per material
    materials: tuple  # the M material names
    primary: np.ndarray  # (n, rows, cols) noiseless primary I/I0
    scatter: np.ndarray  # (n, rows, cols) noiseless scatter I/I0
    noiseless: np.ndarray  # (n, rows, cols) primary + scatter, in the output's units
    spr: np.ndarray  # (n,) float64 scatter-to-primary ratio per view
    quanta_per_pixel: np.ndarray | None  # (n,) float64 effective quanta of the unattenuated beam (None: no noise)
    spectrum: Spectrum = field(repr=False)


def mass_thickness(cameras, volume=None, meshes=None, densities=None, *, ct_paths=None):
    """Per-material mass thickness (g/cm^2) of a CT and/or meshes, summed by material name.

    Parameters
    ----------
    cameras : Camera or sequence of Camera (same detector shape)
    volume : VolumeProjector, optional
    meshes : MeshProjector, optional (path lengths in mm, times each material's density)
    densities : {material: g/cm^3} (or pairs) for the mesh materials; default the nominal densities of
        :func:`engine.physics.get_material` (e.g. titanium 4.506, cortical bone 1.92).
    ct_paths : (n, M_ct, rows, cols) g/cm^2, optional
        The volume's images at ``cameras`` when they are already rendered (e.g. in pieces, with a progress bar).

    Returns
    -------
    (materials tuple, (n, M, rows, cols) float64 g/cm^2), n = 1 for one Camera.
    """
    cams = camera_batch(cameras)
    parts = []
    if volume is not None:
        img = volume(cams) if ct_paths is None else np.asarray(ct_paths)
        parts += list(zip(volume.materials, img.astype(np.float64).transpose(1, 0, 2, 3)))
    if meshes is not None:
        lengths = meshes(cams).astype(np.float64).transpose(1, 0, 2, 3)
        for name, length, scale in zip(meshes.materials, lengths, mesh_scales(meshes.materials, densities)):
            parts.append((name, length * scale))
    if not parts:
        raise ValueError("nothing to render: give a volume and/or meshes")
    names = tuple(dict.fromkeys(n for n, _ in parts))
    out = np.zeros((len(names),) + parts[0][1].shape)
    for n, p in parts:
        out[names.index(n)] += p
    return names, out.transpose(1, 0, 2, 3)


def simulate(scene, cameras, meshes=None, config: XrayConfig | None = None, *, seed=None,
             return_all: bool = False):
    """Render X-ray images of a CT volume and/or triangle meshes (e.g. an implant placed in a CT).

    Parameters
    ----------
    scene : Volume, VolumeProjector (reuse a projector across calls to avoid re-uploading), or None
    cameras : Camera or sequence of Camera (same detector shape)
    meshes : MeshProjector, optional; its path lengths are added per material (see :func:`mass_thickness`)
    config : XrayConfig, optional
        The physics (spectrum or ``mono_kev``, detector, scatter, noise, output units, mesh densities, the
        sampling ``step_mm`` of a Volume scene, ``physics``); default ``XrayConfig()``: the ``fluoro90``
        preset, no scatter, no noise, ``I/I0``.  ``physics="device"`` (default): a :class:`engine.Simulator`
        renders it (the images and the physics stay on the device; only the result crosses to the host); for
        many calls build a Simulator once instead.  ``"numpy"``: the projectors' outputs are copied to the
        host and the NumPy :class:`PhysicsChain` runs there.  Noiseless images agree to float32 rounding;
        noisy ones have the same statistics but not the same samples (different generators).
    seed : int or numpy Generator, for the noise (same seed, same images; on the device view i draws from
        ``seed_u32(seed) + i`` as :meth:`Simulator.__call__` does)
    return_all : return a :class:`Simulation` with the intermediate maps

    Returns
    -------
    (n, rows, cols) float32 images, n = 1 for one Camera (docs/conventions.md, "Return shapes"), or a
    :class:`Simulation`.
    """
    config = XrayConfig() if config is None else config
    if not isinstance(config, XrayConfig):
        raise TypeError(f"config must be an engine.XrayConfig, got {type(config).__name__}")
    if scene is not None and not isinstance(scene, (Volume, VolumeProjector)):
        raise TypeError(f"scene must be a Volume, a VolumeProjector or None, got {type(scene).__name__}")
    cams = camera_batch(cameras)
    owned = isinstance(scene, Volume)  # uploaded here, freed here
    proj = VolumeProjector(scene, step_mm=config.step_mm) if owned else scene
    try:
        if config.physics == "device":
            return _simulate_device(proj, cams, meshes, config, seed, return_all)
        return _simulate_numpy(proj, cams, meshes, config, seed, return_all)
    finally:
        if owned:
            proj.close()


def _simulate_numpy(proj, cams, meshes, config: XrayConfig, seed, return_all: bool):
    """simulate(physics="numpy"): mass thickness to the host, then the NumPy chain view by view (the noise of
    view after view drawn from one generator)."""
    spec = resolve_spectrum(config.spectrum, config.mono_kev, config.bins)
    sc = scatter_model(config.scatter)
    nm = noise_model(config.noise)
    materials, paths = mass_thickness(cams, proj, meshes, config.mesh_densities)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    chains = {}
    views = []  # per view: image, primary, scatter, noiseless, spr, quanta
    for cam, view_paths in zip(cams, paths):
        if cam.pixel_spacing not in chains:
            chains[cam.pixel_spacing] = PhysicsChain(materials, spec, detector=config.detector, scatter=sc,
                                                     output="intensity", pixel_size=cam.pixel_spacing)
        chain = chains[cam.pixel_spacing]
        clean, parts = chain.forward(view_paths, return_parts=True)
        image, n_eff = clean, None
        if nm is not None:
            n_eff = nm.quanta(spec, chain.bl.detector, cam.pixel_spacing, cam.sdd)
            image = nm.apply(clean, n_eff, rng)
        if config.output == "line_integral":
            image = -np.log(np.maximum(image, 0.5 / (n_eff or 1e12)))  # a zero count -> half a quantum
            clean = -np.log(clean)
        views.append((image, parts["primary"], parts["scatter"], clean, float(parts["spr"]), n_eff))
    images = np.stack([v[0] for v in views]).astype(np.float32)
    if not return_all:
        return images
    return _simulation(images, paths, materials, views, spec, noisy=nm is not None)


def _simulate_device(proj, cams, meshes, config: XrayConfig, seed, return_all: bool):
    """simulate(physics="device"): one batch of a Simulator over the given projectors."""
    with Simulator(proj, meshes, config) as sim:
        parts = [] if return_all else None
        images, _ = sim._run(cams, seed, record=False, parts=parts)  # parts: each view's intermediate images
        if not return_all:
            return images
        views = [(None, q["primary"], q["scatter"], q["noiseless"], q["spr"], sim.quanta(cam))
                 for q, cam in zip(parts, cams)]
        paths = np.stack([q["paths"] for q in parts])
        return _simulation(images, paths, sim.materials, views, sim.spectrum, noisy=sim.noise is not None)


def _simulation(images, paths, materials, views, spectrum, noisy: bool) -> Simulation:
    """A Simulation from the images and each view's (image, primary, scatter, noiseless, spr, quanta)."""
    def stack(k):
        return np.stack([v[k] for v in views]).astype(np.float32)

    return Simulation(image=images, paths=np.asarray(paths, np.float32), materials=materials, primary=stack(1),
                      scatter=stack(2), noiseless=stack(3), spr=np.array([float(v[4]) for v in views]),
                      quanta_per_pixel=np.array([float(v[5]) for v in views]) if noisy else None,
                      spectrum=spectrum)
