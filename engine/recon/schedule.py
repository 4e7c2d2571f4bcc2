"""The schedule of a reconstruction: coarse to fine over detector bins, groups of unknowns per stage.

Stages run in order; each stops after its iterations or when its best loss has not improved by ``tol``
(relative) for ``patience`` iterations (:class:`engine.recon.ReconConfig`), and its best parameters start the
next.  Groups: ``shape`` (model coefficients, standard deviations), ``rotation`` (rad), ``translation`` (mm),
``scale`` (log), ``free`` (per-vertex displacements, mm).
"""
from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("shape", "rotation", "translation", "scale", "free")


@dataclass(frozen=True)
class Stage:
    """One stage of the schedule: detector bin factor, iterations, groups optimised, learning-rate multiplier."""

    factor: int
    iterations: int
    groups: tuple = ("shape", "rotation", "translation")
    lr_scale: float = 1.0

    def __post_init__(self):
        if isinstance(self.factor, bool) or int(self.factor) != self.factor or self.factor < 1:
            raise ValueError(f"Stage.factor must be a whole bin factor >= 1, got {self.factor!r}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise ValueError(f"Stage.iterations must be a whole number >= 0, got {self.iterations!r}")
        bad = [g for g in self.groups if g not in GROUPS]
        if bad or not self.groups:
            raise ValueError(f"Stage.groups must name some of {GROUPS}, got {self.groups!r}")
        if not self.lr_scale > 0:
            raise ValueError(f"Stage.lr_scale must be positive, got {self.lr_scale!r}")
        object.__setattr__(self, "groups", tuple(self.groups))


def default_schedule(scale: bool = False, free_iterations: int = 0, detector_px: int | None = None,
                     min_level_px: int = 48, pose_first: bool = False) -> tuple:
    """Bins 4 -> 2 -> 1: pose alone, then pose + shape at each level, then optionally free vertices.

    With ``detector_px`` (the smaller detector side), levels coarser than ``min_level_px`` pixels are
    skipped (their iterations go to the coarsest level kept).  ``pose_first``: the pose alone at every
    level but the finest, then pose + shape at the two finest levels (for X-ray losses, where shape
    freedom early on fits the wrong edges)."""
    pose = ("rotation", "translation") + (("scale",) if scale else ())
    full = ("shape",) + pose
    factors = [f for f in (4, 2) if detector_px is None or detector_px // f >= min_level_px]
    first = factors[0] if factors else 1
    if pose_first:
        levels = factors + [1]
        stages = [Stage(f, 60, pose, 2.0 if i == 0 else 1.0) for i, f in enumerate(factors)] or \
            [Stage(1, 60, pose, 2.0)]
        stages += [Stage(f, 60, full, 0.5 if f > 1 else 0.25) for f in levels[-2:]]
    else:
        stages = [Stage(first, 40, pose, 2.0), Stage(first, 80, full, 1.0)]
        stages += [Stage(f, 60, full, 0.5) for f in factors[1:]]
        stages.append(Stage(1, 40, full, 0.25))
    if free_iterations:
        stages.append(Stage(1, free_iterations, ("free",), 1.0))
    return tuple(stages)
