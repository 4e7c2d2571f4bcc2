"""A CT image: Hounsfield units on a voxel grid with its world affine."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def check_affine(world_from_index, what: str = "affine") -> np.ndarray:
    """Validate a (4, 4) voxel-index -> world (mm) affine; return it as float64."""
    a = np.array(world_from_index, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"{what} must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise ValueError(f"{what}'s last row must be [0, 0, 0, 1]")
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError(f"{what} has zero voxel spacing or is singular (spacing {spacing} mm)")
    return a


def check_grid(values: np.ndarray, what: str) -> None:
    """Raise ValueError unless ``values`` is a finite, non-empty 3D array."""
    if values.ndim != 3:
        raise ValueError(f"{what} must be a 3D volume, got {values.ndim} dimensions (shape {values.shape})")
    if min(values.shape) < 1:
        raise ValueError(f"{what} is empty (shape {values.shape})")
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            idx = tuple(int(x) for x in np.argwhere(bad)[0])
            raise ValueError(f"{what} contains {int(bad.sum())} NaN/inf voxels (first at index {idx})")


class VoxelGrid:
    """Geometry shared by voxel volumes: needs ``shape`` (I, J, K) and ``world_from_index`` (4, 4)."""

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel spacing along i, j, k, mm."""
        return np.linalg.norm(self.world_from_index[:3, :3], axis=0)

    @property
    def center(self) -> np.ndarray:
        """(3,) world position (mm) of the centre of the voxel grid."""
        c = (np.array(self.shape) - 1) / 2.0
        return self.world_from_index[:3, :3] @ c + self.world_from_index[:3, 3]

    def corners(self) -> np.ndarray:
        """(8, 3) world positions (mm) of the corners of the voxel box (voxel i fills [i - 1/2, i + 1/2])."""
        n = np.array(self.shape, float)
        idx = np.array([[x, y, z] for x in (-0.5, n[0] - 0.5) for y in (-0.5, n[1] - 0.5)
                        for z in (-0.5, n[2] - 0.5)])
        return idx @ self.world_from_index[:3, :3].T + self.world_from_index[:3, 3]


@dataclass(frozen=True, kw_only=True)
class CT(VoxelGrid):
    """A CT volume in Hounsfield units.

    Attributes
    ----------
    hu : (I, J, K) float32 array
        Hounsfield units; index order as stored in the file (NIfTI order).
    world_from_index : (4, 4) float64
        Maps voxel indices ``(i, j, k, 1)`` (integer = voxel centre) to world
        RAS+ mm.  May be rotated or oblique.
    source : str
        Where it was read from (for messages).
    """

    hu: np.ndarray = field(repr=False)
    world_from_index: np.ndarray = field(repr=False)
    source: str = ""

    def __post_init__(self):
        hu = np.asarray(self.hu)
        check_grid(hu, f"CT {self.source}".strip())
        hu = hu.astype(np.float32, copy=True)
        hu.setflags(write=False)
        object.__setattr__(self, "hu", hu)
        a = check_affine(self.world_from_index, "world_from_index")
        a.setflags(write=False)
        object.__setattr__(self, "world_from_index", a)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(I, J, K) voxels."""
        return self.hu.shape

    def __repr__(self) -> str:
        return (f"CT(shape={self.shape}, spacing={np.round(self.spacing, 4).tolist()} mm, "
                f"hu=[{self.hu.min():.0f}, {self.hu.max():.0f}], source={self.source!r})")
