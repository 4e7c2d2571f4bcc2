"""The ``engine`` command line, end to end on a small generated CT."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.geometry import Camera
from engine.volume import write_nifti


@pytest.fixture()
def small_ct(tmp_path):
    hu = np.full((40, 36, 30), -1000, np.int16)
    hu[8:32, 6:30, 4:26] = 40
    hu[18:22, 14:20, 8:22] = 1200
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [-30, -27, -30]
    return write_nifti(tmp_path / "ct.nii.gz", hu, aff)


def test_drr_writes_png_npy_tiff_and_camera(small_ct, tmp_path, capsys):
    args = [str(small_ct), "--rows", "32", "--cols", "40", "--pixel-size", "2", "--sid", "300", "--sdd", "500"]
    assert main(["drr", *args, "--out", str(tmp_path / "a.npy"), "--save-camera", str(tmp_path / "c.json")]) == 0
    img = np.load(tmp_path / "a.npy")
    assert img.shape == (32, 40) and img.dtype == np.float32 and img.max() > 1.0
    assert "wrote" in capsys.readouterr().out
    cam = Camera.from_json(tmp_path / "c.json")
    assert (cam.rows, cam.cols, cam.sdd) == (32, 40, 500)
    # the saved camera reproduces the image
    assert main(["drr", str(small_ct), "--camera", str(tmp_path / "c.json"), "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), img)
    assert main(["drr", *args, "--materials", "--out", str(tmp_path / "m.tiff")]) == 0
    import tifffile

    stack = tifffile.imread(tmp_path / "m.tiff")
    assert stack.shape == (3, 32, 40)
    np.testing.assert_allclose(stack.sum(0), img, rtol=1e-5, atol=1e-6)
    assert stack[2].max() > 0.5  # bone
    assert main(["drr", *args, "--out", str(tmp_path / "a.png")]) == 0
    from skimage.io import imread

    png = imread(tmp_path / "a.png")
    assert png.shape == (32, 40) and png.dtype == np.uint8 and png.max() == 255


def test_drr_bad_input_gives_one_line_errors(small_ct, tmp_path, capsys):
    assert main(["drr", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["drr", str(small_ct), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "unsupported output format" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["drr", str(small_ct), "--out", str(tmp_path / "x.png"), "--pixel-size", "-1"])
    assert main(["drr", str(small_ct), "--out", str(tmp_path / "x.png"), "--sid", "900", "--sdd", "800"]) == 2
    assert "sdd must exceed sid" in capsys.readouterr().err


def test_python_dash_m_help():
    out = subprocess.run([sys.executable, "-m", "engine", "drr", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--primary" in out and "LAO" in out and "g/cm^2" in out


def test_drr_physics_options(small_ct, tmp_path):
    base = [str(small_ct), "--rows", "24", "--cols", "24", "--pixel-size", "3", "--sid", "300", "--sdd", "500"]
    assert main(["drr", *base, "--mono", "60", "--line-integral", "--out", str(tmp_path / "m.npy")]) == 0
    mono = np.load(tmp_path / "m.npy")
    dens = tmp_path / "d.npy"
    assert main(["drr", *base, "--materials", "--out", str(dens)]) == 0
    assert mono.max() > 0.5 and mono.min() >= 0
    assert main(["drr", *base, "--preset", "fluoro90", "--scatter", "--noise", "--photons", "1000", "--seed", "3",
                 "--out", str(tmp_path / "n1.npy")]) == 0
    assert main(["drr", *base, "--preset", "fluoro90", "--scatter", "--noise", "--photons", "1000", "--seed", "3",
                 "--out", str(tmp_path / "n2.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "n1.npy"), np.load(tmp_path / "n2.npy"))
    assert main(["drr", *base, "--mono", "60", "--kvp", "90", "--out", str(tmp_path / "x.npy")]) == 2
    assert main(["drr", *base, "--mono", "60", "--materials", "--out", str(tmp_path / "x.npy")]) == 2


def test_ssm_build_and_reconstruct_cli(tmp_path, capsys):
    """engine ssm build --llp26, then engine reconstruct from two rendered views (small, fast)."""
    import engine
    from engine.cli import main
    from engine.mesh import MeshProjector, load_mesh
    from engine.ssm import ShapeModel
    from engine import metrics

    model_path = tmp_path / "pelvis.npz"
    assert main(["ssm", "build", "--llp26", "--out", str(model_path), "--variance", "0.9"]) == 0
    model = ShapeModel.load(model_path)
    assert 5 <= model.n_modes < 25 and model.info["explained_variance"] >= 0.9
    truth = model.subdivided(1).mesh([1.0, -0.5])
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=96, cols=96, pixel_size=5.0) for a in (0, 90)]
    args = []
    for i, cam in enumerate(cams):
        np.save(tmp_path / f"t{i}.npy", MeshProjector(truth, "bone")(cam)[0, 0])
        (tmp_path / f"c{i}.json").write_text(cam.to_json())
        args += ["--camera", str(tmp_path / f"c{i}.json")]
    out = tmp_path / "recon.ply"
    code = main(["reconstruct", str(tmp_path / "t0.npy"), str(tmp_path / "t1.npy"), *args, "--model",
                 str(model_path), "--out", str(out), "--target", "line-integral", "--quiet",
                 "--init-translation", "5", "-8", "6", "--overlay", str(tmp_path / "ov.png"),
                 "--result", str(tmp_path / "r.json")])
    assert code == 0 and (tmp_path / "ov.png").is_file() and (tmp_path / "r.json").is_file()
    assert metrics.assd(load_mesh(out), truth) < 1.0
    capsys.readouterr()
    assert main(["reconstruct", str(tmp_path / "t0.npy"), "--camera", str(tmp_path / "c0.json"), "--camera",
                 str(tmp_path / "c1.json"), "--model", str(model_path), "--out", str(out)]) == 2
    assert "one --camera each" in capsys.readouterr().err
    assert main(["ssm", "build", "--out", str(model_path)]) == 2


def test_ssm_build_from_meshes_not_in_correspondence(tmp_path):
    """Mesh files of different resolutions: the first is registered onto the others, then PCA."""
    from engine.cli import main
    from engine.mesh import icosphere, make_mesh, save_mesh
    from engine.ssm import ShapeModel

    paths = []
    for i, (sub, stretch) in enumerate(((2, 1.0), (3, 1.2), (3, 0.9), (2, 1.1))):
        s = icosphere(15.0, sub)
        p = tmp_path / f"m{i}.ply"
        save_mesh(p, make_mesh(s.vertices * [stretch, 1.0, 1.0 / stretch], s.faces))
        paths.append(str(p))
    out = tmp_path / "m.npz"
    assert main(["ssm", "build", *paths, "--out", str(out), "--variance", "0.99"]) == 0
    model = ShapeModel.load(out)
    assert model.n_vertices == 162 and "correspondence" in model.info  # the template's topology
    assert model.n_modes >= 1


def test_load_image_reads_and_rejects(tmp_path):
    from engine.imageio import load_image, save_image

    img = np.arange(12.0).reshape(3, 4)
    for ext in (".npy", ".tiff"):
        save_image(tmp_path / f"a{ext}", img)
        assert np.allclose(load_image(tmp_path / f"a{ext}"), img)
    np.save(tmp_path / "stack.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="single grey image"):
        load_image(tmp_path / "stack.npy")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable PNG"):
        load_image(tmp_path / "bad.png")
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "none.npy")


def test_reconstruct_cli_from_xray_intensities(tmp_path):
    """engine reconstruct on X-ray intensities takes the bone X-ray loss (shell + core) and its settings."""
    import engine
    from engine.cli import main
    from engine.mesh import load_mesh
    from engine.recon import Objective, ReconConfig
    from engine import metrics
    from engine.ssm import load_pelvis_model

    model = load_pelvis_model()
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=64, cols=64, pixel_size=6.0) for a in (-30, 30)]
    obj = Objective(np.zeros((2, 64, 64)), cams, model.subdivided(1), ReconConfig(loss="xray"))
    truth_params = obj.shape_pose.initial(None, [0.8, -0.4])
    r = obj.render(truth_params)
    core = np.maximum(r[:, 1], 0)
    intensity = np.exp(-0.02 * (2.0 * (r[:, 0] - core) + 0.3 * core) - 1.0)  # bone over a flat background
    args = []
    for i, cam in enumerate(cams):
        np.save(tmp_path / f"x{i}.npy", intensity[i])
        (tmp_path / f"c{i}.json").write_text(cam.to_json())
        args += [str(tmp_path / f"x{i}.npy")]
    out = tmp_path / "recon.ply"
    code = main(["reconstruct", *args, "--camera", str(tmp_path / "c0.json"), "--camera", str(tmp_path / "c1.json"),
                 "--model", str(Path(__file__).resolve().parents[1] / "assets" / "pelvis_ssm.npz"), "--out", str(out),
                 "--quiet", "--modes", "5",
                 "--init-translation", "6", "-4", "5", "--result", str(tmp_path / "r.json")])
    assert code == 0
    truth = model.subdivided(1).mesh(truth_params.shape)
    start = model.subdivided(1).mesh(truth_params.shape * 0, np.array([[1, 0, 0, 6], [0, 1, 0, -4], [0, 0, 1, 5],
                                                                        [0, 0, 0, 1.0]]))
    assert metrics.assd(load_mesh(out), truth) < 0.5 * metrics.assd(start, truth)


def test_register_cli_brings_a_ct_back_to_its_xrays(small_ct, tmp_path, capsys):
    """X-rays simulated at the CT's true pose (two views, -ln(I/I0)), written with their cameras; 'engine
    register' from a start 4 degrees and 5 mm off finds the pose back within 0.3 degrees and 0.5 mm."""
    import json

    import engine
    from engine.volume import Volume, VolumeProjector, load_ct

    ct = load_ct(small_ct)
    proj = VolumeProjector(Volume.from_ct(ct))
    args = []
    cfg = engine.XrayConfig(spectrum="fluoro90", output="line_integral")
    for i, prim in enumerate((0, 90)):
        cam = engine.carm(primary=prim, sid=300, sdd=500, rows=48, cols=48, pixel_size=2.0, isocenter=ct.center)
        np.save(tmp_path / f"x{i}.npy", engine.simulate(proj, cam, config=cfg)[0])
        (tmp_path / f"c{i}.json").write_text(cam.to_json())
        args += ["--image", str(tmp_path / f"x{i}.npy"), "--camera", str(tmp_path / f"c{i}.json")]
    out = tmp_path / "reg.json"
    assert main(["register", str(small_ct), *args, "--start", "3", "-2", "1.5", "4", "-2", "2",
                 "--similarity", "ncc", "--levels", "2", "1", "--out", str(out),
                 "--overlay", str(tmp_path / "o.png")]) == 0
    res = json.loads(out.read_text())
    assert np.linalg.norm(res["pose_rotation_deg"]) < 0.3 and np.linalg.norm(res["pose_translation_mm"]) < 0.5
    assert (tmp_path / "o.png").is_file() and res["losses"][-1] < res["losses"][0]
    assert main(["register", str(small_ct), "--image", args[1], "--out", str(out)]) == 2  # no camera
