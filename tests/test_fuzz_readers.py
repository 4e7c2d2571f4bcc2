"""Fuzz the file readers with random truncations and byte changes of valid files (seeded).

Every case must end in a correct read or in an error naming the file (``InputError``, or ``FileNotFoundError``):
never another exception type, a hang or a crash.  A truncated file that still reads must read as the intact file
(nothing silently dropped).  All readers are Python/NumPy (pydicom, nibabel, zipfile, the engine's own mesh
parsers and meshio: no C mesh library is involved), so the cases run in this process; an interval timer turns a hang
into a failure naming the case.
"""
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError

SEED = 20240607
CASE_SECONDS = 5.0


# ------------------------------------------------------------------------------------------- valid files
def xyz(points) -> list:
    """'x y z' lines of points, exactly (repr of float64)."""
    return [" ".join(repr(c) for c in row) for row in np.asarray(points, np.float64).tolist()]


def stl_binary(mesh) -> bytes:
    """Binary STL of a mesh (84-byte header, 50 bytes per triangle)."""
    tri = mesh.vertices[mesh.faces].astype("<f4")
    rec = np.zeros(len(tri), np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    rec["v"] = tri
    return b"binary STL".ljust(80, b" ") + np.uint32(len(tri)).tobytes() + rec.tobytes()


def stl_ascii(mesh) -> bytes:
    out = ["solid test"]
    for t in mesh.vertices[mesh.faces]:
        out += ["  facet normal 0 0 0", "    outer loop"] + [f"      vertex {p}" for p in xyz(t)]
        out += ["    endloop", "  endfacet"]
    return ("\n".join(out + ["endsolid test"]) + "\n").encode()


def obj_text(mesh) -> bytes:
    lines = ["# test mesh", "o sphere"] + [f"v {p}" for p in xyz(mesh.vertices)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    return ("\n".join(lines) + "\n").encode()


def off_text(mesh) -> bytes:
    lines = ["OFF", f"{len(mesh.vertices)} {len(mesh.faces)} 0"] + xyz(mesh.vertices)
    lines += [f"3 {a} {b} {c}" for a, b, c in mesh.faces]
    return ("\n".join(lines) + "\n").encode()


def ply_bytes(mesh, fmt="binary_little_endian") -> bytes:
    head = (f"ply\nformat {fmt} 1.0\ncomment test\nelement vertex {len(mesh.vertices)}\nproperty double x\n"
            f"property double y\nproperty double z\nelement face {len(mesh.faces)}\n"
            "property list uchar int vertex_indices\nend_header\n").encode()
    if fmt == "ascii":
        rows = xyz(mesh.vertices) + [f"3 {a} {b} {c}" for a, b, c in mesh.faces]
        return head + ("\n".join(rows) + "\n").encode()
    e = "<" if fmt == "binary_little_endian" else ">"
    faces = np.zeros(len(mesh.faces), np.dtype([("n", "u1"), ("i", e + "i4", 3)]))
    faces["n"], faces["i"] = 3, mesh.faces
    return head + mesh.vertices.astype(e + "f8").tobytes() + faces.tobytes()


def mesh_files(folder: Path) -> dict:
    """A small closed sphere in every format load_mesh reads: {label: path}."""
    import meshio

    from engine.mesh import icosphere
    from engine.mesh.vtk import write_vtk_legacy, write_vtp

    s = icosphere(10.0, 1, center=(1.0, -2.0, 3.0))
    files = {"stl-binary.stl": stl_binary(s), "stl-ascii.stl": stl_ascii(s), "mesh.obj": obj_text(s),
             "mesh.off": off_text(s), "ply-binary.ply": ply_bytes(s),
             "ply-big-endian.ply": ply_bytes(s, "binary_big_endian"), "ply-ascii.ply": ply_bytes(s, "ascii")}
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    out["legacy-ascii.vtk"] = write_vtk_legacy(folder / "legacy-ascii.vtk", s.vertices, s.faces)
    out["legacy-binary.vtk"] = write_vtk_legacy(folder / "legacy-binary.vtk", s.vertices, s.faces, binary=True,
                                                version="5.1")
    out["xml-ascii.vtp"] = write_vtp(folder / "xml-ascii.vtp", s.vertices, s.faces)
    out["xml-zlib.vtp"] = write_vtp(folder / "xml-zlib.vtp", s.vertices, s.faces, format="binary", compress=True)
    out["xml-appended.vtp"] = write_vtp(folder / "xml-appended.vtp", s.vertices, s.faces, format="appended")
    m = meshio.Mesh(s.vertices, [("triangle", s.faces)])  # the formats load_mesh reads through meshio
    for name, fmt, kw in [("ug-ascii.vtk", "vtk", dict(binary=False)), ("ug-binary.vtk", "vtk42", dict(binary=True)),
                          ("ug-ascii.vtu", "vtu", dict(binary=False)), ("ug-zlib.vtu", "vtu", {}),
                          ("abaqus.inp", "abaqus", {}), ("medit.mesh", "medit", {}), ("medit.meshb", "medit", {})]:
        meshio.write(folder / name, m, file_format=fmt, **kw)
        out[name] = folder / name
    return out


# ------------------------------------------------------------------------------------------- the harness
def mutations(data: bytes, n: int, rng) -> list:
    """``n`` damaged copies of ``data``, (label, bytes): alternately truncated at a random length and with 1 to 4
    bytes changed at random places."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            k = int(rng.integers(0, len(data)))
            out.append((f"truncated to {k} of {len(data)} bytes", data[:k], True))
        else:
            b = bytearray(data)
            at = sorted(rng.choice(len(data), size=int(rng.integers(1, 5)), replace=False).tolist())
            for j in at:
                b[j] ^= int(rng.integers(1, 256))
            out.append((f"bytes {at} changed", bytes(b), False))
    return out


@contextmanager
def deadline(seconds: float, case: str):
    """Raise TimeoutError in the reader when a case runs longer than ``seconds`` (a hang)."""
    def alarm(signum, frame):
        raise TimeoutError(f"{case}: no result after {seconds} s (a hang?)")

    if not hasattr(signal, "setitimer"):  # no interval timer: check afterwards
        t0 = time.perf_counter()
        yield
        assert time.perf_counter() - t0 < seconds, f"{case}: took more than {seconds} s"
        return
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fuzz(read, arg, target: Path, names, same, n: int, seed_key: int, problems: list) -> dict:
    """Run ``n`` damaged versions of ``target`` through ``read(arg)``; count outcomes; append problems.

    ``names``: strings one of which an error message must contain; ``same(result)``: whether a read equals the
    intact file's (required of truncations that still read).
    """
    rng = np.random.default_rng([SEED, seed_key])
    original = target.read_bytes()
    counts = {"read": 0, "error": 0}
    try:
        for label, data, truncated in mutations(original, n, rng):
            case = f"{target.name}: {label}"
            target.write_bytes(data)
            try:
                with deadline(CASE_SECONDS, case):
                    result = read(arg)
            except (InputError, FileNotFoundError) as e:
                counts["error"] += 1
                if not any(s in str(e) for s in names):
                    problems.append(f"{case}: the error does not name the file: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - any other type is the failure being tested for
                problems.append(f"{case}: {type(e).__name__}: {e}")
                continue
            counts["read"] += 1
            if truncated and not same(result):
                problems.append(f"{case}: read without error, but not as the intact file (data dropped)")
    finally:
        target.write_bytes(original)
    return counts


def check(problems: list, counts: dict, n: int):
    assert not problems, f"{len(problems)} of {n} cases failed:\n" + "\n".join(problems[:15])
    assert counts["read"] + counts["error"] == n


# ------------------------------------------------------------------------------------------- the readers
@pytest.fixture(scope="module")
def small_ct():
    """A 14 x 12 x 9 int16 block of the shipped phantom (or a random one), and its affine."""
    from conftest import ASSETS

    from engine.volume import load_ct

    path = ASSETS / "pelvis_phantom.nii.gz"
    if path.is_file():
        ct = load_ct(path)
        c = np.array(ct.shape) // 2
        hu = ct.hu[c[0] - 7:c[0] + 7, c[1] - 6:c[1] + 6, c[2] - 4:c[2] + 5].astype(np.int16)
        return hu, ct.world_from_index
    return np.random.default_rng(0).integers(-1000, 1500, (14, 12, 9)).astype(np.int16), np.diag([0.8, 0.8, 2, 1])


@pytest.mark.parametrize("suffix, n", [(".nii.gz", 70), (".nii", 50)])
def test_fuzz_nifti(tmp_path, small_ct, suffix, n):
    from engine.volume import load_ct, write_nifti

    path = write_nifti(tmp_path / f"ct{suffix}", *small_ct)
    ref = load_ct(path)
    problems = []
    counts = fuzz(load_ct, path, path, [path.name], lambda ct: np.array_equal(ct.hu, ref.hu) and np.array_equal(
        ct.world_from_index, ref.world_from_index), n, len(suffix), problems)
    check(problems, counts, n)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's warnings on the damaged values it reads
def test_fuzz_dicom(tmp_path):
    from test_volume_io import _write_dicom_series

    from engine.volume import load_ct

    hu = np.random.default_rng(3).integers(-1000, 1500, (8, 6, 4)).astype(np.float32)
    _write_dicom_series(tmp_path, hu, np.diag([0.7, 0.8, 2.5, 1.0]), shuffle=False)
    ref = load_ct(tmp_path)
    files = sorted(tmp_path.glob("*.dcm"))
    problems, total = [], {"read": 0, "error": 0}
    for i, f in enumerate(files):  # first, inner and last slices
        c = fuzz(load_ct, tmp_path, f, [f.name, str(tmp_path)], lambda ct: np.array_equal(ct.hu, ref.hu), 25, 10 + i,
                 problems)
        total = {k: total[k] + c[k] for k in total}
    check(problems, total, 25 * len(files))


def test_fuzz_camera_json(tmp_path):
    import engine
    from engine.geometry import Camera

    path = tmp_path / "camera.json"
    cam = engine.carm(primary=15.0, secondary=-5.0, rows=40, cols=30, pixel_size=0.6)
    cam.to_json(path)
    problems = []
    counts = fuzz(Camera.from_json, path, path, [str(path)], lambda c: c == cam, 80, 20, problems)
    check(problems, counts, 80)


MESHES = ["stl-binary.stl", "stl-ascii.stl", "mesh.obj", "mesh.off", "ply-binary.ply", "ply-big-endian.ply",
          "ply-ascii.ply", "legacy-ascii.vtk", "legacy-binary.vtk", "xml-ascii.vtp", "xml-zlib.vtp",
          "xml-appended.vtp", "ug-ascii.vtk", "ug-binary.vtk", "ug-ascii.vtu", "ug-zlib.vtu", "abaqus.inp",
          "medit.mesh", "medit.meshb"]


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    return mesh_files(tmp_path_factory.mktemp("meshes"))


@pytest.mark.filterwarnings("ignore:.*oriented inward:RuntimeWarning")
@pytest.mark.parametrize("label", MESHES)
def test_fuzz_mesh(meshes, label):
    from engine.mesh import load_mesh

    path = meshes[label]
    ref = load_mesh(path)
    problems = []
    counts = fuzz(load_mesh, path, path, [path.name], lambda m: np.array_equal(m.vertices, ref.vertices)
                  and np.array_equal(m.faces, ref.faces), 30, 30 + MESHES.index(label), problems)
    check(problems, counts, 30)


def _same_model(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("mean", "faces", "modes", "std")) \
        and a.info == b.info


@pytest.mark.parametrize("which", ["shipped", "small"])
def test_fuzz_shape_model(tmp_path, which):
    from conftest import ASSETS

    from engine.mesh import icosphere
    from engine.ssm import ShapeModel

    path = tmp_path / "model.npz"
    if which == "shipped":
        if not (ASSETS / "pelvis_ssm.npz").is_file():
            pytest.skip("assets/pelvis_ssm.npz not generated")
        path.write_bytes((ASSETS / "pelvis_ssm.npz").read_bytes())
    else:
        s = icosphere(5.0, 0)
        modes = np.random.default_rng(1).normal(size=(2, *s.vertices.shape))
        ShapeModel(s.vertices, s.faces, modes, np.array([2.0, 1.0]), {"name": "tiny"}).save(path)
    ref = ShapeModel.load(path)
    problems = []
    counts = fuzz(ShapeModel.load, path, path, [str(path)], lambda m: _same_model(m, ref), 40,
                  40 + (which == "small"), problems)
    check(problems, counts, 40)
