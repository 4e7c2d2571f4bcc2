"""Distance maps of triangle meshes: closed forms, brute-force and open3d references, edges, gradients."""
import numpy as np
import pytest
from phantoms import box_chord, sphere_chord

from engine.geometry import carm
from engine.mesh import icosphere, make_mesh
from engine.mesh.projector import MeshProjector
from fd import fd_check

pytestmark = pytest.mark.kernel  # a GPU kernel's test: CI runs it again with ENGINE_ARCH=vulkan


def brute_force_lengths(vertices, faces, src, targets):
    """Sum over all triangles of sign(d.n) t |d| (Moller-Trumbore, float64), for rays src -> targets (P, 3)."""
    tri = np.asarray(vertices, np.float64)[faces]
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    n = np.cross(e1, e2)
    out = np.zeros(len(targets))
    for k, tgt in enumerate(targets):
        d = tgt - src
        pvec = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, pvec)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        tvec = src - v0
        u = np.einsum("ij,ij->i", tvec, pvec) * inv
        q = np.cross(tvec, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t <= 1)
        out[k] = np.sum(np.sign(n[hit] @ d) * t[hit]) * np.linalg.norm(d)
    return out


def _cube(size=20.0, centre=(0, 0, 0)):
    v = (np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64) - 0.5) * size + centre
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                  [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return make_mesh(v, f)


def test_icosphere_against_chord_and_brute_force():
    cam = carm(primary=25, secondary=-10, sid=300, sdd=500, rows=40, cols=40, pixel_size=2.0)
    src, tgt = cam.rays()
    chord = sphere_chord(src, tgt, 30.0)
    inner = sphere_chord(src, tgt, 27.0) > 0  # rays well inside the outline
    errs = []
    for level in (2, 3, 4):
        s = icosphere(30.0, level)
        img = MeshProjector(s, "bone", precision=64)(cam)[0, 0]
        ref = brute_force_lengths(s.vertices, s.faces, src, tgt.reshape(-1, 3)).reshape(40, 40)
        np.testing.assert_allclose(img, ref, atol=1e-4)  # exact for the mesh itself (output is float32)
        img32 = MeshProjector(s, "bone")(cam)[0, 0]
        np.testing.assert_allclose(img32, ref, atol=5e-3)  # float32 kernel: t ~ 0.6 of a 500 mm ray
        errs.append(np.abs(img - chord)[inner].mean())
    # facets converge to the sphere: the sag, and so the chord error, falls ~4x per subdivision
    assert errs[0] > 3 * errs[1] > 9 * errs[2] and errs[2] < 0.1  # mm


def test_box_exact_and_rays_through_shared_edges_and_vertices():
    cube = _cube(20.0)
    # a detector whose pixel rays pass exactly through the cube's edges, face diagonals and corners:
    # orthographic-like long throw along z, pixel pitch 5 mm with a pixel centre on x = +-10, y = +-10 lines
    from engine.geometry import from_source_detector

    cam = from_source_detector(source=[0, 0, -1e5], detector_center=[0, 0, 100], u_axis=[1, 0, 0],
                               v_axis=[0, 1, 0], rows=9, cols=9, pixel_size=5.0)
    img = MeshProjector(cube, "bone")(cam)[0, 0]
    src, tgt = cam.rays()
    ref = box_chord(src, tgt, np.full(3, -10.0), np.full(3, 10.0))
    # interior rays give 20 mm; rays exactly on the silhouette (x or y = +-10) give whatever the closed-box
    # rule assigns: entry and exit on the same boundary face cancel or add once, never twice
    inside = (np.abs(tgt[..., 0]) < 9.99) & (np.abs(tgt[..., 1]) < 9.99)
    np.testing.assert_allclose(img[inside], ref[inside], rtol=1e-5)
    # rays through the diagonal edges of the triangulated faces (x == y inside the face) are counted once
    diag = inside & (np.abs(tgt[..., 0] - tgt[..., 1]) < 1e-9)
    assert diag.sum() >= 3
    np.testing.assert_allclose(img[diag], 20.0, rtol=1e-5)
    edge = ~inside & (np.abs(tgt[..., 0]) <= 10) & (np.abs(tgt[..., 1]) <= 10)
    assert np.all((np.abs(img[edge]) < 1e-3) | (np.abs(img[edge] - 20.0) < 1e-3))


def test_nested_meshes_and_materials():
    outer, inner = icosphere(30.0, 3), icosphere(15.0, 3)
    cam = carm(sid=300, sdd=500, rows=24, cols=24, pixel_size=3.0)
    mp = MeshProjector([outer, inner], ["bone", "cancellous_bone"])
    img = mp(cam)[0]  # (M, rows, cols) of the one view
    assert mp.materials == ("bone", "cancellous_bone")
    src, tgt = cam.rays()
    flat = tgt.reshape(-1, 3)
    ref_o = brute_force_lengths(outer.vertices, outer.faces, src, flat).reshape(24, 24)
    ref_i = brute_force_lengths(inner.vertices, inner.faces, src, flat).reshape(24, 24)
    np.testing.assert_allclose(img[0], ref_o, atol=2e-3)
    np.testing.assert_allclose(img[1], ref_i, atol=2e-3)
    # the shell's own length is outer - inner: the renderer gives lengths per mesh material, nesting is
    # the caller's choice of materials (cortical = outer minus inner is img[0] - img[1])
    assert np.all(img[0] - img[1] >= -2e-3)


def test_open3d_hit_counts_agree():
    import open3d as o3d

    s = icosphere(25.0, 3, center=(3, -2, 1))
    cam = carm(primary=40, sid=200, sdd=400, rows=20, cols=20, pixel_size=3.0)
    src, tgt = cam.rays()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(s.vertices.astype(np.float32)), o3d.core.Tensor(s.faces.astype(np.uint32)))
    d = tgt.reshape(-1, 3) - src
    rays = np.concatenate([np.broadcast_to(src, d.shape), d], axis=1).astype(np.float32)
    hits = scene.count_intersections(o3d.core.Tensor(rays)).numpy()
    first = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    img = MeshProjector(s, "bone")(cam)[0, 0].ravel()
    assert np.all((hits == 2) == (img > 1e-3))  # every ray that enters leaves: two hits exactly where L > 0
    both = hits == 2
    # entry distance from open3d (t in units of |d|) and the exit implied by L give a chord inside the box
    np.testing.assert_array_less(first[both] * np.linalg.norm(d[both], axis=1), np.linalg.norm(d[both], axis=1))


