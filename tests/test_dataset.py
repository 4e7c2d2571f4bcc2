"""Datasets from a sampling plan: validation before rendering, labels consistent with each image's camera,
byte-identical files across workers, interruption and Ray, and the PyTorch datasets."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from engine.dataset import load_plan, parse_plan, run, sample
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "assets" / "plans" / "quick.yaml"


def _small(tmp_path, **over):
    """A labelled synthetic CT (a sphere and a box of soft tissue in water, a label map, a CSV) and its plan."""
    import nibabel as nib

    n = 40
    idx = np.indices((n, n, n)).astype(float)
    hu = np.full((n, n, n), -1000.0)
    body = ((idx - 19.5) ** 2).sum(0) < 18 ** 2
    hu[body] = 0.0
    sphere = ((idx - np.array([14.0, 20.0, 22.0])[:, None, None, None]) ** 2).sum(0) < 6 ** 2
    box = (idx[0] > 22) & (idx[0] < 30) & (idx[1] > 12) & (idx[1] < 26) & (idx[2] > 10) & (idx[2] < 30)
    hu[sphere] = 1200.0
    hu[box] = 700.0
    labels = np.zeros((n, n, n), np.int16)
    labels[sphere], labels[box] = 1, 2
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = -39.0
    nib.save(nib.Nifti1Image(hu.astype(np.int16), aff), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels, aff), str(tmp_path / "labels.nii.gz"))
    (tmp_path / "labels.csv").write_text("group,structure,id\nbones,ball,1\nbones,block,2\n")
    plan = {"seed": 3, "images_per_ct": 6, "shard_size": 2, "detector": {"rows": 48, "cols": 48, "pixel_size": 3.0},
            "carm": {"primary": {"min": -60, "max": 60}, "secondary": {"min": -20, "max": 20},
                     "sid": {"min": 600, "max": 700}, "sdd": {"min": 1000, "max": 1100}, "isocenter_jitter": 5},
            "physics": {"kvp": {"min": 70, "max": 90}, "bins": 8, "scatter": True, "noise": True,
                        "photons": {"min": 1e4, "max": 3e4}},
            "inputs": [{"ct": "ct.nii.gz", "labels": "labels.nii.gz", "label_names": "labels.csv",
                        "landmarks": "centroids"}],
            "meshes": [{"rod": {"radius": 2.0, "length": 30, "start": [-15, 0, 0], "direction": [1, 0, 0]},
                        "material": "titanium", "pose": {"rotation": 5, "translation": 3}}]}
    plan.update(over)
    return parse_plan(plan, base=tmp_path)


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, key", [
    ({"colour": 1}, "unknown key"),
    ({"carm": {"primary": {"min": 30, "max": -30}}}, "carm.primary: impossible range"),
    ({"carm": {"sid": 900, "sdd": 800}}, "carm.sdd: must exceed carm.sid"),
    ({"inputs": [{"ct": "missing.nii.gz"}]}, r"inputs\[0\].ct: file not found"),
    ({"meshes": [{"rod": {"radius": 1, "length": 5, "start": [0, 0, 0], "direction": [1, 0, 0]},
                  "material": "kryptonite"}]}, r"meshes\[0\].material: unknown material"),
    ({"physics": {"preset": "fluoro75"}}, "physics.preset: unknown preset"),
    ({"detector": {"rows": 0}}, "detector.rows: must be positive"),
])
def test_a_broken_plan_fails_before_rendering_naming_the_problem(tmp_path, change, key):
    _small(tmp_path)  # the files exist
    import re

    with pytest.raises(InputError, match=re.compile(key)):
        _small(tmp_path, **change)


def test_plan_file_and_samples_are_deterministic():
    plan = load_plan(QUICK)
    assert plan.n_images == 16 and plan.n_shards == 4
    a, b = sample(plan, 5), sample(plan, 5)
    assert a == b and a != sample(plan, 6)
    assert -40 <= a.primary <= 40 and 700 <= a.sid <= 800 and 5000 <= a.photons <= 50000


def test_labels_agree_with_the_camera(tmp_path):
    """Centroid landmarks land on the structure they name; a projected mask matches the silhouette of the label's
    marching-cubes surface rendered by the mesh renderer (they differ only in the one-pixel band along the outline;
    IoU > 0.85 for these 12-25 pixel wide structures, measured 0.89-0.98); a structure's line integral is the CT's
    line integral inside it (their sum over structures is at most the total)."""
    from scipy.ndimage import binary_dilation, binary_erosion

    from engine.dataset.scene import CTScene
    from engine.mesh import MeshProjector, from_labels
    from engine.volume import load_ct

    plan = _small(tmp_path)
    scene = CTScene(plan.inputs[0], plan)
    assert scene.names == ["ball", "block"]
    lab = load_ct(tmp_path / "labels.nii.gz")
    surfaces = [from_labels(np.rint(lab.hu).astype(int), k, lab.world_from_index) for k in (1, 2)]
    ious = []
    for i in range(4):
        s = sample(plan, i)
        out = scene.render(s)
        for lm in out["landmarks"]:
            if lm["visible"]:
                k = scene.names.index(lm["structure"])
                assert out["masks"][k, int(round(lm["v"])), int(round(lm["u"]))] == 1, lm
        for k, surf in enumerate(surfaces):
            sil = MeshProjector(surf, "bone")(out["camera"])[0, 0] > 0
            m = out["masks"][k].astype(bool)
            ious.append((m & sil).sum() / (m | sil).sum())
            band = binary_dilation(sil) & ~binary_erosion(sil)
            assert not ((m ^ sil) & ~band).any(), f"mask and silhouette differ away from the outline (image {i})"
        total = scene.proj(out["camera"])[0].sum(axis=0)
        assert (out["structure_line_integrals"].sum(axis=0) <= total + 1e-3).all()
        assert out["structure_line_integrals"][0].max() > 0.5  # the ball is dense: > 0.5 g/cm^2 somewhere
    assert min(ious) > 0.85, ious


def test_phantom_landmarks_land_on_bone():
    """The LLP26 landmarks (ASIS, pubic tubercles, iliac crests...: extreme points of the bone surface, so they
    project onto the outline or inside it) are on the phantom's projected bone mask within one pixel."""
    from engine.dataset.scene import CTScene

    plan = load_plan(QUICK)
    scene = CTScene(plan.inputs[0], plan)
    hits = 0
    for i in range(3):
        out = scene.render(sample(plan, i))
        for lm in out["landmarks"]:
            if lm["visible"]:
                hits += 1
                r, c = int(round(lm["v"])), int(round(lm["u"]))
                assert out["masks"][0, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].any(), lm
    assert hits >= 6


