"""Surface distances and Dice against analytic cases (concentric spheres)."""
import numpy as np
import pytest

from engine import metrics
from engine.mesh import icosphere


def test_concentric_spheres():
    a, b = icosphere(20.0, 5), icosphere(23.0, 5)
    m = metrics.surface_metrics(a, b, n=5000)
    # 5 subdivisions: chords sag by at most r(1 - cos(h/2r)) ~ 0.02 mm
    for k in ("hd", "hd95", "assd"):
        assert m[k] == pytest.approx(3.0, abs=0.05)
    assert metrics.hausdorff(a, a) < 1e-4


def test_offset_sphere_hausdorff():
    a, b = icosphere(20.0, 5), icosphere(20.0, 5, center=(4.0, 0, 0))
    assert metrics.hausdorff(a, b) == pytest.approx(4.0, abs=0.05)
    assert 0 < metrics.assd(a, b) < 4.0
    assert metrics.hausdorff95(a, b) <= metrics.hausdorff(a, b)


def test_dice_concentric_and_labels():
    a, b = icosphere(10.0, 4), icosphere(12.0, 4)
    va, vb = a.volume, b.volume
    assert metrics.dice(a, b, voxel=0.4) == pytest.approx(2 * va / (va + vb), abs=0.01)
    assert metrics.dice(a, a, voxel=0.5) == pytest.approx(1.0)
    # a voxelised ball of radius 10 mm on a 0.5 mm grid
    idx = np.stack(np.meshgrid(*[np.arange(60)] * 3, indexing="ij"), -1)
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = -15.0
    world = idx * 0.5 - 15.0
    labels = (np.linalg.norm(world, axis=-1) < 10.0).astype(np.int16) * 3
    assert metrics.dice_labels(a, labels, affine, label=3) == pytest.approx(1.0, abs=0.02)
    assert metrics.dice_labels(b, labels, affine) == pytest.approx(2 * va / (va + vb), abs=0.02)
