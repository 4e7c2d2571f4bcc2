"""The settings of a reconstruction, frozen: :class:`ReconConfig`, and its recipe for X-ray targets.

``reconstruct(images, cameras, model, init, ReconConfig(loss="gncc", n_modes=10))``; a variant is
``config.replace(prior_weight=1e-2)``; the settings that work for X-rays of bone are
``ReconConfig.xray(detector_px)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .losses import Loss, get_loss
from .schedule import GROUPS, Stage, default_schedule

DEFAULT_LR = {"shape": 0.1, "rotation": float(np.deg2rad(1.0)), "translation": 1.0, "scale": 0.003, "free": 0.1}


@dataclass(frozen=True)
class ReconConfig:
    """Settings of :func:`engine.recon.reconstruct` (units in each field's line).

    loss : name (``ncc``, ``gncc``, ``bncc``, ``mse``, ``silhouette``, ``xray``), a :class:`engine.recon.Loss`
        or a function ``f(images, target) -> (value, grad)`` (:mod:`engine.recon.losses`).  A Loss object is
        copied by each reconstruction (its region of interest is the reconstruction's, not the config's).
    schedule : tuple of :class:`Stage`, optional; default :func:`default_schedule` with ``scale`` and
        ``free_iterations`` for the detector.
    lr : learning rates per group overriding :data:`DEFAULT_LR` (shape: standard deviations; rotation: rad;
        translation: mm; scale: log; free: mm); a dict is accepted and kept as sorted pairs.
    prior_weight : ``w`` of the prior ``w/2 |c|^2`` (coefficients in standard deviations).
    n_modes : optimise only the first modes (default all).
    scale : optimise an isotropic scale too (default schedule only).
    free_iterations : a last stage freeing the vertices (default schedule only).
    smoothness : ``mu`` of the free-vertex stage's Laplacian term ``mu/2 |L d|^2`` (1/mm^2 scale).
    fix_depth : keep the model's distance along the first camera's principal ray at its initial value (from
        one view a gain-invariant loss trades magnification against size); default True for one view.
    soft_sigma_px : Gaussian blur (pixels of the current level) of render and target alike.
    max_hits : surface crossings recorded per ray (per surface) for the renderer's adjoint.
    tol, patience : a stage stops when its best loss has not improved by ``tol`` (relative) in ``patience``
        iterations.
    search_mm : (extent, step) mm, optional: before the first stage, the start shifted on a grid of
        translations (across the principal ray only when the depth is fixed) at the first stage's level;
        5 x 5 x 5 candidates for ``(16, 8)`` (:func:`engine.recon.objective.translation_search`).
    precision : 32 or 64, the renderer's float bits (64 for gradient checks).
    """

    loss: object = "ncc"
    schedule: tuple | None = None
    lr: tuple = ()
    prior_weight: float = 1e-3
    n_modes: int | None = None
    scale: bool = False
    free_iterations: int = 0
    smoothness: float = 10.0
    fix_depth: bool | None = None
    soft_sigma_px: float = 1.0
    max_hits: int = 64
    tol: float = 1e-4
    patience: int = 15
    search_mm: tuple | None = None
    precision: int = 32

    def __post_init__(self):
        set_ = (lambda name, value: object.__setattr__(self, name, value))
        if not isinstance(self.loss, (str, Loss)) and not callable(self.loss):
            raise TypeError(f"ReconConfig.loss: a name, a Loss or a function, got {type(self.loss).__name__}")
        if isinstance(self.loss, str):
            get_loss(self.loss)  # an unknown name fails here, with the names that exist
        if self.schedule is not None:
            stages = tuple(self.schedule)
            if not stages or not all(isinstance(s, Stage) for s in stages):
                raise ValueError("ReconConfig.schedule: a non-empty sequence of engine.recon.Stage")
            set_("schedule", stages)
        lr = dict(self.lr)
        bad = [g for g in lr if g not in GROUPS]
        if bad:
            raise ValueError(f"ReconConfig.lr: unknown groups {bad}; groups are {GROUPS}")
        if not all(np.isfinite(v) and v > 0 for v in lr.values()):
            raise ValueError(f"ReconConfig.lr: learning rates must be positive, got {lr}")
        set_("lr", tuple(sorted((k, float(v)) for k, v in lr.items())))
        for name in ("prior_weight", "smoothness", "soft_sigma_px", "tol"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"ReconConfig.{name} must be a finite number >= 0, got {v!r}")
        for name, low in (("free_iterations", 0), ("max_hits", 1), ("patience", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < low:
                raise ValueError(f"ReconConfig.{name} must be a whole number >= {low}, got {v!r}")
        if self.n_modes is not None and (int(self.n_modes) != self.n_modes or self.n_modes < 1):
            raise ValueError(f"ReconConfig.n_modes must be a whole number >= 1 or None, got {self.n_modes!r}")
        if self.search_mm is not None:
            s = tuple(float(x) for x in self.search_mm)
            if len(s) != 2 or not (s[0] >= 0 and s[1] > 0):
                raise ValueError(f"ReconConfig.search_mm: (extent >= 0, step > 0) mm, got {self.search_mm!r}")
            set_("search_mm", s)
        if self.precision not in (32, 64):
            raise ValueError(f"ReconConfig.precision must be 32 or 64, got {self.precision!r}")

    @property
    def learning_rates(self) -> dict:
        """Learning rate per group: :data:`DEFAULT_LR` with :attr:`lr`'s overrides."""
        return {**DEFAULT_LR, **dict(self.lr)}

    def stages(self, detector_px: int) -> tuple:
        """The schedule for a detector whose smaller side has ``detector_px`` pixels."""
        if self.schedule is not None:
            return self.schedule
        return default_schedule(self.scale, self.free_iterations, detector_px)

    def replace(self, **changes) -> "ReconConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def xray(cls, detector_px: int, n_modes: int | None = 10, scale: bool = False, free_iterations: int = 0,
             search_mm=(16.0, 8.0)) -> "ReconConfig":
        """The recipe for X-ray targets (the evaluation's tier 3, ``engine reconstruct`` of intensity images, the
        demo's ``--target xray``): the bone X-ray loss (local NCC), a firmer prior than for renders of the model
        (images pull less cleanly on the shape), the pose alone at the coarse level, and no level coarser than
        96 pixels: a 1 mm cortex in 6-8 mm pixels no longer looks like the X-ray, and that level's loss
        preferred poses 15 mm off.  A grid of starting translations (``search_mm``: +-16 mm by 8 mm) is tried
        first: the loss is sharp, and a start about a bone's width off could settle on the wrong edges and
        drift away.  ``search_mm=None`` for a bone among repeats of itself (a vertebra: its neighbours lie
        20-30 mm away along the spine, and the search finds them: a level off; on tier 3a it turned 5 of 10
        successes into 3)."""
        return cls(loss="xray", prior_weight=1e-2, n_modes=n_modes, scale=scale, free_iterations=free_iterations,
                   search_mm=None if search_mm is None else tuple(search_mm),
                   schedule=default_schedule(scale, free_iterations, detector_px, min_level_px=96,
                                             pose_first=True))