def test_same_bytes_with_1_or_2_workers_and_after_an_interruption(tmp_path, monkeypatch):
    plan = _small(tmp_path)
    one, two, cut = tmp_path / "one", tmp_path / "two", tmp_path / "cut"
    res = run(plan, one, workers=1, progress=False)
    assert res["images"] == 6 and res["rendered"] == 3
    run(plan, two, workers=2, progress=False)
    want = _hashes(one)
    assert want == _hashes(two)
    # an interruption in the middle of the second shard: no complete-looking shard is left half written
    import engine.dataset.write as w

    real = w.write_image
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(w, "write_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(plan, cut, workers=1, progress=False)
    assert sorted(p.name for p in cut.iterdir()) == ["shard_000000"]  # the part folder was removed
    monkeypatch.setattr(w, "write_image", real)
    res = run(plan, cut, workers=1, progress=False)
    assert res["skipped"] == 1 and res["rendered"] == 2
    assert _hashes(cut) == want
    rows = [json.loads(x) for x in (one / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(6))
    meta = json.loads((one / rows[0]["files"]["meta.json"]).read_text())
    assert meta["structures"] == ["ball", "block"] and meta["mesh_materials"] == ["titanium"]


def test_ray_gives_the_same_files(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[ray]')")
    plan = _small(tmp_path)
    run(plan, tmp_path / "local", workers=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run(plan, tmp_path / "ray", ray=True, progress=False)
    finally:
        ray.shutdown()
    assert _hashes(tmp_path / "local") == _hashes(tmp_path / "ray")


def test_torch_datasets_render_and_read_the_same_items(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install -e '.[torch]')")
    from engine.torch import DRRDataset, WrittenDataset

    plan = _small(tmp_path, images_per_ct=2)
    run(plan, tmp_path / "d", progress=False)
    live, disk = DRRDataset(plan), WrittenDataset(tmp_path / "d")
    assert len(live) == len(disk) == 2
    for i in range(2):
        a, b = live[i], disk[i]
        for k in ("image", "masks", "structure_line_integrals", "mesh_lengths", "landmarks", "landmarks_visible"):
            assert torch.equal(a[k], b[k]), k
        assert torch.allclose(a["P"], b["P"])
        assert a["image"].shape == (1, 48, 48) and a["masks"].shape == (2, 48, 48)


def test_one_process_runs_two_plans_with_their_own_scenes(tmp_path):
    """The per-process scene cache is keyed by the plan: a second plan (another CT, no meshes) in the same
    process renders its own CT (a cache keyed by CT index alone handed it the first plan's scene)."""
    a = _small(tmp_path, images_per_ct=2)
    b = load_plan(QUICK)
    b = parse_plan({**b.source, "images_per_ct": 2, "meshes": []}, base=QUICK.parent)
    run(a, tmp_path / "a", progress=False)
    run(b, tmp_path / "b", progress=False)
    meta = json.loads(next((tmp_path / "b").rglob("*_meta.json")).read_text())
    assert meta["structures"] == ["bone"] and meta["mesh_materials"] == []
