"""Rigid ICP, non-rigid ICP (Amberg et al. 2007) and correspond() on synthetic surfaces with known answers."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engine.geometry.transforms import rotation_angle, rotation_from_vector
from engine.mesh import Mesh, icosphere, make_mesh
from engine.ssm.correspondence import correspond, nonrigid_register, point_to_surface, rigid_icp


def _blob(subdivisions: int, axes=(15.0, 10.0, 7.0), bumps=(((0.6, 0.6, 0.52), 0.35, 0.28),), remesh_seed=None):
    """A star-shaped surface r(u) u * axes over the unit sphere; ``remesh_seed`` rotates the sphere's vertices
    first, so the same surface is sampled at other places (a different mesh of one shape)."""
    s = icosphere(1.0, subdivisions)
    u = s.vertices
    if remesh_seed is not None:
        u = u @ Rotation.random(random_state=remesh_seed).as_matrix().T
    r = np.ones(len(u))
    for centre, height, width in bumps:
        c = np.asarray(centre) / np.linalg.norm(centre)
        r += height * np.exp(-((u - c) ** 2).sum(1) / width ** 2)
    return make_mesh(u * r[:, None] * np.asarray(axes), s.faces)


def _distances(points, mesh: Mesh):
    """Exact point-to-surface distances by open3d, independent of the module under test."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(points, np.float32))).numpy()