def test_vertex_gradients_match_central_differences_float64():
    rng = np.random.default_rng(3)
    base = icosphere(20.0, 2)
    verts = base.vertices * (1 + 0.05 * rng.standard_normal((len(base.vertices), 1)))  # a bumpy closed mesh
    mesh = make_mesh(verts, base.faces)
    cam = carm(primary=15, secondary=5, sid=200, sdd=400, rows=16, cols=16, pixel_size=1.5)
    mp = MeshProjector(mesh, "bone", precision=64)
    img = mp(cam)
    src, tgt = cam.rays()
    # weights only on rays well inside the outline: the intersection derivative excludes silhouettes
    inner = sphere_chord(src, tgt, 14.0) > 0
    w = rng.standard_normal(img.shape) * inner[None]

    def loss(v):
        mp.set_vertices(v)
        return float((mp(cam) * w).sum())

    loss(verts)
    _, state = mp.forward(cam)
    g = mp.vjp(state, w)
    assert np.abs(g).max() > 0
    fd_check(loss, g, verts.copy(), rng, n_dirs=6, h=1e-4, rtol=1e-4, unit=True)
    mp.set_vertices(verts)


def test_bad_input():
    s = icosphere(10.0, 1)
    with pytest.raises(ValueError, match="one material per mesh"):
        MeshProjector([s, s], ["bone"])
    mp = MeshProjector(s, "bone")
    with pytest.raises(ValueError, match="NaN"):
        mp.set_vertices(np.full_like(s.vertices, np.nan))
    with pytest.raises(TypeError, match="MeshProjectionState"):  # no state, no gradient: nothing kept from a call
        mp.vjp(None, np.zeros((1, 4, 4)))


