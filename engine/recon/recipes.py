"""Settings of :func:`engine.recon.reconstruct` that work, by kind of target, as keyword dictionaries:
``reconstruct(images, cameras, model, init=..., **xray_settings(128))``."""
from __future__ import annotations

from .reconstruct import default_schedule


def xray_settings(detector_px: int, n_modes: int | None = 10, scale: bool = False, free_iterations: int = 0,
                  search_mm=(16.0, 8.0)) -> dict:
    """:func:`reconstruct` options for X-ray targets (the evaluation's tier 3, ``engine reconstruct`` of intensity
    images, the demo's ``--target xray``): the bone X-ray loss (local NCC), a firmer prior than for renders of
    the model (images pull less cleanly on the shape), the pose alone at the coarse level, and no level coarser
    than 96 pixels: a 1 mm cortex in 6-8 mm pixels no longer looks like the X-ray, and that level's loss
    preferred poses 15 mm off.  A grid of starting translations (``search_mm``: +-16 mm by 8 mm) is tried first: the loss is sharp, and a start
    about a bone's width off could settle on the wrong edges and drift away.  ``search_mm=None`` for a
    bone among repeats of itself (a vertebra: its neighbours lie 20-30 mm away along the spine, and the
    search finds them: a level off; on tier 3a it turned 5 of 10 successes into 3)."""
    return {"loss": "xray", "prior_weight": 1e-2, "n_modes": n_modes,
            "search_mm": None if search_mm is None else tuple(search_mm),
            "schedule": default_schedule(scale, free_iterations, detector_px, min_level_px=96, pose_first=True)}