def _outward_agreement(vertices, faces, target: Mesh):
    """Per face: cosine between its normal and the target's normal at the closest point of its centre."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(target.vertices.astype(np.float32)),
                        o3d.core.Tensor(target.faces.astype(np.uint32)))
    t = vertices[faces]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    tn = scene.compute_closest_points(o3d.core.Tensor(t.mean(1).astype(np.float32)))["primitive_normals"].numpy()
    return (n * tn).sum(1)


@pytest.mark.parametrize("degrees,axis", [(0, (0, 0, 1)), (35, (1, 2, 3)), (60, (-2, 1, 0.5)), (180, (0, 1, 0))])
def test_rigid_icp_recovers_similarity_of_an_asymmetric_shape(degrees, axis):
    source = _blob(3)  # points of one mesh ...
    target0 = _blob(4, remesh_seed=1)  # ... registered onto a finer, differently placed mesh of the same surface
    rot = rotation_from_vector(np.deg2rad(degrees) * np.asarray(axis) / np.linalg.norm(axis))
    scale, shift = 1.3, np.array([20.0, -5.0, 40.0])
    target = make_mesh(scale * target0.vertices @ rot.T + shift, target0.faces)
    m, rms = rigid_icp(source.vertices, target, scale=True)
    s = np.cbrt(np.linalg.det(m[:3, :3]))
    err_deg = np.rad2deg(rotation_angle(m[:3, :3] / s @ rot.T))
    assert err_deg < 0.5
    assert np.linalg.norm(m[:3, 3] - shift) < 0.5
    assert abs(s / scale - 1) < 0.005
    assert rms < 0.1


def test_rigid_icp_without_scale_with_init_and_point_targets():
    source = _blob(3)
    rot = Rotation.from_euler("xyz", [20, -40, 50], degrees=True).as_matrix()
    shift = np.array([-3.0, 7.0, 1.0])
    target_points = _blob(4, remesh_seed=2).vertices @ rot.T + shift
    m, rms = rigid_icp(source, target_points)  # a Mesh as source, a point cloud as target
    assert np.allclose(m[:3, :3] @ rot.T, np.eye(3), atol=np.deg2rad(0.5))
    assert np.linalg.norm(m[:3, 3] - shift) < 0.5 and rms < 0.5
    # from a given start only that start is refined: close enough, it converges to the same pose
    start = np.eye(4)
    start[:3, :3] = Rotation.from_euler("xyz", [25, -35, 45], degrees=True).as_matrix()
    start[:3, 3] = shift + 2.0
    m2, _ = rigid_icp(source, target_points, init=start)
    assert np.allclose(m2, m, atol=1e-2)
    with pytest.raises(ValueError, match="4x4"):
        rigid_icp(source, target_points, init=np.eye(3))
    with pytest.raises(ValueError, match="points"):
        rigid_icp(np.zeros((5, 2)), target_points)


ELLIPSOID = dict(axes=(16.0, 11.0, 8.0), bumps=())
BUMPY = dict(axes=(13.0, 12.0, 11.0), bumps=(((1, 1, 1), 0.3, 0.35), ((-1, 0.2, 0.5), 0.25, 0.3),
                                              ((0, -1, -0.3), -0.2, 0.4), ((0.2, 0.1, -1), 0.3, 0.25)))


@pytest.mark.parametrize("shape", [ELLIPSOID, BUMPY], ids=["ellipsoid", "bumpy"])
def test_nonrigid_register_sphere_onto_a_differently_meshed_surface(shape):
    template = icosphere(12.0, 3)  # 642 vertices
    target = _blob(4, remesh_seed=3, **shape)  # 2562 vertices, not in correspondence with the template
    v = nonrigid_register(template, target)
    assert v.shape == template.vertices.shape
    d = _distances(v, target)
    assert d.mean() < 0.1 and d.max() < 1.0  # mm, on a ~30 mm object
    back = _distances(target.vertices, make_mesh(v, template.faces))  # the target is covered, bumps included
    assert back.mean() < 0.1 and back.max() < 1.0
    assert np.all(_outward_agreement(v, template.faces, target) > 0.5)  # no triangle flipped or folded
    assert make_mesh(v, template.faces).volume > 0
    # correspondence: the template's +x pole lands on the target's +x extreme (the same axis point)
    pole = v[np.argmax(template.vertices[:, 0])]
    assert abs(pole[0] - target.vertices[:, 0].max()) < 0.3
    if shape is ELLIPSOID:  # all six poles go to the ellipsoid's axis ends
        for k in range(3):
            for sign in (1, -1):
                end = np.zeros(3)
                end[k] = sign * shape["axes"][k]
                assert np.linalg.norm(v[np.argmax(sign * template.vertices[:, k])] - end) < 0.3


def test_correspond_maps_back_to_each_targets_frame():
    template = _blob(3)  # asymmetric, so that the rigid pre-alignment is unique
    rot = Rotation.from_euler("zyx", [40, 10, -25], degrees=True).as_matrix()
    scale, shift = 1.2, np.array([100.0, -50.0, 30.0])
    base = _blob(4, axes=(17.0, 9.0, 8.0), bumps=(((0.6, 0.6, 0.52), 0.25, 0.3), ((-1, 0, 0), 0.2, 0.3)),
                 remesh_seed=4)
    moved = make_mesh(scale * base.vertices @ rot.T + shift, base.faces)
    out = correspond(template, [base, moved])
    assert len(out) == 2 and all(o.shape == template.vertices.shape for o in out)
    for v, target, size in zip(out, [base, moved], [1.0, scale]):
        d = _distances(v, target)
        assert d.mean() < 0.1 * size and d.max() < 1.0 * size
    # the same template vertex goes to the same point of the shape, in each target's own frame
    assert np.abs(out[1] - (scale * out[0] @ rot.T + shift)).max() < 0.3


def test_correspond_chain_follows_a_gradual_change():
    template = _blob(3)
    steps = [_blob(3, axes=(15.0 + k, 10.0 - 0.5 * k, 7.0), remesh_seed=10 + k) for k in range(1, 4)]
    direct = correspond(template, steps, chain=False)
    chained = correspond(template, steps, chain=True)
    for v, target in zip(chained, steps):
        assert _distances(v, target).mean() < 0.1
    # both routes put each template vertex at about the same place of the last shape
    assert np.median(np.linalg.norm(chained[-1] - direct[-1], axis=1)) < 0.5


def test_point_to_surface_is_exact():
    import open3d as o3d

    box = o3d.geometry.TriangleMesh.create_box(10, 10, 10)
    cube = make_mesh(np.asarray(box.vertices), np.asarray(box.triangles))
    q = np.array([[5, 5, 5], [15, 5, 5], [13, 14, 5], [5, 5, -2]], float)
    assert np.allclose(point_to_surface(q, cube), [5, 5, 5, 2], atol=1e-5)