def test_pose_gradient_matches_central_differences_float64():
    from engine.geometry.transforms import perturb, pose_gradient

    rng = np.random.default_rng(5)
    mesh = icosphere(18.0, 2)
    local = mesh.vertices * [1.0, 0.7, 1.3]  # an ellipsoid: rotations change its image
    pose = perturb(np.eye(4), [0.2, -0.1, 0.3], [4.0, -3.0, 2.0])
    centre = pose[:3, 3]
    cam = carm(primary=20, secondary=10, sid=200, sdd=400, rows=16, cols=16, pixel_size=1.5)
    mp = MeshProjector(make_mesh(local, mesh.faces), "bone", precision=64)

    def world(p):
        return local @ p[:3, :3].T + p[:3, 3]

    mp.set_vertices(world(pose))
    img, state = mp.forward(cam)
    src, tgt = cam.rays()
    w = rng.standard_normal(img.shape) * (sphere_chord(src - centre, tgt - centre, 10.0) > 0)[None]
    g_delta, g_tau = pose_gradient(world(pose), mp.vjp(state, w), center=centre)
    x = np.zeros(6)
    grad = np.concatenate([g_delta, g_tau])

    def loss(q):
        mp.set_vertices(world(perturb(pose, q[:3], q[3:], center=centre)))
        return float((mp(cam) * w).sum())

    fd_check(loss, grad, x, rng, n_dirs=6, h=1e-5, rtol=1e-4, unit=True)


@pytest.mark.parametrize("precision", [32, 64])
def test_rays_exactly_through_vertices_count_once(precision):
    """Level >= 1 icospheres have vertices on the coordinate axes: the axis rays through the centre enter and
    leave through a vertex shared by 5 or 6 triangles, and the polyhedral chord there is exactly 2R."""
    from engine.geometry import from_source_detector

    s = icosphere(12.0, 3, center=(5.0, -7.0, 3.0))
    mp = MeshProjector(s, "bone", precision=precision)
    c = np.array([5.0, -7.0, 3.0])
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.roll(n, 1) * sign
            v = np.cross(n, u)
            cam = from_source_detector(source=c - 100 * n, detector_center=c + 100 * n, u_axis=u, v_axis=v,
                                       rows=1, cols=1, pixel_size=1.0)
            assert mp(cam)[0, 0, 0, 0] == pytest.approx(24.0, rel=1e-6), (axis, sign)


def test_soft_edges_let_outlines_feel_the_target_and_match_finite_differences():
    """Grow a sphere towards a bigger target: with sharp edges a loss living only outside the current outline
    gives no gradient; with soft edges it does, and it matches central differences of the same soft renderer."""
    base = icosphere(1.0, 3)
    cam = carm(sid=300, sdd=500, rows=40, cols=40, pixel_size=1.5)
    src, tgt = cam.rays()
    outside = sphere_chord(src, tgt, 16.5) == 0  # pixels outside the rendered outline (radius 15 mm)
    ring = outside & (sphere_chord(src, tgt, 19.0) > 0)

    for sigma in (0.0, 2.0):
        mp = MeshProjector(make_mesh(base.vertices * 15.0, base.faces), "bone", precision=64, soft_sigma_px=sigma)
        target = ring[None] * 5.0  # bone the model does not cover yet, just outside its outline

        def loss(radius):
            mp.set_vertices(base.vertices * radius)
            return float((((mp(cam) - target) * ring[None]) ** 2).sum())

        f0 = loss(15.0)
        img, state = mp.forward(cam)
        g_vertices = mp.vjp(state, 2 * (img - target) * ring[None])
        dloss_dradius = float((g_vertices * base.vertices).sum())  # vertices = radius * unit sphere
        h = 1e-4
        fd = (loss(15.0 + h) - loss(15.0 - h)) / (2 * h)
        if sigma == 0:
            assert dloss_dradius == 0.0 and abs(fd) < 1e-6 * f0  # blind: nothing covers the ring yet
        else:
            assert dloss_dradius < 0  # growing the sphere reduces the loss
            assert dloss_dradius == pytest.approx(fd, rel=1e-4)


