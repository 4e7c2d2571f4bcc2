"""Cameras (projective X-ray geometry, C-arm angles), rays and point projection.

World frame: the CT patient frame, RAS+, mm.  See :mod:`engine.geometry.camera`.
"""
from .camera import Camera, bin_image, from_source_detector
from .carm import carm, carm_rotation

__all__ = ["Camera", "bin_image", "carm", "carm_rotation", "from_source_detector"]
