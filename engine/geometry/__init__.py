"""Cameras (projective X-ray geometry, C-arm angles), rays and point projection, rotations and rigid poses
(:mod:`engine.geometry.transforms`), the pixel ray of every kernel (:mod:`engine.geometry.rays`).

World frame: the CT patient frame, RAS+, mm.  See :mod:`engine.geometry.camera`.
"""
from .camera import Camera, bin_image, camera_batch, central_rays_meet, from_source_detector
from .carm import carm, carm_angles, carm_rotation

__all__ = ["Camera", "bin_image", "camera_batch", "carm", "carm_angles", "carm_rotation", "central_rays_meet", "from_source_detector"]
