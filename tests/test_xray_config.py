"""engine.XrayConfig: one frozen object for the physics of simulate and Simulator; every bad field is named."""
import numpy as np
import pytest

from engine import XrayConfig
from engine.physics import Detector, NoiseModel, ScatterModel, Spectrum
from engine.simulator import mesh_scales


@pytest.mark.parametrize("field,value,error", [
    ("spectrum", "fluoro45", ValueError),
    ("spectrum", 200.0, ValueError),
    ("spectrum", [90.0], TypeError),
    ("mono_kev", -60.0, ValueError),
    ("mono_kev", float("nan"), ValueError),
    ("bins", 0, ValueError),
    ("bins", 8.5, ValueError),
    ("bins", True, ValueError),
    ("detector", "CsI", TypeError),
    ("scatter", 0.5, TypeError),
    ("noise", -10.0, ValueError),
    ("noise", "high", ValueError),
    ("output", "attenuation", ValueError),
    ("mesh_densities", {"titanium": -1.0}, ValueError),
    ("mesh_densities", {"titanium": float("inf")}, ValueError),
    ("mesh_densities", {1: 4.5}, TypeError),
    ("mesh_densities", 4.5, TypeError),
    ("step_mm", 0.0, ValueError),
    ("physics", "torch", ValueError),
])
def test_a_bad_field_is_named_in_the_error(field, value, error):
    with pytest.raises(error, match=rf"XrayConfig\.{field}"):
        XrayConfig(**{field: value})


def test_spectrum_and_mono_kev_exclude_each_other():
    with pytest.raises(ValueError, match=r"XrayConfig\.mono_kev: give either spectrum or mono_kev"):
        XrayConfig(spectrum="fluoro90", mono_kev=60.0)


def test_defaults_and_accepted_values():
    c = XrayConfig()
    assert (c.spectrum, c.mono_kev, c.bins, c.detector, c.scatter, c.noise, c.output, c.mesh_densities, c.step_mm,
            c.physics) == (None, None, 32, None, False, None, "intensity", None, None, "device")
    XrayConfig(spectrum=Spectrum.monochromatic(60.0), detector=Detector(), scatter=ScatterModel(spr=0.5),
               noise=NoiseModel(photons=1e3), output="line_integral", step_mm=0.5, physics="numpy")
    XrayConfig(spectrum=90, bins=np.int64(8))  # a kVp; NumPy integers count as whole numbers
    assert XrayConfig(noise=np.float32(2e4)).noise == 2e4  # a dose is kept as a float


def test_frozen_hashable_and_replace_checks_again():
    c = XrayConfig(spectrum="fluoro90", scatter=True, noise=2e4, mesh_densities={"titanium": 4.5, "bone": 1.9})
    assert c.mesh_densities == (("bone", 1.9), ("titanium", 4.5))  # a dict, held as sorted pairs
    assert dict(c.mesh_densities)["titanium"] == 4.5
    assert c == XrayConfig(spectrum="fluoro90", scatter=True, noise=2e4,
                           mesh_densities=[("titanium", 4.5), ("bone", 1.9)])
    assert hash(c) == hash(c.replace())  # usable as a cache key
    with pytest.raises(AttributeError):
        c.noise = None
    quiet = c.replace(noise=None)
    assert quiet.noise is None and c.noise == 2e4 and quiet.spectrum == "fluoro90"
    with pytest.raises(ValueError, match=r"XrayConfig\.output"):
        c.replace(output="counts")
    with pytest.raises(TypeError):
        XrayConfig("fluoro90")  # keyword-only: fields are named at the call
    assert "XrayConfig(spectrum='fluoro90'" in repr(c)


def test_mesh_scales_take_the_configs_pairs_or_a_dict():
    pairs = XrayConfig(mesh_densities={"titanium": 4.0}).mesh_densities
    assert mesh_scales(["titanium", "bone"], pairs) == mesh_scales(["titanium", "bone"], {"titanium": 4.0})
    assert mesh_scales(["titanium"], pairs) == [0.4]


def test_the_entry_points_take_at_most_six_parameters_besides_their_config():
    """Issue 18's rule: the physics settings live in the config object, not in loose keywords."""
    import inspect

    import engine
    from engine.recon import Objective, reconstruct

    for fn in (engine.simulate, engine.Simulator.__init__, reconstruct, Objective.__init__):
        names = [p for p in inspect.signature(fn).parameters if p not in ("self", "config")]
        assert len(names) <= 6, (fn.__qualname__, names)
        assert "config" in inspect.signature(fn).parameters, fn.__qualname__
