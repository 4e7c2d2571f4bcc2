"""A Taichi-based, differentiable X-ray simulation engine.

Layers, bottom to top (docs/architecture.md): ``engine.backend`` (Taichi init), ``engine.geometry`` (cameras,
poses), ``engine.volume`` | ``engine.mesh`` (path lengths: CT ray marching | closed meshes), ``engine.physics``
(spectra, attenuation, scatter, noise; host and device chains), ``engine.simulate`` / ``engine.Simulator`` (scene +
physics set by one ``engine.XrayConfig``, forwards and backwards), ``engine.ssm``, ``engine.recon`` | ``engine.registration``, ``engine.torch`` |
``engine.dataset``, then ``engine.viewer`` and the ``engine`` command line.
"""
from .geometry import Camera, carm, from_source_detector
from .simulate import Simulation, simulate
from .simulator import Simulator, SimulatorState
from .volume import CT, Volume, VolumeProjector, load_ct
from .xray_config import XrayConfig

__version__ = "0.1.0"

__all__ = ["CT", "Camera", "Volume", "VolumeProjector", "XrayConfig", "carm", "from_source_detector", "load_ct",
           "simulate", "Simulation", "Simulator", "SimulatorState"]
