"""Reliability of the command line and the writers: atomic outputs, outputs checked before the work, Ctrl-C,
resource checks, one error boundary (exit 2 with a one-line message naming the problem; 1 with a report hint
for a bug; 130 when interrupted), --version, Taichi's banner off stdout."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import cli
from engine.errors import InputError
from engine.imageio import save_image
from engine.outputs import atomic_output, check_output, save_or_rescue

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = str(ROOT / "assets" / "pelvis_phantom.nii.gz")
ENGINE = [sys.executable, "-m", "engine"]


def _no_parts(folder: Path):
    return [p.name for p in folder.iterdir() if ".part." in p.name]


@pytest.mark.parametrize("suffix", [".tiff", ".npy", ".png"])
def test_an_interrupted_write_leaves_nothing_at_the_target(tmp_path, monkeypatch, suffix):
    """Ctrl-C (KeyboardInterrupt) in the middle of writing: no file at the target path, no temporary left."""
    import tifffile
    from PIL import Image

    def half_then_interrupt(path, *a, **k):
        Path(path).write_bytes(b"II*\x00half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", half_then_interrupt)
    monkeypatch.setattr(np, "save", lambda f, *a, **k: (f.write(b"\x93NUMPY half"), half_then_interrupt(f.name)))
    monkeypatch.setattr(Image.Image, "save", lambda self, path, *a, **k: half_then_interrupt(path))
    target = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        save_image(target, np.ones((4, 5)))
    assert not target.exists() and _no_parts(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "cam.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and _no_parts(tmp_path) == []


def test_a_long_result_is_rescued_when_its_path_fails(tmp_path, monkeypatch):
    target = tmp_path / "mesh.ply"
    calls = []

    def write(p):
        calls.append(Path(p))
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        Path(p).write_text("the result")

    with pytest.raises(InputError, match="saved to") as e:
        save_or_rescue(target, write, what="reconstructed mesh")
    rescued = Path(str(e.value).rsplit("saved to ", 1)[1])
    try:
        assert rescued.read_text() == "the result" and str(target) in str(e.value)
    finally:
        rescued.unlink()


def test_check_output_names_the_option(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="--out .*is a folder"):
        check_output(tmp_path / "d")
    with pytest.raises(InputError, match="--result .*unsupported file type"):
        check_output(tmp_path / "r.xyz", suffixes=(".json",), option="--result")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create its folder"):
        check_output(blocker / "sub" / "x.png")
    assert check_output(tmp_path / "new" / "x.png") == tmp_path / "new" / "x.png"


def _main(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_bad_outputs_fail_before_the_work(tmp_path, capsys, monkeypatch):
    """A bad --out / --save-camera / --overlay / --result fails at once: the slow part never starts."""
    import engine.recon
    import engine.volume

    def never(*a, **k):
        raise AssertionError("the slow part ran before the outputs were checked")

    monkeypatch.setattr(engine.volume, "load_ct", never)
    monkeypatch.setattr(engine.recon, "reconstruct", never)
    cam = tmp_path / "c.json"
    cam.write_text(engine.carm(rows=8, cols=8, pixel_size=1.0).to_json())
    img = tmp_path / "t.npy"
    np.save(img, np.ones((8, 8)))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cases = [
        (["drr", PHANTOM, "--out", str(tmp_path / "x.bmp")], "unsupported output format"),
        (["drr", PHANTOM, "--out", str(tmp_path / "x.png"), "--save-camera", str(blocker / "d" / "c.json")],
         "--save-camera"),
        (["reconstruct", str(img), "--camera", str(cam), "--model", str(ROOT / "assets" / "pelvis_ssm.npz"),
          "--out", str(tmp_path / "r.xyz")], "--out .*unsupported file type"),
        (["reconstruct", str(img), "--camera", str(cam), "--model", str(ROOT / "assets" / "pelvis_ssm.npz"),
          "--out", str(blocker / "missing" / "r.ply")], "--out .*cannot create its folder"),
        (["reconstruct", str(img), "--camera", str(cam), "--model", str(ROOT / "assets" / "pelvis_ssm.npz"),
          "--out", str(tmp_path / "r.ply"), "--result", str(tmp_path / "r.txt")], "--result"),
        (["register", PHANTOM, "--image", str(img), "--camera", str(cam), "--out", str(tmp_path / "r.txt")],
         "--out .*unsupported file type"),
    ]
    for argv, pattern in cases:
        rc, out, err = _main(argv, capsys)
        assert rc == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("engine: error:"), err
        import re

        assert re.search(pattern, lines[0]), (pattern, lines[0])


@pytest.mark.parametrize("argv, pattern", [
    (["--window", "10", "1"], "LOW must be below HIGH"),
    (["--primary", "nan"], "--primary: must be a finite number"),
    (["--step", "1e-6"], "ray samples .* coarser --step"),
    (["--rows", "100000", "--cols", "100000"], "100000 x 100000 detector needs about .* memory"),
    (["--kvp", "90", "--mono", "60"], "choose one of"),
    (["--bins", "0"], "--bins: must be a positive number"),
])
def test_bad_drr_options_exit_2_with_one_line_naming_the_problem(tmp_path, capsys, argv, pattern):
    import re

    try:
        rc = cli.main(["drr", PHANTOM, "--out", str(tmp_path / "x.png")] + argv)
    except SystemExit as e:  # argparse's own checks exit 2 with "engine drr: error: ..."
        rc = e.code
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert rc == 2 and re.search(pattern, line), line
    assert not (tmp_path / "x.png").exists()


def test_bad_input_files_exit_2(tmp_path, capsys):
    text = tmp_path / "ct.nii.gz"
    text.write_text("not a CT")
    binary_cam = tmp_path / "cam.json"
    binary_cam.write_bytes(bytes(range(256)))
    for argv, pattern in [
        (["drr", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "x.png")], "missing.nii.gz"),
        (["drr", str(text), "--out", str(tmp_path / "x.png")], "ct.nii.gz"),
        (["drr", PHANTOM, "--out", str(tmp_path / "x.png"), "--camera", str(binary_cam)], "cam.json"),
    ]:
        rc, out, err = _main(argv, capsys)
        line = err.strip().splitlines()[-1]
        assert rc == 2 and line.startswith("engine: error:") and pattern in line, (argv, err)


def test_arch_that_cannot_start_names_the_flag(tmp_path):
    """--arch cuda on a machine without CUDA: exit 2, the message names --arch and says why (a subprocess: the
    test process has Taichi on the CPU already)."""
    r = subprocess.run(ENGINE + ["drr", PHANTOM, "--out", str(tmp_path / "x.png"), "--arch", "cuda", "--rows", "8",
                                 "--cols", "8"], capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        pytest.skip("CUDA is available here")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("engine: error: --arch cuda: "), r.stderr
    assert "Traceback" not in r.stderr


def test_an_unexpected_error_is_short_and_debug_shows_the_traceback(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_drr", boom)
    rc, out, err = _main(["drr", PHANTOM, "--out", "x.png"], capsys)
    assert rc == 1 and "internal error: RuntimeError: a bug" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["--debug", "drr", PHANTOM, "--out", "x.png"])


def test_version_and_stdout_holds_only_what_was_written(tmp_path):
    r = subprocess.run(ENGINE + ["--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"engine {engine.__version__}"
    out = tmp_path / "ap.png"
    r = subprocess.run(ENGINE + ["drr", PHANTOM, "--out", str(out), "--rows", "32", "--cols", "32",
                                 "--pixel-size", "12", "--save-camera", str(tmp_path / "c.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"wrote {out}", f"wrote {tmp_path / 'c.json'}"]  # no Taichi banner
    assert json.loads((tmp_path / "c.json").read_text())["rows"] == 32


def test_ctrl_c_stops_a_long_render_within_a_second(tmp_path):
    """A 4096 x 4096 render at 0.3 mm steps (about a minute here) shows a progress bar; SIGINT after the bar
    appears ends it with exit 130 and one line, within a second (launches of ~0.5 s each), no file left."""
    out = tmp_path / "big.tiff"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(ENGINE + ["drr", PHANTOM, "--out", str(out), "--rows", "4096", "--cols", "4096",
                                   "--pixel-size", "0.1", "--step", "0.3", "--arch", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.set_blocking(p.stderr.fileno(), False)
    err = b""
    deadline = time.monotonic() + 240
    while b"rendering [" not in err:
        assert p.poll() is None, err.decode()
        assert time.monotonic() < deadline, "no progress bar within 4 minutes"
        time.sleep(0.1)
        err += p.stderr.read() or b""
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    took = time.monotonic() - t
    os.set_blocking(p.stderr.fileno(), True)
    err += p.stderr.read()
    assert p.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1] == "engine: interrupted"
    assert took < 1.5, f"stopped {took:.2f} s after Ctrl-C"
    assert not out.exists() and _no_parts(tmp_path) == []
