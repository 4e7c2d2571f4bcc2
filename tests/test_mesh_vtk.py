"""VTK meshes: legacy .vtk POLYDATA and XML .vtp PolyData in every storage variant, polygons and strips, errors."""
import warnings

import numpy as np
import pytest

from engine.mesh import icosphere, load_mesh, save_mesh
from engine.mesh.vtk import read_vtk, write_vtk_legacy, write_vtp

LEGACY = [dict(binary=b, version=v) for b in (False, True) for v in ("4.2", "5.1")]
XML = [dict(format="ascii"), dict(format="binary"), dict(format="binary", compress=True),
       dict(format="binary", compress=True, header_type="UInt64", byte_order="BigEndian"),
       dict(format="appended"), dict(format="appended", compress=True, header_type="UInt64"),
       dict(format="appended-base64"), dict(format="appended-base64", compress=True, byte_order="BigEndian")]

# A unit cube of side 10 mm as quads, the way VTK 9 writes legacy files (field data, array metadata, cell data).
QUAD_CUBE_VTK = """# vtk DataFile Version 5.1
vtk output
ASCII
DATASET POLYDATA
FIELD FieldData 1
TimeValue 1 1 double
0

POINTS 8 float
0 0 0 10 0 0 10 10 0
0 10 0 0 0 10 10 0 10
10 10 10 0 10 10
METADATA
INFORMATION 2
NAME L2_NORM_RANGE LOCATION vtkDataArray
DATA 2 0 17.3205
NAME L2_NORM_FINITE_RANGE LOCATION vtkDataArray
DATA 2 0 17.3205

POLYGONS 7 24
OFFSETS vtktypeint64
0 4 8 12 16 20 24
CONNECTIVITY vtktypeint64
0 3 2 1 4 5 6 7 0 1 5 4 2 3 7 6 0 4 7 3 1 2 6 5
CELL_DATA 6
SCALARS side int 1
LOOKUP_TABLE default
0 1 2 3 4 5
"""
QUADS = np.array([[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [0, 4, 7, 3], [1, 2, 6, 5]])
CUBE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]) * 10.0

# Data arrays exactly as VTK 9's XML writer encodes them (zlib, UInt32 header, base64 header and data encoded
# separately): float32 points of a unit square, int64 connectivity [0 1 2 2 3 0] and end offsets [3 6].
VTK_WRITTEN_VTP = """<?xml version="1.0"?>
<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian" header_type="UInt32"
 compressor="vtkZLibDataCompressor">
<PolyData><Piece NumberOfPoints="4" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="2">
<PointData/><CellData/>
<Points><DataArray type="Float32" Name="Points" NumberOfComponents="3" format="binary">
AQAAAACAAAAwAAAAFQAAAA==eAFjYEAGDfYIHoiNzmdgAAA65AL9
<InformationKey name="L2_NORM_RANGE" location="vtkDataArray" length="2"><Value index="0">0</Value></InformationKey>
</DataArray></Points>
<Polys><DataArray type="Int64" Name="connectivity" format="binary">
AQAAAACAAAAwAAAAFQAAAA==eAFjYIAARijNhEYzQ/kwCgAA+AAJ
</DataArray><DataArray type="Int64" Name="offsets" format="binary">
AQAAAACAAAAQAAAADgAAAA==eAFjZoAANigNAABwAAo=
</DataArray></Polys>
</Piece></PolyData></VTKFile>
"""


@pytest.fixture(scope="module")
def sphere():
    return icosphere(15.0, 2, center=(1.5, -2.0, 3.25))


def _same_mesh(mesh, back):
    assert len(back.vertices) == len(mesh.vertices) and len(back.faces) == len(mesh.faces)
    assert back.volume == pytest.approx(mesh.volume, rel=1e-12)


