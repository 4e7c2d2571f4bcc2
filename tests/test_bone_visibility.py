"""benchmarks/bone_visibility.py's measure: the ROI-weighted band-passed share of a part of an image."""
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

_spec = importlib.util.spec_from_file_location(
    "bone_visibility", Path(__file__).resolve().parents[1] / "benchmarks" / "bone_visibility.py")
bv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bv)


def test_share_of_a_bone_in_independent_clutter():
    """A bone (a disc with texture) in clutter of known strength: snr = std ratio of the parts, and the NCC of the
    bone with the whole image is snr / sqrt(1 + snr^2) for uncorrelated parts; a bone alone gives NCC 1."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:96, :96]
    disc = ((y - 48) ** 2 + (x - 48) ** 2 < 20 ** 2).astype(float)
    bone = disc * (1.0 + ndimage.gaussian_filter(rng.standard_normal((96, 96)), 1.5) * 4)
    clutter = ndimage.gaussian_filter(rng.standard_normal((96, 96)), 1.5)
    # scale the clutter so that its band-passed ROI std is a known multiple of the bone's
    full0 = bv.analyse((bone + clutter)[None], {"bone": bone[None], "other": clutter[None]}, "bone")["sigma4"]
    for ratio in (0.5, 2.0):
        c = clutter * (full0["bone"][0] / full0["other"][0]) / ratio
        r = bv.analyse((bone + c)[None], {"bone": bone[None], "other": c[None]}, "bone")["sigma4"]
        assert abs(r["snr"][0] - ratio) < 0.15 * ratio, (ratio, r["snr"])
        assert abs(r["ncc"][0] - ratio / np.sqrt(1 + ratio ** 2)) < 0.08, (ratio, r["ncc"])
    alone = bv.analyse(bone[None], {"bone": bone[None]}, "bone")["sigma16"]
    assert abs(alone["ncc"][0] - 1.0) < 1e-9
