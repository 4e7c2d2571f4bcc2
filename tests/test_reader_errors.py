"""Bad input files end in an InputError naming the file and the problem (never a traceback, never data dropped)."""
import gzip
import json

import numpy as np
import pytest
from test_fuzz_readers import obj_text, off_text, ply_bytes, stl_ascii, stl_binary
from test_volume_io import _write_dicom_series

from engine.errors import InputError


# ------------------------------------------------------------------------------------------------- DICOM
@pytest.fixture
def series(tmp_path):
    """A 6-slice DICOM series (x000.dcm .. x005.dcm in slice order) and a note that is not DICOM."""
    hu = np.random.default_rng(0).integers(-1000, 1500, (8, 6, 6)).astype(np.float32)
    _write_dicom_series(tmp_path, hu, np.diag([0.7, 0.8, 2.0, 1.0]), shuffle=False)
    (tmp_path / "notes.txt").write_text("scanned on Tuesday")
    return tmp_path, sorted(tmp_path.glob("*.dcm"))


def test_intact_series_reads_all_slices(series):
    from engine.volume import load_ct

    assert load_ct(series[0]).shape == (8, 6, 6)


@pytest.mark.parametrize("which", [0, -1], ids=["first", "last"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_first_or_last_dicom_file_is_named_not_dropped(series, which, damage):
    from engine.volume import load_ct

    folder, files = series
    f = files[which]
    data = f.read_bytes()
    f.write_bytes({"garbage": np.random.default_rng(1).bytes(len(data)), "truncated": data[:600],
                   "empty": b""}[damage])
    with pytest.raises(InputError, match=rf"{f.name} \(") as e:
        load_ct(folder)
    assert str(folder) in str(e.value) and "1 of the 6 files" in str(e.value)


@pytest.mark.parametrize("cut", [300, 700, -10])
def test_damaged_middle_dicom_file_is_named_not_uneven_spacing(series, cut):
    from engine.volume import read_dicom_series

    folder, files = series
    files[2].write_bytes(files[2].read_bytes()[:cut])
    with pytest.raises(InputError, match="x002.dcm") as e:
        read_dicom_series(folder)
    assert "uneven" not in str(e.value)
    reason = "pixel data" if cut < 0 else "lacks"
    assert reason in str(e.value)


def test_dicom_series_with_a_gap_names_the_files_around_it(series):
    from engine.volume import read_dicom_series

    folder, files = series
    files[3].unlink()
    with pytest.raises(InputError, match="uneven slice spacing.*between x002.dcm and x004.dcm"):
        read_dicom_series(folder)


def test_dicom_objects_without_pixels_of_other_kinds_are_ignored(series):
    """A DICOMDIR-like object (no pixels, a non-image SOP class) is not part of the series."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from engine.volume import read_dicom_series

    folder, _ = series
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # basic text structured report
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / "report.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.save_as(str(folder / "report.dcm"), enforce_file_format=True)
    assert pydicom.dcmread(str(folder / "report.dcm")).Modality == "SR"
    assert read_dicom_series(folder).shape == (8, 6, 6)


# ------------------------------------------------------------------------------------------------- NIfTI
def test_nifti_without_spacing_or_affine_is_refused(tmp_path):
    import nibabel as nib

    from engine.volume import load_ct

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), None)
    img.header["pixdim"][1:4] = 0
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    path = tmp_path / "nospacing.nii"
    path.write_bytes(img.header.binaryblock + b"\0" * 4 + np.zeros(64, np.int16).tobytes())
    assert nib.Nifti1Header.from_fileobj(open(path, "rb"), check=False)["pixdim"][1] == 0
    with pytest.raises(InputError, match=r"nospacing.nii: no usable voxel spacing: pixdim\[1:4\] = \[0.0, 0.0, 0.0\] "
                                         "and no sform or qform"):
        load_ct(path)


def test_nifti_with_a_damaged_xform_code_is_refused(tmp_path):
    from engine.volume import load_ct, write_nifti

    path = write_nifti(tmp_path / "ct.nii", np.zeros((4, 4, 4), np.int16), np.diag([0.5, 0.5, 2, 1]))
    data = bytearray(path.read_bytes())
    data[254:256] = np.int16(77).tobytes()  # sform_code
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="ct.nii: damaged NIfTI header: sform_code = 77"):
        load_ct(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_nifti_gz_is_refused(tmp_path, keep):
    from engine.volume import load_ct, write_nifti

    hu = np.random.default_rng(2).integers(-1000, 1500, (32, 32, 16)).astype(np.int16)
    path = write_nifti(tmp_path / "ct.nii.gz", hu, np.eye(4))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(InputError, match=r"ct.nii.gz: .*truncated or corrupt gzip data"):
        load_ct(path)


def test_truncated_and_non_gzip_nifti_are_refused(tmp_path):
    from engine.volume import load_ct, write_nifti

    path = write_nifti(tmp_path / "ct.nii", np.zeros((8, 8, 8), np.int16), np.eye(4))
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(InputError, match="ct.nii: truncated NIfTI file: the header declares 1024 bytes"):
        load_ct(path)
    (tmp_path / "plain.nii.gz").write_bytes(gzip.decompress(gzip.compress(b"x" * 400)))
    with pytest.raises(InputError, match="plain.nii.gz: not a readable NIfTI file"):
        load_ct(tmp_path / "plain.nii.gz")


# ------------------------------------------------------------------------------------------------- cameras
@pytest.fixture
def camera_dict():
    import engine

    return engine.carm(rows=20, cols=30).to_dict()


@pytest.mark.parametrize("content, match", [
    ("[1, 2, 3]", "not a camera description \\(a JSON array"),
    ('"a camera"', "not a camera description \\(a JSON string"),
    ("null", "not a camera description \\(a JSON null"),
    (dict(rows=None), "'rows' must be a positive integer, got null"),
    (dict(rows=[480]), "'rows' must be a positive integer, got \\[480\\]"),
    (dict(cols=True), "'cols' must be a positive integer, got true"),
    (dict(pixel_size="0.5"), "'pixel_size' must be a positive number \\(mm\\), got \"0.5\""),
    (dict(mirrored="false"), "'mirrored' must be true or false"),
    (dict(camera_from_world=[[1, 0], [0, 1]]), "'camera_from_world' must be a 4 x 4 array of numbers"),
    (dict(principal_point=[1, "x"]), "'principal_point' must be a list of 2 numbers"),
    (dict(rows=0), "detector rows must be a positive integer"),
    (dict(version="2"), "'version' must be an integer"),
])
def test_bad_camera_json_is_named(tmp_path, camera_dict, content, match):
    from engine.geometry import Camera

    path = tmp_path / "cam.json"
    path.write_text(content if isinstance(content, str) else json.dumps({**camera_dict, **content}))
    with pytest.raises(InputError, match=f"^{path}: {match}"):
        Camera.from_json(path)
    with pytest.raises(InputError, match=f"^{path}: {match}"):  # the CLI reads a path as text first
        Camera.from_dict(json.loads(path.read_text()), source=str(path))


def test_binary_camera_file_is_named(tmp_path):
    from engine.geometry import Camera

    path = tmp_path / "cam.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(InputError, match=f"^{path}: not a camera JSON file \\(not UTF-8 text: byte 0x89 at offset 0"):
        Camera.from_json(path)


def test_camera_json_text_errors_say_camera_json(camera_dict):
    from engine.geometry import Camera

    assert Camera.from_json(json.dumps(camera_dict)).rows == 20
    with pytest.raises(InputError, match="^camera JSON: 'rows' must be a positive integer"):
        Camera.from_json(json.dumps({**camera_dict, "rows": None}))
    with pytest.raises(InputError, match="^camera JSON: not a camera description \\(a JSON array"):
        Camera.from_json("[]")


# ------------------------------------------------------------------------------------------------- shape models
@pytest.mark.parametrize("content, match", [
    (b"mean,faces\n1,2\n", "not a zip archive: a text file"),
    (b"", "not a zip archive: an empty file"),
    (b"\x93NUMPY\x01\x00", "not a zip archive: a NumPy .npy array"),
])
def test_non_npz_shape_model_is_named(tmp_path, content, match):
    from engine.ssm import ShapeModel

    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"^{path}: not a shape model .npz \\({match}") as e:
        ShapeModel.load(path)
    assert "pickle" not in str(e.value)


def test_shape_model_with_bad_contents_is_named(tmp_path):
    from engine.mesh import icosphere
    from engine.ssm import ShapeModel

    s = icosphere(5.0, 0)
    path = tmp_path / "m.npz"
    good = dict(version=1, mean=s.vertices, faces=s.faces, modes=np.zeros((1, *s.vertices.shape)), std=[1.0])
    for change, match in [(dict(faces=s.faces + 100), "faces must be"), (dict(info="[1]"), "info is not a JSON object"),
                          (dict(info="{"), "info is not JSON"), (dict(mean=s.vertices.astype(str)), "'mean' holds"),
                          (dict(version=[1, 1]), "format version \\[1, 1\\]"), (dict(faces=np.zeros((0, 3), int)),
                                                                            "no faces")]:
        np.savez(path, **{**good, **change})
        with pytest.raises(InputError, match=f"^{path}: .*{match}"):
            ShapeModel.load(path)
    np.savez(path, **good)
    assert ShapeModel.load(path).n_modes == 1


# ------------------------------------------------------------------------------------------------- meshes
def _cube():
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64) * 10
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                  [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    from engine.mesh import make_mesh

    return make_mesh(v, f)


WRITERS = {".obj": obj_text, ".off": off_text, ".ply": ply_bytes, ".stl": stl_binary}


@pytest.mark.parametrize("name, edit, match", [
    ("c.off", lambda t: t.replace("3 0 1 3", "3 0 1 30"), r"face 0 \(line 11\) refers to vertex 30, but the file "
                                                         r"has 8 vertices \(numbered 0..7\)"),
    ("c.obj", lambda t: t.replace("f 1 2 4", "f 1 2 40"), r"face 0 \(line 11\) refers to vertex 40, but the file "
                                                          r"has 8 vertices \(numbered 1..8\)"),
    ("c.obj", lambda t: t.replace("f 1 2 4", "f 1 2 0"), r"face 0 \(line 11\) refers to vertex 0"),
    ("c.obj", lambda t: t.replace("f 1 2 4", "f 1 2 -9"), r"line 11: relative vertex reference -9"),
    ("c.vtk", lambda t: t.replace("3 0 1 3", "3 0 1 9"), r"face 0 refers to vertex 9, but the file has 8 vertices"),
])
def test_out_of_range_face_index_is_named(tmp_path, name, edit, match):
    from engine.mesh import load_mesh
    from engine.mesh.vtk import write_vtk_legacy

    cube = _cube()
    path = tmp_path / name
    if name.endswith(".vtk"):
        write_vtk_legacy(path, cube.vertices, cube.faces)
    else:
        path.write_bytes(WRITERS[path.suffix](cube))
    path.write_text(edit(path.read_text()))
    with pytest.raises(InputError, match=f"^{name}: {match}"):
        load_mesh(path)


def test_out_of_range_face_index_in_binary_ply(tmp_path):
    from engine.mesh import load_mesh, make_mesh

    cube = _cube()
    bad = type(cube)(vertices=cube.vertices, faces=np.where(cube.faces == 7, 12, cube.faces))
    (tmp_path / "c.ply").write_bytes(ply_bytes(bad))
    with pytest.raises(InputError, match=r"^c.ply: face 2 refers to vertex 12, but the file has 8 vertices"):
        load_mesh(tmp_path / "c.ply")
    with pytest.raises(ValueError, match="out of range"):  # arrays: ValueError before merging, not IndexError
        make_mesh(bad.vertices, bad.faces, merge=True)


@pytest.mark.parametrize("fmt, match", [
    (".obj", r"1 vertices have NaN/inf coordinates \(first: vertex 6 \(line 8\)\)"),
    (".off", r"1 vertices have NaN/inf coordinates \(first: vertex 5 \(line 8\)\)"),
    (".ply", r"1 vertices have NaN/inf coordinates \(first: vertex 5\)"),
    (".stl", r"4 vertices have NaN/inf coordinates \(first: triangle 3 corner 2\)"),
    ("ascii.stl", r"4 vertices have NaN/inf coordinates \(first: triangle 3 corner 2 \(line 27\)\)"),
])
def test_nan_vertex_is_named_as_in_the_file(tmp_path, fmt, match):
    """Vertex 5 (0-based) is NaN; numbered as the file numbers it (OBJ from 1; STL: the corners of triangles, vertex 5
    is the third corner of triangle 3 and three more)."""
    from engine.mesh import load_mesh

    cube = _cube()
    v = cube.vertices.copy()
    v[5] = np.nan
    bad = type(cube)(vertices=v, faces=cube.faces)
    path = tmp_path / f"c{fmt}" if fmt.startswith(".") else tmp_path / "c.stl"
    path.write_bytes(stl_ascii(bad) if fmt == "ascii.stl" else WRITERS[fmt](bad))
    with pytest.raises(InputError, match=f"^{path.name}: {match}"):
        load_mesh(path)


PLY_FACE = b"element face 0\nproperty list uchar int vertex_indices\n"


@pytest.mark.parametrize("name, content, match", [
    ("a.stl", b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\n", "the file ends inside a facet"),
    ("a.stl", b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0\n", "line 4: a vertex needs 3 coordinates"),
    ("a.stl", b"\0" * 80 + (5).to_bytes(4, "little") + b"\0" * 100, "announces 5 triangles \\(334 bytes\\)"),
    ("a.obj", b"v 0 0 0\nv 1 0 zero\n", "line 2: bad number in a vertex"),
    ("a.obj", b"v 0 0 0\nvv 1 0 0\n", "line 2: unknown OBJ statement 'vv'"),
    ("a.obj", b"v 0 0 0\n", "no triangles in the file"),
    ("a.off", b"OFF\n4 4 0\n0 0 0\n1 0 0\n", "announces 4 vertices and 4 faces, the file ends"),
    ("a.off", b"PLY\n", "not an OFF file"),
    ("a.ply", b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n", "no 'end_header'"),
    ("a.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
              + PLY_FACE + b"end_header\n0 0 0\n1 0 0\n", "the file ends after 2 of the 3 'vertex' lines"),
    ("a.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              b"property float z\n" + PLY_FACE + b"end_header\n" + b"\0" * 30,
     "the file ends inside the data of element 'vertex'"),
    ("a.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
              b"element face 1\nproperty list uchar float vertex_indices\nend_header\n", "holds floating-point"),
    ("a.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
              b"end_header\n0 0 0\n", "no 'face' element"),
])
def test_bad_mesh_files_name_the_problem(tmp_path, name, content, match):
    from engine.mesh import load_mesh

    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=f"^{name}: .*{match}"):
        load_mesh(tmp_path / name)


# ------------------------------------------------------------------------------------------------- mesh formats
QUAD_CUBE = np.array([[1, 3, 2, 0], [6, 7, 5, 4], [4, 5, 1, 0], [3, 7, 6, 2], [2, 6, 4, 0], [5, 7, 3, 1]])  # outward


@pytest.mark.parametrize("name, text", [
    ("q.obj", "mtllib x.mtl\n" + "".join(f"v {x} {y} {z} 0.5 0.5 0.5\n" for x, y, z in _cube().vertices.tolist())
     + "vn 0 0 1\nvt 0 0\ng cube\nusemtl m\ns off\n"
     + "".join("f " + " ".join(f"{i - 8}/1/1" for i in q) + "\n" for q in QUAD_CUBE.tolist())),
    ("q.off", "COFF\n# a comment\n8 6 12\n" + "".join(f"{x} {y} {z} 255 0 0 255\n" for x, y, z in
                                                        _cube().vertices.tolist())
     + "".join("4 " + " ".join(map(str, q)) + " 0.5 0.5 0.5\n" for q in QUAD_CUBE.tolist())),
    ("q.ply", "ply\nformat ascii 1.0\nelement vertex 8\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nelement face 6\nproperty list uchar int vertex_index\nproperty int flags\n"
              "element edge 1\nproperty int a\nproperty int b\nend_header\n"
     + "".join(f"{x} {y} {z} 7\n" for x, y, z in _cube().vertices.tolist())
     + "".join("4 " + " ".join(map(str, q)) + " 1\n" for q in QUAD_CUBE.tolist()) + "0 1\n"),
])
def test_polygon_files_are_fan_triangulated(tmp_path, name, text):
    from engine.mesh import load_mesh

    (tmp_path / name).write_text(text)
    m = load_mesh(tmp_path / name)
    assert len(m.faces) == 12 and m.volume == pytest.approx(1000.0)


def test_binary_ply_with_mixed_polygons_and_extra_properties(tmp_path):
    from engine.mesh import load_mesh

    v = _cube().vertices
    head = ("ply\nformat binary_big_endian 1.0\nelement vertex 8\nproperty double x\nproperty double y\n"
            "property double z\nproperty float nx\nelement face 7\nproperty uchar flag\n"
            "property list uchar uint vertex_indices\nend_header\n").encode()
    verts = np.zeros(8, np.dtype([("p", ">f8", 3), ("n", ">f4")]))
    verts["p"] = v
    faces = b"".join(np.uint8(1).tobytes() + np.uint8(len(q)).tobytes() + np.asarray(q, ">u4").tobytes()
                     for q in [*QUAD_CUBE[:5].tolist(), [5, 7, 3], [5, 3, 1]])
    (tmp_path / "m.ply").write_bytes(head + verts.tobytes() + faces)
    m = load_mesh(tmp_path / "m.ply")
    assert len(m.faces) == 12 and m.volume == pytest.approx(1000.0)


def test_ascii_stl_with_two_solids_and_binary_stl_starting_with_solid(tmp_path):
    from engine.mesh import icosphere, load_mesh

    a, b = icosphere(5.0, 1), icosphere(3.0, 1, center=(20, 0, 0))
    text = stl_ascii(a) + stl_ascii(b)
    (tmp_path / "two.stl").write_bytes(text)
    assert load_mesh(tmp_path / "two.stl").volume == pytest.approx(a.volume + b.volume)
    data = b"solid but binary".ljust(80) + stl_binary(a)[80:]
    (tmp_path / "bin.stl").write_bytes(data)
    assert load_mesh(tmp_path / "bin.stl").volume == pytest.approx(a.volume, rel=1e-6)
