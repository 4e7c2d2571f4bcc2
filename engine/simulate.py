"""One call from a scene and a camera to an X-ray image: ``engine.simulate``."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import Camera
from .physics import Detector, PhysicsChain, ScatterModel, Spectrum
from .simulator import Simulator, mesh_scales, noise_model, resolve_spectrum
from .volume import Volume, VolumeProjector


@dataclass
class Simulation:
    """Result of :func:`simulate` with ``return_all=True`` (all (rows, cols) float32 unless noted)."""

    image: np.ndarray  # the final image (intensity I/I0 or -ln of it)
    paths: np.ndarray  # (M, rows, cols) g/cm^2 per material
    materials: tuple
    primary: np.ndarray  # noiseless primary I/I0
    scatter: np.ndarray  # noiseless scatter I/I0
    noiseless: np.ndarray  # primary + scatter, in the output's units
    spr: float
    quanta_per_pixel: float | None  # effective quanta of the unattenuated beam (None: no noise)
    spectrum: Spectrum = field(repr=False)


def mass_thickness(camera: Camera, volume=None, meshes=None, densities: dict | None = None, *, ct_paths=None):
    """Per-material mass thickness (g/cm^2) of a CT and/or meshes, summed by material name.

    Parameters
    ----------
    volume : VolumeProjector, optional
    meshes : MeshProjector, optional (path lengths in mm, times each material's density)
    densities : {material: g/cm^3} for the mesh materials; default the nominal densities of
        :func:`engine.physics.get_material` (e.g. titanium 4.506, cortical bone 1.92).
    ct_paths : (M, rows, cols) g/cm^2, optional
        The volume's image at ``camera`` when it is already rendered (e.g. in pieces, with a progress bar).

    Returns
    -------
    (materials tuple, (M, rows, cols) float64 g/cm^2)
    """
    parts = []
    if volume is not None:
        img = volume(camera) if ct_paths is None else np.asarray(ct_paths)
        parts += list(zip(volume.materials, img.astype(np.float64)))
    if meshes is not None:
        lengths = meshes(camera).astype(np.float64)
        for name, length, scale in zip(meshes.materials, lengths, mesh_scales(meshes.materials, densities)):
            parts.append((name, length * scale))
    if not parts:
        raise ValueError("nothing to render: give a volume and/or meshes")
    names = tuple(dict.fromkeys(n for n, _ in parts))
    out = np.zeros((len(names),) + parts[0][1].shape)
    for n, p in parts:
        out[names.index(n)] += p
    return names, out


def simulate(scene, camera: Camera, *, meshes=None, mesh_densities: dict | None = None, spectrum=None, mono_kev: float | None = None, bins: int = 32,
             detector: Detector | None = None, scatter=False, noise=None, seed=None,
             output: str = "intensity", step_mm: float | None = None, return_all: bool = False,
             physics: str = "device"):
    """Render an X-ray image of a CT volume and/or triangle meshes (e.g. an implant placed in a CT).

    Parameters
    ----------
    scene : Volume, VolumeProjector (reuse a projector across frames to avoid re-uploading), or None
    meshes : MeshProjector, optional; its path lengths are added per material (see :func:`mass_thickness`)
    mesh_densities : {material: g/cm^3} for the meshes (default: nominal densities)
    camera : Camera
    spectrum : Spectrum, preset name ("fluoro60", "fluoro90", "fluoro120"), or a kVp
        (number: computed with spekpy, 2.5 mm Al); default "fluoro90".
    mono_kev : float, optional
        Monochromatic beam at this energy (keV) instead of a spectrum.
    bins : int
        Energy bins for preset/kVp spectra.
    detector : Detector (default: energy-integrating CsI 0.6 mm)
    scatter : bool or ScatterModel
    noise : None, NoiseModel, or a number of photons per pixel (unattenuated, detected)
    seed : int or numpy Generator, for the noise (same seed, same image)
    output : "intensity" (I/I0, flat-field normalised) or "line_integral" (-ln I/I0)
    step_mm : for a Volume scene: sample rays trilinearly every ``step_mm`` mm (midpoint rule) instead of once
        per voxel plane (the projector's default sampling)
    return_all : return a :class:`Simulation` with the intermediate maps
    physics : "device" (default): a :class:`engine.Simulator` renders it (the CT's and the meshes' images
        and the physics stay on the device; only the image crosses to the host); for many frames build a
        Simulator once instead; "numpy": the projectors' outputs are copied to the host and the NumPy
        :class:`PhysicsChain` runs there.  Noiseless images agree to float32 rounding; noisy ones have
        the same statistics but not the same samples (different generators).

    Returns
    -------
    (rows, cols) float32 image, or a Simulation.
    """
    if isinstance(scene, VolumeProjector) or scene is None:
        proj = scene
    elif isinstance(scene, Volume):
        proj = VolumeProjector(scene, step_mm=step_mm)
    else:
        raise TypeError(f"scene must be a Volume, a VolumeProjector or None, got {type(scene).__name__}")
    if not isinstance(camera, Camera):
        raise TypeError("simulate renders one Camera at a time")
    spec = resolve_spectrum(spectrum, mono_kev, bins)
    sc = ScatterModel() if scatter is True else (scatter or None)
    if sc is not None and not isinstance(sc, ScatterModel):
        raise TypeError("scatter must be a bool or a ScatterModel")
    if output not in ("intensity", "line_integral"):
        raise ValueError(f"output must be 'intensity' or 'line_integral', got {output!r}")
    if physics == "device":
        return _simulate_device(proj, camera, meshes, mesh_densities, spec, detector, sc, noise, seed, output,
                                return_all, owns=not isinstance(scene, VolumeProjector))
    if physics != "numpy":
        raise ValueError(f"physics must be 'device' or 'numpy', got {physics!r}")
    materials, paths = mass_thickness(camera, proj, meshes, mesh_densities)
    chain = PhysicsChain(materials, spec, detector=detector, scatter=sc, output="intensity",
                         pixel_size=camera.pixel_size)
    clean, parts = chain.forward(paths, return_parts=True)
    image, n_eff = clean, None
    nm = noise_model(noise)
    if nm is not None:
        n_eff = nm.quanta(spec, chain.bl.detector, camera.pixel_size, camera.sdd)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        image = nm.apply(clean, n_eff, rng)
    if output == "line_integral":
        image = -np.log(np.maximum(image, 0.5 / (n_eff or 1e12)))  # a zero count -> half a quantum
        clean = -np.log(clean)
    image = image.astype(np.float32)
    if not return_all:
        return image
    return Simulation(image=image, paths=paths.astype(np.float32), materials=materials,
                      primary=parts["primary"].astype(np.float32), scatter=parts["scatter"].astype(np.float32),
                      noiseless=clean.astype(np.float32), spr=float(parts["spr"]), quanta_per_pixel=n_eff,
                      spectrum=spec)


def _simulate_device(proj, camera, meshes, mesh_densities, spec, detector, sc, noise, seed, output, return_all,
                     owns: bool):
    """simulate(physics="device"): one frame of a Simulator over the given projectors."""
    sim = Simulator(proj, meshes, mesh_densities=mesh_densities, spectrum=spec, detector=detector,
                    scatter=sc if sc is not None else False, noise=noise, output=output)
    try:
        image = sim(camera, seed=seed)
        if not return_all:
            return image
        parts = sim.parts()
        return Simulation(image=image, paths=parts["paths"], materials=sim.materials, primary=parts["primary"],
                          scatter=parts["scatter"], noiseless=parts["noiseless"], spr=parts["spr"],
                          quanta_per_pixel=sim.quanta(camera), spectrum=spec)
    finally:
        if owns and proj is not None:
            proj.close()