@pytest.mark.parametrize("kw", LEGACY + XML, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_icosphere_round_trip_every_variant(tmp_path, sphere, kw):
    legacy = "binary" in kw
    p = tmp_path / ("s.vtk" if legacy else "s.vtp")
    (write_vtk_legacy if legacy else write_vtp)(p, sphere.vertices, sphere.faces, **kw)
    v, f = read_vtk(p)
    np.testing.assert_allclose(v, sphere.vertices, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(f, sphere.faces)
    _same_mesh(sphere, load_mesh(p))


def test_format_is_told_by_content_and_save_mesh_writes_vtk(tmp_path, sphere):
    for suffix in (".vtk", ".vtp"):
        _same_mesh(sphere, load_mesh(save_mesh(tmp_path / f"s{suffix}", sphere)))
    write_vtp(tmp_path / "xml.vtk", sphere.vertices, sphere.faces, format="binary", compress=True)
    _same_mesh(sphere, load_mesh(tmp_path / "xml.vtk"))


def test_quad_cube_is_fan_triangulated_to_a_closed_mesh(tmp_path):
    (tmp_path / "cube.vtk").write_text(QUAD_CUBE_VTK)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # outward as written: no orientation fix
        cube = load_mesh(tmp_path / "cube.vtk")
    assert cube.faces.shape == (12, 3) and cube.volume == pytest.approx(1000.0)
    for kw in (dict(binary=True), dict(binary=True, version="5.1")):
        write_vtk_legacy(tmp_path / "q.vtk", CUBE, QUADS, **kw)
        assert load_mesh(tmp_path / "q.vtk").volume == pytest.approx(1000.0)
    write_vtp(tmp_path / "q.vtp", CUBE, QUADS, format="appended", compress=True)
    assert load_mesh(tmp_path / "q.vtp").volume == pytest.approx(1000.0)
    hexagons = np.array([[0, 1, 2, 3, 2, 1]])  # fan of a 6-gon: 4 triangles (0,1,2) (0,2,3) (0,3,2) (0,2,1)
    write_vtp(tmp_path / "h.vtp", CUBE, hexagons)
    np.testing.assert_array_equal(read_vtk(tmp_path / "h.vtp")[1], [[0, 1, 2], [0, 2, 3], [0, 3, 2], [0, 2, 1]])


def test_triangle_strips_keep_the_winding_and_drop_joins(tmp_path):
    # one strip around a tetrahedron: triangles (0 1 2) (2 1 3) (2 3 0) (0 3 1); then a join (3 3) to a strip
    # whose degenerate triangles are dropped
    text = ("# vtk DataFile Version 3.0\nstrips\nASCII\nDATASET POLYDATA\nPOINTS 4 double\n"
            "0 0 0\n10 0 0\n0 10 0\n0 0 -10\nTRIANGLE_STRIPS 2 11\n6 0 1 2 3 0 1\n3 3 3 1\n")
    (tmp_path / "t.vtk").write_text(text)
    v, f = read_vtk(tmp_path / "t.vtk")
    np.testing.assert_array_equal(f, [[0, 1, 2], [2, 1, 3], [2, 3, 0], [0, 3, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_mesh(tmp_path / "t.vtk").volume == pytest.approx(1000.0 / 6)


def test_data_encoded_by_vtk_itself(tmp_path):
    (tmp_path / "square.vtp").write_text(VTK_WRITTEN_VTP)
    v, f = read_vtk(tmp_path / "square.vtp")
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(f, [[0, 1, 2], [2, 3, 0]])


@pytest.mark.parametrize("name, content, match", [
    ("a.vtk", "solid cube\nfacet normal 0 0 1\n", "not a VTK file"),
    ("a.vtp", "<html><body/></html>", "not a VTK XML file"),
    ("a.vtp", "<VTKFile type='PolyData'><PolyData><Piece", "not a readable VTK XML"),
    ("a.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET STRUCTURED_POINTS\nDIMENSIONS 2 2 2\n",
     "unsupported VTK dataset type STRUCTURED_POINTS"),
    ("a.vtp", "<VTKFile type='ImageData'><ImageData/></VTKFile>", "unsupported VTK dataset type ImageData"),
    ("a.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET UNSTRUCTURED_GRID\nPOINTS 0 float\n",
     "^a.vtk: not a readable VTK unstructured grid file \\(ReadError: Required section CELLS not found"),
    ("a.vtu", "<VTKFile type='UnstructuredGrid'><UnstructuredGrid/></VTKFile>",
     "^a.vtu: not a readable VTK unstructured grid file \\(ReadError"),
    ("a.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET POLYDATA\nPOLYGONS 1 4\n3 0 1 2\n", "no POINTS"),
    ("a.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET POLYDATA\nPOINTS 2 float\n0 0 0 1 1 1\n"
              "LINES 1 3\n2 0 1\n", "no polygons"),
    ("a.vtk", "# vtk DataFile Version 3.0\nx\nBINARY\nDATASET POLYDATA\nPOINTS 4 float\n\0\0", "file ends"),
    ("a.vtk", "# vtk DataFile Version 3.0\nx\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n0 0 0 1 0 0 0 1 0\n"
              "POLYGONS 1 5\n3 0 1 2\n", "file ends"),
    ("a.vtp", "<VTKFile type='PolyData' compressor='vtkLZ4DataCompressor'><PolyData/></VTKFile>",
     "unsupported compressor"),
])
def test_errors_name_the_problem(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        load_mesh(tmp_path / name)
