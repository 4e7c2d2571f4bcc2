"""Mesh demo: the real LLP26 pelvis and a titanium iliosacral screw, as triangle meshes, X-rayed with gradients.

Everything comes from shipped data and code, no CT and no network: the bone is the mean
pelvis of the LLP26 shape model (26 adults, Zhang et al. 2016; two hip bones and the
sacrum, Loop-subdivided, RAS+ mm, centre of the bone volume at the origin); the screw
is built here: a 7.3 mm screw with a conical tip, a helical thread over its distal
32 mm, a smooth shank and a head, placed from the lateral cortex of the left ilium
across the sacroiliac joint into the S1 body, the path of an iliosacral screw.

``engine.mesh.MeshProjector`` renders the path length (mm) inside the bone and inside
the titanium for an AP view (C-arm 0/0) and a lateral view (LAO 90);
``engine.simulate`` turns them into polychromatic images (90 kVp, CsI detector). The
bone meshes are solid, so cortical bone (ICRU-44) is used at an effective density of
1.3 g/cm^3, the average of a thin cortex around cancellous bone; no soft tissue.

Gradients: the loss is the attenuation -ln(I/I0) of the AP image summed over a box
around the screw head; ``PhysicsChain.vjp`` (image -> mass thickness) and
``MeshProjector.vjp`` (path lengths -> vertices) give d(loss)/d(vertex) for every
vertex of the pelvis and the screw, drawn as the projected vertices coloured by its
magnitude, and, through ``engine.geometry.transforms``, d(loss)/d(screw advance along its axis) and
d(loss)/d(screw shift across the image), each checked against a central finite difference
computed with a float64 projector.  Each pixel samples one ray, so the image is a piecewise
linear function of the vertices with kinks where rays cross facet edges (many near outlines
and a thread's ridges): the derivative is exact for the sampled image, and a difference
quotient agrees with it for steps of about 0.001 mm; over steps of a pixel or more it
averages the slopes of many kinks.  In float32 such a step changes a 50 mm path length by
less than its rounding (~4e-6 mm), which is why the check renders in float64.  The advance
along the axis moves only the head's cap across rays (nearly parallel to the rays in the AP
view): on a coarse detector no ray meets the cap and both numbers are ~0; the shift across the
image moves the screw's walls under every ray through it.

Writes into ``--out`` (default ``out/mesh_xray/``):
  distance_{ap,lat}_{bone,titanium}.png  distance maps (mm inside each material; black 0, white the map's max)
  distance_{ap,lat}.tiff                 the same as float32 mm stacks (bone, titanium)
  xray_{ap,lat}.png                      the polychromatic images as -ln(I/I0) (bone and metal bright)
  mesh_xray.png                          overview of all of these with colour bars (mm, -ln I/I0)
  gradient_ap.png                        the vertex gradient of the box loss over the AP image

Run from the repository root:  python demos/mesh_xray.py [--out DIR] [--size N] [--levels L]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.imageio import save_image  # noqa: E402
from engine.mesh import MeshProjector, make_mesh, signed_volume, vertex_components  # noqa: E402
from engine.geometry.transforms import pose_gradient  # noqa: E402
from engine.phantoms import llp26  # noqa: E402
from engine.physics import PhysicsChain, get_material, preset  # noqa: E402
from engine.simulate import mass_thickness  # noqa: E402

BONE_DENSITY = 1.3  # g/cm^3: solid meshes; a cortical shell around cancellous bone averages to about this
DENSITIES = {"bone": BONE_DENSITY}  # titanium: its nominal 4.506 g/cm^3
SPECTRUM = "fluoro90"
# iliosacral screw, RAS+ mm: the head rests on the lateral cortex of the left ilium (-x), the tip in the S1 body
SCREW_HEAD = np.array([-72.0, -24.0, 33.0])
SCREW_DIRECTION = np.array([1.0, 0.12, -0.08])  # medial, a little anterior and caudal
SCREW_LENGTH = 68.0  # mm, head underside to tip
VIEWS = {"ap": ("AP (0/0)", 0.0), "lat": ("lateral (LAO 90)", 90.0)}
SID, SDD, FIELD_MM = 750.0, 1150.0, 440.0  # C-arm source-isocentre and source-detector distance, detector width
BOX_HALF_MM = 15.0  # the loss box around the screw head: half-width, mm at the isocentre's magnification


def screw_mesh(head, direction, length=SCREW_LENGTH, *, outer=3.65, core=2.65, shank=2.45, pitch=2.5,
               thread=32.0, tip=4.0, head_radius=4.5, head_height=4.0, segments=32, name="screw"):
    """A closed, outward screw mesh (mm): conical tip, helical thread, shank and head.

    A surface of revolution about the axis from the tip (``head + length * direction``)
    to ``head`` (the underside of the head), whose radius depends on the axial position
    s and the angle: a triangular thread profile between ``core`` and ``outer`` that
    advances one ``pitch`` per turn over the distal ``thread`` mm, the smooth ``shank``
    above it, a tapered tip and a cylindrical head of ``head_radius`` x ``head_height``
    with a chamfered top.  Rings of vertices every pitch / 10 resolve the thread.
    """
    axis = np.asarray(direction, np.float64)
    axis = axis / np.linalg.norm(axis)
    tip_point = np.asarray(head, np.float64) + length * axis
    e1 = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    theta = np.arange(segments) * 2 * np.pi / segments
    s = np.arange(pitch / 10, length + 1e-9, pitch / 10)  # axial position from the tip, mm
    phase = (s[:, None] - pitch * theta[None] / (2 * np.pi)) / pitch
    ridge = core + (outer - core) * (1 - np.abs(2 * (phase % 1.0) - 1))
    radius = np.where(s[:, None] <= thread, ridge, shank)
    radius = np.minimum(radius, 0.8 + (outer - 0.8) * s[:, None] / tip)  # conical tip
    top = [(length, head_radius), (length + head_height - 1.0, head_radius),
           (length + head_height, head_radius - 1.0)]  # the head: flat underside, chamfered top
    s = np.concatenate([s, [t[0] for t in top]])
    radius = np.concatenate([radius, [np.full(segments, t[1]) for t in top]])
    # s runs from the tip toward the head, i.e. along -axis in the world
    rings = (tip_point - s[:, None, None] * axis
             + radius[..., None] * (np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2))
    n_rings = len(s)
    verts = np.concatenate([[tip_point], rings.reshape(-1, 3), [tip_point - (length + head_height) * axis]])
    idx = 1 + np.arange(n_rings * segments).reshape(n_rings, segments)
    nxt = np.roll(idx, -1, axis=1)
    a, b, c, d = idx[:-1], nxt[:-1], nxt[1:], idx[1:]
    faces = np.concatenate([np.stack([np.zeros(segments, int), nxt[0], idx[0]], 1),
                            np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3),
                            np.stack([np.full(segments, len(verts) - 1), idx[-1], nxt[-1]], 1)])
    if signed_volume(verts, faces) < 0:  # the winding follows the handedness of (e1, e2, -axis)
        faces = faces[:, ::-1]
    return make_mesh(verts, faces, name=name)


def pelvis_meshes(levels: int):
    """The mean LLP26 pelvis (RAS+ mm), Loop-subdivided ``levels`` times, as three meshes (two hip bones, sacrum)."""
    v, f = llp26.subdivide(llp26.pelvis_to_ras(llp26.pelvis_mean_vertices()), llp26.pelvis_topology(), levels)
    label = vertex_components(f, len(v))
    meshes = []
    for b in np.unique(label):
        keep = label == b
        remap = np.cumsum(keep) - 1
        meshes.append(make_mesh(v[keep], remap[f[keep[f[:, 0]]]], name=f"pelvis body {b}"))
    return meshes


def box_loss(chain, paths, box):
    """Attenuation -ln(I/I0) summed over the pixel box (r0, r1, c0, c1), and d(loss)/d(paths) (g/cm^2)."""
    img, state = chain.forward(paths, return_state=True)
    r0, r1, c0, c1 = box
    weight = np.zeros_like(img)
    weight[r0:r1, c0:c1] = 1.0
    return float((img * weight).sum()), chain.vjp(state, weight)


def pose_checks(meshes, materials, cam, chain, box, sl, directions, d_tau, h=1e-3):
    """{name: (analytic, numeric)}: d(box loss)/d(translation of the screw's vertices ``sl`` along each unit
    direction, mm), from the VJP (``d_tau``) and from a central difference of step ``h`` mm rendered by a
    float64 projector of the same meshes."""
    out = {}
    with MeshProjector(meshes, materials, precision=64) as p64:
        v0 = p64.vertices
        for name, u in directions.items():
            moved = []
            for sign in (1, -1):
                v = v0.copy()
                v[sl] += sign * h * u
                p64.set_vertices(v)
                moved.append(box_loss(chain, mass_thickness(cam, None, p64, DENSITIES)[1][0], box)[0])
            out[name] = (float(d_tau @ u), (moved[0] - moved[1]) / (2 * h))
    return out


def plot_overview(path, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(12.5, 4.2 * len(results)), squeeze=False)
    for row, (key, (title, _)) in zip(axes, VIEWS.items()):
        lengths, xray = results[key]
        panels = [(lengths[0], "bone path length (mm)", "magma"), (lengths[1], "titanium path length (mm)", "magma"),
                  (xray, f"{SPECTRUM}: -ln(I/I0)", "gray")]
        for ax, (img, label, cmap) in zip(row, panels):
            im = ax.imshow(img, cmap=cmap, vmin=0, vmax=max(float(img.max()), 1e-6))
            ax.set_title(f"{title}: {label}", fontsize=9)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_gradient(path, xray, cam, vertices, grad, box, text):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    mag = np.linalg.norm(grad, axis=1)
    on = mag > mag.max() * 1e-4
    uv = cam.project_points(vertices[on])
    order = np.argsort(mag[on])  # strongest on top
    r0, r1, c0, c1 = box
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.6))
    axes[0].imshow(xray, cmap="gray")
    axes[0].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="tab:orange", lw=1.5))
    axes[0].set_title("AP X-ray, -ln(I/I0); loss = its sum over the orange box", fontsize=10)
    pad = max(r1 - r0, c1 - c0) // 2
    axes[1].imshow(xray, cmap="gray", alpha=0.45)
    sc = axes[1].scatter(uv[order, 0], uv[order, 1], c=mag[on][order], s=5, cmap="viridis",
                         norm=LogNorm(vmin=max(mag[on].min(), mag.max() * 1e-4), vmax=mag.max()))
    axes[1].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="tab:orange", lw=1.5))
    axes[1].set_xlim(c0 - pad, c1 + pad)
    axes[1].set_ylim(r1 + pad, r0 - pad)
    axes[1].set_title("vertices (pelvis + screw) projected, coloured by |d loss / d vertex| (1/mm)", fontsize=10)
    fig.colorbar(sc, ax=axes[1], fraction=0.046, pad=0.02)
    for ax in axes:
        ax.axis("off")
    fig.text(0.5, 0.02, text, ha="center", fontsize=9, family="monospace")
    fig.tight_layout(rect=(0, 0.05, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "mesh_xray"), help="output folder (default out/mesh_xray/)")
    ap.add_argument("--size", type=int, default=512, help="detector rows = cols (default 512)")
    ap.add_argument("--levels", type=int, default=2, help="Loop subdivisions of the pelvis (default 2)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings, files = {}, []
    tic = time.perf_counter()

    def lap(name):
        nonlocal tic
        timings[name] = time.perf_counter() - tic
        tic = time.perf_counter()

    pelvis = pelvis_meshes(args.levels)
    screw = screw_mesh(SCREW_HEAD, SCREW_DIRECTION)
    screw_center = screw.vertices.mean(0)
    lap("meshes")
    print(f"pelvis: {len(pelvis)} bodies, {sum(len(m.faces) for m in pelvis)} triangles "
          f"(LLP26 mean, {args.levels} subdivisions); screw: {screw}")
    projector = MeshProjector(pelvis + [screw], ["bone"] * len(pelvis) + ["titanium"])
    lap("projector (upload)")
    print(f"Taichi backend: {engine.backend.current().arch}; materials {projector.materials}")

    cams = {key: engine.carm(primary=primary, secondary=0.0, sid=SID, sdd=SDD, isocenter=(0.0, 0.0, 0.0),
                             rows=args.size, cols=args.size, pixel_size=FIELD_MM / args.size)
            for key, (_, primary) in VIEWS.items()}
    results = {}
    config = engine.XrayConfig(spectrum=SPECTRUM, mesh_densities=DENSITIES, output="line_integral")
    for key, cam in cams.items():
        lengths = projector(cam)[0]  # (2, rows, cols) mm: bone, titanium (view 0 of a batch of one)
        xray = engine.simulate(None, cam, projector, config)[0]
        results[key] = (lengths, xray)
        for m, name in enumerate(projector.materials):
            files += save_image(out / f"distance_{key}_{name}.png", lengths[m], window=(0.0, float(lengths[m].max())))
        files += save_image(out / f"distance_{key}.tiff", lengths)
        files += save_image(out / f"xray_{key}.png", xray, window=(0.0, float(np.percentile(xray, 99.9))))
        lap(f"render + simulate {key}")

    # gradient of the AP attenuation summed over a box around the screw head, w.r.t. every vertex
    cam = cams["ap"]
    axis = SCREW_DIRECTION / np.linalg.norm(SCREW_DIRECTION)
    col, row = np.round(cam.project_points(SCREW_HEAD)).astype(int)
    half = max(2, round(BOX_HALF_MM * SDD / SID / cam.pixel_size))
    box = (row - half, row + half, col - half, col + half)
    chain = PhysicsChain(projector.materials, preset(SPECTRUM), output="line_integral", pixel_size=cam.pixel_size)
    materials, paths = mass_thickness(cam, None, projector, DENSITIES)  # (1, M, rows, cols)
    _, mesh_state = projector.forward(cam)  # the hits of this render, for the VJP
    loss, g_paths = box_loss(chain, paths[0], box)
    rho = np.array([DENSITIES.get(m, get_material(m).density) for m in materials])
    g_lengths = (g_paths * rho[:, None, None] / 10.0)[None]  # g/cm^2 = mm * g/cm^3 / 10; (1, M, rows, cols)
    grad = projector.vjp(mesh_state, g_lengths)  # (V, 3) 1/mm
    lap("gradient (physics VJP + mesh VJP)")
    sl = slice(projector.vertex_offsets[-2], projector.vertex_offsets[-1])  # the screw's vertices
    _, d_tau = pose_gradient(projector.vertices[sl], grad[sl], screw_center)
    across = np.cross(axis, cam.principal_axis)  # in the detector plane, across the screw's image
    across /= np.linalg.norm(across)
    checks = pose_checks(pelvis + [screw], ["bone"] * len(pelvis) + ["titanium"], cam, chain, box, sl,
                         {"advance": axis, "across": across}, d_tau)
    lap("finite-difference checks (float64, 4 renders)")
    text = f"loss = {loss:.1f}; " + "; ".join(
        f"d loss / d(screw {k}) = {a:+.4f} per mm (central difference: {n:+.4f})" for k, (a, n) in checks.items())
    print(text)
    plot_gradient(out / "gradient_ap.png", results["ap"][1], cam, projector.vertices, grad, box, text)
    plot_overview(out / "mesh_xray.png", results)
    files += [out / "gradient_ap.png", out / "mesh_xray.png"]
    lap("figures")

    for key, (lengths, xray) in results.items():
        print(f"{VIEWS[key][0]}: max path length bone {lengths[0].max():.1f} mm, titanium {lengths[1].max():.1f} mm; "
              f"-ln(I/I0) up to {xray.max():.2f}")
    print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()) + f"; total {sum(timings.values()):.1f} s")
    for f in files:
        print(f"wrote {f}")
    return {"files": files, "cameras": cams, "lengths": {k: r[0] for k, r in results.items()},
            "xray": {k: r[1] for k, r in results.items()}, "materials": projector.materials,
            "screw_center": screw_center, "gradient": grad, "pose_checks": checks, "timings": timings}


if __name__ == "__main__":
    main()