def test_supersampling_is_the_block_mean_of_sub_pixel_rays_and_its_vjp_matches_finite_differences():
    from engine.geometry import bin_image

    rng = np.random.default_rng(5)
    base = icosphere(1.0, 3)
    verts = base.vertices * 15.0 * (1 + 0.03 * rng.standard_normal((len(base.vertices), 1)))
    cam = carm(primary=10, secondary=-5, sid=300, sdd=500, rows=20, cols=18, pixel_size=2.5)
    assert cam.subdivided(3).binned(3) == cam
    mp = MeshProjector(make_mesh(verts, base.faces), "bone", precision=64, supersample=3)
    fine = MeshProjector(make_mesh(verts, base.faces), "bone", precision=64)(cam.subdivided(3))
    img = mp(cam)
    assert img.shape == (1, 1, 20, 18)
    np.testing.assert_allclose(img, bin_image(fine, 3), atol=1e-12)
    # end to end, outline included: a loss over every pixel, grown and shifted along random vertex directions;
    # sub-pixel rays make the image smoother, but steps must still stay below the distance to the next kink
    w = rng.standard_normal(img.shape)

    def loss(v):
        mp.set_vertices(v)
        return float((mp(cam) * w).sum())

    loss(verts)
    _, state = mp.forward(cam)
    g = mp.vjp(state, w)
    fd_check(loss, g, verts.copy(), rng, n_dirs=4, h=1e-6, rtol=1e-4, unit=True)
    with pytest.raises(ValueError, match="gradient shape"):
        mp.vjp(state, np.ones((1, 60, 54)))
    with pytest.raises(ValueError, match="supersample"):
        MeshProjector(make_mesh(verts, base.faces), "bone", supersample=0)


def test_supersampling_approaches_the_pixel_area_mean_of_the_exact_chord():
    """A sphere's distance map averaged over each pixel's area (the anti-aliased truth): 1 ray per pixel is
    off by whole chords along the outline; 4 x 4 sub-pixel rays cut that error over ten-fold."""
    from engine.geometry import bin_image

    sphere = icosphere(20.0, 6)  # facet error ~0.01 mm, far below the outline errors compared here
    cam = carm(sid=300, sdd=500, rows=24, cols=24, pixel_size=2.5)
    fine = cam.subdivided(16)
    src, tgt = fine.rays()
    truth = bin_image(sphere_chord(src, tgt, 20.0), 16)
    errs = [np.abs(MeshProjector(sphere, "bone", supersample=s)(cam)[0, 0] - truth).mean() for s in (1, 4)]
    assert errs[1] < errs[0] / 10, errs  # measured: 0.126 vs 0.0057 mm


@pytest.mark.parametrize("precision", [32, 64])
@pytest.mark.parametrize("method", ["raster", "bvh"])
def test_every_ray_through_a_fine_closed_mesh_hits_it_an_even_number_of_times(precision, method):
    """Watertightness at scale: on a closed mesh of 20,480 small triangles, a detector of 384 x 384 rays (many
    of them within rounding of an edge or a vertex) has an even number of hits on every ray: no crack (a lost
    hit) and no double count (a hit on both triangles of an edge), and no negative path length.  The edge
    functions are float32 (or float64) with the canonical-order evaluation of engine.mesh.ray_triangle."""
    rng = np.random.default_rng(4)
    s = icosphere(40.0, 5)
    v = s.vertices * (1 + 0.15 * np.sin(3 * s.vertices[:, :1] / 40.0))  # not a sphere: no special symmetry
    mesh = make_mesh(v, s.faces)
    mp = MeshProjector(mesh, "bone", precision=precision, method=method, max_hits=16)
    for prim, sec in ((0, 0), tuple(rng.uniform(-60, 60, 2))):
        cam = carm(primary=prim, secondary=sec, sid=300, sdd=500, rows=384, cols=384, pixel_size=0.4)
        img = mp(cam)[0, 0]
        hits = mp.hit_counts()[0]
        assert (hits > 0).sum() > 40_000  # the mesh covers most of the detector
        odd = np.flatnonzero(hits.astype(np.int64) % 2)
        assert odd.size == 0, f"{odd.size} rays with an odd hit count, e.g. pixel {np.unravel_index(odd[0], hits.shape)}"
        assert img.min() >= -1e-3


