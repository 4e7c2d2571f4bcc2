"""From Hounsfield units to per-material densities (g/cm^3).

Two steps, as in DeepDRR:

1. **density**: a piecewise-linear calibration HU -> mass density.  The default
   is bilinear in the style of Schneider et al. (Phys. Med. Biol. 41, 1996):
   air (-1000 HU) 0.0012 g/cm^3, water (0 HU) 1.0, soft tissue (+100 HU) 1.1,
   dense cortical bone (+1600 HU) 1.92, then the same slope up to 3071 HU.
2. **materials**: weights per voxel that sum to 1, by HU thresholds with
   linear transitions of a chosen width (air below -800 HU, bone above 350 HU,
   soft tissue between), or from a label map.

The per-material density of a voxel is ``density(HU) * weight_m``; the projector
integrates each of these along rays, giving g/cm^2 per material.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ct import CT, VoxelGrid, check_affine, check_grid

DEFAULT_HU_POINTS = (-1000.0, 0.0, 100.0, 1600.0, 3071.0)
DEFAULT_DENSITY_POINTS = (0.0012, 1.0, 1.1, 1.92, 2.7076)


@dataclass(frozen=True)
class HUCalibration:
    """Piecewise-linear HU -> density (g/cm^3); constant beyond the end points."""

    hu: tuple = DEFAULT_HU_POINTS
    density: tuple = DEFAULT_DENSITY_POINTS

    def __post_init__(self):
        h, d = np.asarray(self.hu, float), np.asarray(self.density, float)
        if h.shape != d.shape or h.ndim != 1 or h.size < 2:
            raise ValueError("calibration needs two equal-length lists of at least 2 points")
        if np.any(np.diff(h) <= 0):
            raise ValueError("calibration HU points must increase")
        if np.any(d < 0) or not np.all(np.isfinite(d)):
            raise ValueError("calibration densities must be finite and >= 0")

    def __call__(self, hu) -> np.ndarray:
        return np.interp(np.asarray(hu, np.float32), self.hu, self.density).astype(np.float32)


def threshold_weights(hu: np.ndarray, air_below: float = -800.0, bone_above: float = 350.0,
                      transition: float = 100.0) -> np.ndarray:
    """Air / soft tissue / bone weights, (3, *hu.shape) float32, summing to 1.

    Each threshold is the centre of a linear ramp ``transition`` HU wide
    (0 gives hard thresholds).
    """
    if bone_above <= air_below:
        raise ValueError("bone threshold must exceed the air threshold")
    if transition < 0 or transition > bone_above - air_below:
        raise ValueError(f"transition must be in [0, {bone_above - air_below}] HU, got {transition}")
    hu = np.asarray(hu, np.float32)
    if transition == 0:
        air = (hu < air_below).astype(np.float32)
        bone = (hu > bone_above).astype(np.float32)
    else:
        air = np.clip((air_below + transition / 2 - hu) / transition, 0, 1)
        bone = np.clip((hu - bone_above + transition / 2) / transition, 0, 1)
    return np.stack([air, 1.0 - air - bone, bone]).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class Volume(VoxelGrid):
    """Per-material densities on a voxel grid: what the projector renders.

    Attributes
    ----------
    density : (M, I, J, K) float32, g/cm^3
        Density of material m in each voxel (total density times its weight).
    materials : tuple of M str
        Material names (e.g. ``("air", "soft_tissue", "bone")``).
    world_from_index : (4, 4) float64
        Voxel index (integer = centre) -> world RAS+ mm.  A voxel fills
        ``[i - 1/2, i + 1/2]`` along each index axis.
    """

    density: np.ndarray = field(repr=False)
    materials: tuple
    world_from_index: np.ndarray = field(repr=False)

    def __post_init__(self):
        d = np.asarray(self.density)
        if d.ndim != 4:
            raise ValueError(f"density must be (materials, I, J, K), got shape {d.shape}")
        check_grid(d[0], "density")
        if not np.all(np.isfinite(d)):
            raise ValueError("density contains NaN or inf")
        if np.any(d < 0):
            raise ValueError("density must be >= 0 g/cm^3")
        mats = tuple(str(m) for m in self.materials)
        if len(mats) != d.shape[0] or len(set(mats)) != len(mats):
            raise ValueError(f"need {d.shape[0]} distinct material names, got {mats}")
        d = np.array(d, dtype=np.float32)  # own copy: never alias the caller's array
        d.setflags(write=False)
        object.__setattr__(self, "density", d)
        object.__setattr__(self, "materials", mats)
        a = check_affine(self.world_from_index, "world_from_index")
        a.setflags(write=False)
        object.__setattr__(self, "world_from_index", a)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(I, J, K) voxels."""
        return self.density.shape[1:]


    @classmethod
    def from_ct(cls, ct: CT, *, calibration: HUCalibration | None = None, air_below: float = -800.0,
                bone_above: float = 350.0, transition: float = 100.0) -> "Volume":
        """Air / soft tissue / bone densities by HU thresholds (see module doc)."""
        cal = calibration or HUCalibration()
        hu = ct.hu
        lo, hi = float(hu.min()), float(hu.max())
        if hi - lo < 65536 and np.array_equal(hu, np.rint(hu)):
            # integer HU (as stored in CT files): tabulate once per value, then gather
            grid = np.arange(lo, hi + 1, dtype=np.float32)
            table = threshold_weights(grid, air_below, bone_above, transition) * cal(grid)[None]
            idx = (hu - lo).astype(np.int32)
            density = np.stack([t[idx] for t in table])
        else:
            density = threshold_weights(hu, air_below, bone_above, transition) * cal(hu)[None]
        return cls(density=density, materials=("air", "soft_tissue", "bone"), world_from_index=ct.world_from_index)

    @classmethod
    def from_labels(cls, ct: CT, labels: np.ndarray, label_materials: dict, *,
                    calibration: HUCalibration | None = None, **threshold_kw) -> "Volume":
        """Materials from a label map.

        Voxels whose label is a key of ``label_materials`` get that material
        (weight 1); all others are split by HU thresholds into air / soft tissue /
        bone.  Densities come from the HU calibration in both cases.

        Parameters
        ----------
        labels : (I, J, K) int array on the CT's grid.
        label_materials : {label id: material name}; names may repeat.
        """
        labels = np.asarray(labels)
        if labels.shape != ct.shape:
            raise ValueError(f"label map shape {labels.shape} differs from the CT's {ct.shape}")
        rho = (calibration or HUCalibration())(ct.hu)
        base = threshold_weights(ct.hu, **threshold_kw)
        names = ["air", "soft_tissue", "bone"]
        for m in label_materials.values():
            if m not in names:
                names.append(str(m))
        w = np.zeros((len(names),) + ct.shape, np.float32)
        w[:3] = base
        for lab, m in label_materials.items():
            mask = labels == lab
            w[:, mask] = 0.0
            w[names.index(m), mask] = 1.0
        return cls(density=w * rho[None], materials=tuple(names), world_from_index=ct.world_from_index)
