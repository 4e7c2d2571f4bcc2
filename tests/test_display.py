"""Display windows (engine.display), the main demo's per-view windows and the legends of overlay pictures."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engine.display import auto_window, body_mask, shared_window
from engine.imageio import window_to_uint8

ROOT = Path(__file__).resolve().parents[1]


def _load_demo(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "demos" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mostly_open_beam(seed=0):
    """A 200 x 200 line-integral image: 80 % open beam (0 +- noise), a body disc of 12..30 g/cm^2."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:200, :200]
    rad = np.hypot(r - 100, c - 100) / 50.0  # the disc covers about 20 % of the image
    img = rng.normal(0.0, 0.02, (200, 200))
    body = rad < 1
    img[body] = 12.0 + 18.0 * np.sqrt(1 - rad[body] ** 2)
    return img, body


# --------------------------------------------------------------------------- auto window
def test_auto_window_spans_the_body_not_the_air():
    img, body = _mostly_open_beam()
    assert body.mean() < 0.25
    lo, hi = auto_window(img)
    want = np.percentile(img[body], [5, 99.9])
    np.testing.assert_allclose((lo, hi), want, rtol=1e-6)
    assert lo > 12 and hi <= 30  # inside the body's values
    # the old window, percentiles of the whole image, started in the air and squeezed the body
    assert np.percentile(img, 5) < 0.1
    grey = window_to_uint8(img)  # the default is the auto window
    g = grey[body]
    assert np.percentile(g, 99) - np.percentile(g, 1) > 200  # the body uses the whole grey scale
    assert np.all(grey[~body] == 0)  # air black
    np.testing.assert_array_equal(body_mask(img), body)


def test_auto_window_without_air_and_for_bright_open_beam():
    rng = np.random.default_rng(1)
    body = rng.uniform(10.0, 30.0, (80, 80))  # no open beam at all: only the thinnest sliver is dropped
    lo, hi = auto_window(body)
    assert 10.5 < lo < 12.5 and 29.9 < hi <= 30.0
    img, inside = _mostly_open_beam()
    intensity = np.exp(-0.2 * img)  # I/I0: the open beam is the brightest
    lo, hi = auto_window(intensity, background="high")
    assert hi < np.exp(-0.2 * 12.0) + 1e-9 and lo >= intensity[inside].min()
    assert auto_window(img, background=None) == tuple(np.percentile(img, [5, 99.9]))
    with pytest.raises(ValueError, match="background"):
        auto_window(img, background="left")


def test_window_edge_cases_and_explicit_window_wins():
    img, _ = _mostly_open_beam()
    np.testing.assert_array_equal(window_to_uint8(img, (0.0, 30.0)),
                                  np.round(np.clip(img / 30.0, 0, 1) * 255).astype(np.uint8))
    assert auto_window(np.full((5, 5), 3.0)) == (3.0, 4.0)
    assert auto_window(np.full((5, 5), np.nan)) == (0.0, 1.0)
    with_nan = img.copy()
    with_nan[:10] = np.nan
    with_nan[10:20] = np.inf
    lo, hi = auto_window(with_nan)
    assert np.isfinite(lo) and np.isfinite(hi) and lo > 12
    assert window_to_uint8(img, percentiles=(0.0, 100.0)).max() == 255


def test_shared_window_pools_the_bodies():
    a, body = _mostly_open_beam(0)
    b = 2.0 * a  # a thicker view
    lo, hi = shared_window([a, b])
    np.testing.assert_allclose((lo, hi), np.percentile(np.r_[a[body], b[body]], [5, 99.9]), rtol=1e-6)
    assert auto_window(a)[1] < hi and auto_window(b)[0] > lo


# --------------------------------------------------------------------------- the main demo
def test_demo_windows_each_view_on_its_own(tmp_path, capsys):
    from skimage.io import imread

    demo = _load_demo("drr_pelvis")
    img, body = _mostly_open_beam()
    views = [img, 1.5 * img, 2.0 * img]
    own = demo.view_windows(views)
    assert own[0] != own[1] != own[2]
    assert len(set(demo.view_windows(views, shared=True))) == 1
    demo.main(["--size", "64", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "each view windowed on its own" in out and out.count("window ") >= 3
    panel = imread(tmp_path / "drr_pelvis.png")
    tiles = [panel[22:, k * 70:k * 70 + 64] for k in range(3)]  # 64 px views, 6 px gaps, 22 px titles
    for t in tiles:  # each view spends the grey scale on itself: its own window reaches white and black
        assert t.max() == 255 and np.percentile(t, 99) - np.percentile(t, 10) > 120
    demo.main(["--size", "64", "--out", str(tmp_path / "shared"), "--shared-window"])
    assert "one shared window" in capsys.readouterr().out
    shared = imread(tmp_path / "shared" / "drr_pelvis.png")
    ap, lateral = shared[22:, :64], shared[22:, 140:204]
    assert lateral.max() == 255 and ap.max() < 200  # one window: the thinner AP view stays grey (143 seen)


# --------------------------------------------------------------------------- legends
def test_overlay_legend_names_every_outline_colour(tmp_path):
    from PIL import Image

    import engine
    from engine.mesh import icosphere
    from engine.recon.overlay import COLOURS, LEGEND_ROWS, legend_strip, outline_colours, save_overlay

    colours = outline_colours(["initial", "result", "other"])
    assert colours["initial"] == COLOURS["initial"] and colours["other"] not in COLOURS.values()
    strip = legend_strip(colours, 420)
    assert strip.shape == (LEGEND_ROWS, 420, 3)
    for rgb in colours.values():
        assert np.all(strip == rgb, axis=-1).sum() >= 16, rgb  # a line of each colour
    grey = (strip[..., 0] == strip[..., 1]) & (strip[..., 1] == strip[..., 2])
    assert (grey & (strip[..., 0] > 128)).sum() > 50  # and white (anti-aliased) text

    cam = engine.carm(rows=48, cols=64, pixel_size=2.0, sid=750, sdd=1150)
    meshes = {"initial": icosphere(20.0, 2), "result": icosphere(25.0, 2, center=(5.0, 0.0, 0.0))}
    p = save_overlay(tmp_path / "ov.png", np.random.default_rng(0).random((2, 48, 64)), [cam, cam], meshes)
    img = np.asarray(Image.open(p).convert("RGB"))
    assert img.shape[1:] == (128, 3) and (img.shape[0] - 48) % LEGEND_ROWS == 0 and img.shape[0] > 48  # may wrap
    legend, views = img[48:], img[:48]
    for name in meshes:
        rgb = COLOURS[name]
        assert np.all(views == rgb, axis=-1).any() and np.all(legend == rgb, axis=-1).sum() >= 16, name


def test_register_demo_overlay_names_its_columns_and_views(tmp_path):
    from PIL import Image

    demo = _load_demo("register_ct")

    class FakeRegistration:
        targets = [np.random.default_rng(0).random((40, 60)), np.random.default_rng(1).random((40, 60))]

        def drrs(self, pose):
            return [t * (1.0 + float(np.sum(pose))) for t in self.targets]

    demo.save_overlay(tmp_path / "o.png", FakeRegistration(), np.zeros(6), np.ones(6), ["AP", "lateral"])
    img = np.asarray(Image.open(tmp_path / "o.png"))
    assert img.shape == (16 + 2 * 40, 3 * 60)
    header = img[:16]
    for k in range(3):  # a title over each column
        assert (header[:, k * 60:(k + 1) * 60] > 128).sum() > 20, demo.OVERLAY_COLUMNS[k]