def test_two_forwards_then_two_vjps_in_either_order_with_the_vertices_moved_between():
    """forward() returns an explicit state (device copies of that render's vertices, rays and hits): a later
    render, a vertex move, or another VJP does not change what a state's VJP returns."""
    rng = np.random.default_rng(8)
    base = icosphere(20.0, 2)
    v0 = base.vertices * (1 + 0.05 * rng.standard_normal((len(base.vertices), 1)))
    v1 = v0 + rng.normal(0, 0.5, v0.shape)
    cam0 = carm(primary=15, secondary=5, sid=200, sdd=400, rows=16, cols=16, pixel_size=1.5)
    cam1 = carm(primary=-40, secondary=20, sid=200, sdd=400, rows=12, cols=14, pixel_size=2.0)
    w0 = rng.standard_normal((1, 1, 16, 16))
    w1 = rng.standard_normal((1, 1, 12, 14))

    def reference(v, cam, w):
        p = MeshProjector(make_mesh(v, base.faces), "bone", precision=64)
        _, state = p.forward(cam)
        return p.vjp(state, w)

    mp = MeshProjector(make_mesh(v0, base.faces), "bone", precision=64)
    _, s0 = mp.forward(cam0)
    mp.set_vertices(v1)
    _, s1 = mp.forward(cam1)
    g1 = mp.vjp(s1, w1)
    g0 = mp.vjp(s0, w0)
    np.testing.assert_allclose(g0, reference(v0, cam0, w0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g1, reference(v1, cam1, w1), rtol=1e-12, atol=1e-12)
    assert np.abs(g0).max() > 0 and np.abs(g1).max() > 0
    with pytest.raises(ValueError, match="shape"):
        mp.vjp(s0, w1)


def test_device_finishing_equals_scipy_block_mean_then_gaussian_filter():
    """Supersampling and soft edges run on the device (engine.mesh.finish): the image is scipy's zero-padded
    Gaussian (truncate 4) of the block mean of the sub-pixel rays, and render_field holds the same values."""
    from scipy.ndimage import gaussian_filter

    from engine.geometry import bin_image

    base = icosphere(1.0, 3)
    cam = carm(primary=20, sid=300, sdd=500, rows=23, cols=17, pixel_size=2.5)
    sharp = MeshProjector(make_mesh(base.vertices * 15.0, base.faces), "bone", precision=64)([cam.subdivided(2)] * 2)
    mp = MeshProjector(make_mesh(base.vertices * 15.0, base.faces), "bone", precision=64, supersample=2,
                       soft_sigma_px=1.3)
    want = gaussian_filter(bin_image(sharp, 2), sigma=(0, 0, 1.3, 1.3), mode="constant", truncate=4.0)
    img = mp([cam, cam])
    np.testing.assert_allclose(img, want, atol=1e-11)
    field, shape = mp.render_field([cam, cam])
    assert shape == (2, 1, 23, 17)
    np.testing.assert_allclose(field.to_numpy()[:img.size].reshape(shape), want, atol=1e-11)


def test_vertex_gradients_are_deterministic_on_the_cpu_and_agree_with_the_parallel_adjoint():
    """Float atomics add in thread order: the parallel adjoint's last bits vary between calls.  On the CPU the
    default adjoint adds in pixel order on one thread, so the same inputs give the same bits; it agrees with
    the parallel one to float32 rounding.  A GPU backend refuses deterministic=True (one GPU thread)."""
    from engine import backend

    rng = np.random.default_rng(11)
    base = icosphere(20.0, 3)
    mesh = make_mesh(base.vertices * (1 + 0.05 * rng.standard_normal((len(base.vertices), 1))), base.faces)
    cams = [carm(primary=a, sid=200, sdd=400, rows=96, cols=96, pixel_size=0.6) for a in (0, 70)]
    if backend.current().arch != "cpu":
        assert not MeshProjector(mesh, "bone").deterministic
        with pytest.raises(ValueError, match="CPU backend only"):
            MeshProjector(mesh, "bone", deterministic=True)
        return
    det, par = MeshProjector(mesh, "bone"), MeshProjector(mesh, "bone", deterministic=False)
    assert det.deterministic and not par.deterministic
    w = rng.standard_normal((2, 1, 96, 96))
    runs = []
    for _ in range(4):
        _, state = det.forward(cams)
        runs.append(det.vjp(state, w))
    assert all(np.array_equal(runs[0], g) for g in runs[1:])
    _, state = par.forward(cams)
    np.testing.assert_allclose(par.vjp(state, w), runs[0], rtol=0, atol=1e-5 * np.abs(runs[0]).max())
