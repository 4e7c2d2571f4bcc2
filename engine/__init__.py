"""A Taichi-based, differentiable X-ray simulation engine.

Layers (see docs/architecture.md): ``engine.backend`` (Taichi init), ``engine.geometry``
(cameras), ``engine.volume`` (CT reading, materials, ray-marching projector).
"""
from .geometry import Camera, carm, from_source_detector
from .simulate import Simulation, simulate
from .simulator import Simulator, SimulatorState
from .volume import CT, Volume, VolumeProjector, load_ct

__version__ = "0.1.0"

__all__ = ["CT", "Camera", "Volume", "VolumeProjector", "carm", "from_source_detector", "load_ct", "simulate", "Simulation",
           "Simulator", "SimulatorState"]
