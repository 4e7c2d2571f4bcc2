"""Triangle meshes: reading and writing (NumPy parsers, meshio), validation errors, icosphere, surfaces from label
maps."""
import numpy as np
import pytest

from engine.mesh import Mesh, from_labels, icosphere, load_mesh, make_mesh, save_mesh, validate


def _cube():
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64) * 10
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                  [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def test_cube_and_icosphere_volumes_and_orientation():
    v, f = _cube()
    cube = make_mesh(v, f)
    assert cube.volume == pytest.approx(1000.0)
    with pytest.warns(RuntimeWarning, match="inward"):
        flipped = make_mesh(v, f[:, ::-1])
    assert flipped.volume == pytest.approx(1000.0)
    prev = None
    for level in range(1, 5):  # polyhedral volume converges to 4/3 pi r^3 from below
        s = icosphere(20.0, level)
        err = 4 / 3 * np.pi * 20 ** 3 - s.volume
        assert err > 0 and (prev is None or err < prev / 3)
        prev = err
        np.testing.assert_allclose(np.linalg.norm(s.vertices, axis=1), 20.0)


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj", ".off", ".vtk", ".vtp", ".vtu", ".inp", ".mesh", ".meshb"])
def test_round_trip_through_files_merges_stl_vertices(tmp_path, suffix):
    s = icosphere(15.0, 2, center=(1, 2, 3))
    p = save_mesh(tmp_path / f"s{suffix}", s)
    back = load_mesh(p)
    assert len(back.vertices) == len(s.vertices) and len(back.faces) == len(s.faces)
    assert back.volume == pytest.approx(s.volume, rel=1e-5)


def test_validation_errors_name_the_problem(tmp_path):
    v, f = _cube()
    with pytest.raises(ValueError, match="not watertight"):
        validate(v, f[:-1])
    bad = v.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validate(bad, f)
    g = f.copy()
    g[0] = g[0][::-1]  # one face wound the other way
    with pytest.raises(ValueError, match="inconsistent winding"):
        validate(v, g)
    d = np.concatenate([f, [[0, 1, 1]]])
    with pytest.raises(ValueError, match="degenerate"):
        validate(v, d)
    with pytest.raises(ValueError, match="out of range"):
        validate(v, np.where(f == 7, 9, f))
    two = np.concatenate([f, f + 8, [[0, 1, 3]]])  # an extra face on an existing edge
    with pytest.raises(ValueError, match="edge-manifold|winding"):
        validate(np.concatenate([v, v + 20]), two)
    with pytest.raises(ValueError, match="inward"):
        validate(v, f[:, ::-1], fix_orientation=False)
    with pytest.raises(FileNotFoundError):
        load_mesh(tmp_path / "none.stl")
    (tmp_path / "x.stl").write_text("not a mesh")
    with pytest.raises(ValueError, match="x.stl: not an STL file"):
        load_mesh(tmp_path / "x.stl")
    (tmp_path / "x.vtk").write_text("")
    with pytest.raises(ValueError, match="not a VTK file"):
        load_mesh(tmp_path / "x.vtk")
    for name in ("x.3ds", "x.msh"):  # Gmsh: meshio reads it, but a damaged node tag can cost gigabytes (mesh.py)
        (tmp_path / name).write_text("")
        with pytest.raises(ValueError, match="unsupported mesh format"):
            load_mesh(tmp_path / name)


def test_inputs_not_modified_and_transform():
    v, f = _cube()
    v0 = v.copy()
    m = make_mesh(v, f)
    assert np.array_equal(v, v0) and not np.shares_memory(m.vertices, v)
    t = np.eye(4)
    t[:3, 3] = [5, 0, 0]
    assert isinstance(m.transformed(t), Mesh)
    np.testing.assert_allclose(m.transformed(t).vertices, v + [5, 0, 0])


def test_from_labels_sphere_and_affine():
    n = 40
    x, y, z = np.mgrid[:n, :n, :n]
    lab = np.zeros((n, n, n), np.int16)
    lab[(x - 20) ** 2 + (y - 19) ** 2 + (z - 21) ** 2 <= 12 ** 2] = 7
    lab[2:5, 2:5, 2:5] = 7  # a small separate blob: dropped, the largest surface is kept
    aff = np.diag([0.8, 0.8, 1.5, 1.0])
    aff[:3, 3] = [-10, 5, 30]
    m = from_labels(lab, 7, aff)
    true_vol = 4 / 3 * np.pi * 12 ** 3 * 0.8 * 0.8 * 1.5
    assert m.volume == pytest.approx(true_vol, rel=0.03)
    centre = aff[:3, :3] @ [20, 19, 21] + aff[:3, 3]
    np.testing.assert_allclose(m.vertices.mean(0), centre, atol=0.5)
    small = from_labels(lab, 7, aff, decimate_to=400)
    assert len(small.faces) <= 400 and small.volume == pytest.approx(true_vol, rel=0.05)
    with pytest.raises(ValueError, match="absent"):
        from_labels(lab, 3, aff)


# ------------------------------------------------------------------------------------------------- meshio formats
def _cube_cells():
    """The cube of _cube() as meshio cell blocks: 4 quads, the other two sides as 4 triangles, and an edge (a line
    cell, skipped)."""
    v, f = _cube()
    quads = np.array([np.r_[a, b, c, f[2 * i + 1][2]] for i, (a, b, c) in enumerate(f[0:8:2])])
    return v, [("quad", quads), ("triangle", f[8:]), ("line", np.array([[0, 1]]))]


@pytest.mark.parametrize("name, fmt", [("c.vtk", "vtk"), ("c.vtu", "vtu"), ("c.inp", "abaqus"), ("c.mesh", "medit"),
                                       ("c.meshb", "medit")])
def test_meshio_formats_read_surface_cells(tmp_path, name, fmt):
    import warnings

    import meshio

    v, cells = _cube_cells()
    meshio.write(tmp_path / name, meshio.Mesh(v, cells), file_format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # outward as written: no orientation fix
        cube = load_mesh(tmp_path / name)
    assert cube.faces.shape == (12, 3) and cube.volume == pytest.approx(1000.0)
    meshio.write(tmp_path / name, meshio.Mesh(v, cells + [("tetra", np.array([[0, 1, 2, 4]]))]), file_format=fmt)
    with pytest.raises(ValueError, match=f"^{name}: 1 tetra cells: only surface cells .* extract its surface"):
        load_mesh(tmp_path / name)
    meshio.write(tmp_path / name, meshio.Mesh(v, cells[2:]), file_format=fmt)
    with pytest.raises(ValueError, match=f"^{name}: no triangles, quads or polygons"):
        load_mesh(tmp_path / name)


@pytest.mark.parametrize("name, content, match", [
    ("x.inp", "*NODE\n1, 0, 0, 0\n*ELEMENT, TYPE=S3\n1, 1, 2, 9\n", r"not a readable Abaqus file \(KeyError"),
    ("x.mesh", "MeshVersionFormatted 2\nDimension 3\nVertices\n3\n0 0 0 0\n", r"not a readable Medit file "
                                                                                     r"\(ValueError"),
    ("x.mesh", "MeshVersionFormatted 2\nDimension 2\nVertices\n1\n0 0 0\nTriangles\n1\n1 1 1 0\n",
     r"points must be \(n, 3\) coordinates, got an array of shape \(1, 2\)"),
    ("x.meshb", "", r"not a readable Medit binary file"),
    ("x.vtu", "<VTKFile type='UnstructuredGrid' version='0.1'><UnstructuredGrid><Piece NumberOfPoints='3' "
              "NumberOfCells='1'><Points><DataArray type='Float64' NumberOfComponents='3' format='ascii'>0 0 x"
              "</DataArray></Points></Piece></UnstructuredGrid></VTKFile>",
     r"not a readable VTK unstructured grid file \(ValueError: string or file could not be read"),
])
def test_meshio_errors_of_any_type_name_the_file(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=f"^{name}: {match}"):
        load_mesh(tmp_path / name)
