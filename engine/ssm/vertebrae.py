"""A real vertebra population: T1..L3 from the label map of the chest CT, put in correspondence.

The chest CT (not shipped: pass its label map, or set ``ENGINE_DATA`` to the folder that
holds ``chest_ct/``, or ``ENGINE_CHEST_CT`` to that folder itself; see :mod:`engine.assets`)
comes with an automatic segmentation whose ``labels.csv`` names the vertebrae ``vertebrae_T1`` ... ``vertebrae_L3``.
:func:`vertebra_meshes` turns each into a closed surface (marching cubes of
the mask's lightly smoothed signed distance, on an isotropic grid); those meshes
are NOT in correspondence.  :func:`vertebra_population` registers one of them
(the template) onto the others with :func:`engine.ssm.correspondence.correspond`,
walking along the spine, which gives every vertebra the template's topology,
ready for Procrustes alignment and PCA.

The scan ends inside L2 and L3 (their labels touch its first slice): they are
cut, and by default left out (``complete_only``) with a warning.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..assets import data_path
from ..mesh import Mesh, make_mesh, merge_vertices, signed_volume, vertex_components
from .correspondence import correspond

VERTEBRAE = tuple(f"T{i}" for i in range(1, 13)) + ("L1", "L2", "L3")


def chest_ct_dir() -> Path:
    """The chest CT's folder: ``$ENGINE_CHEST_CT``, else ``$ENGINE_DATA/chest_ct`` (FileNotFoundError naming both
    when neither is set or the folder is missing)."""
    return data_path("chest_ct", env="ENGINE_CHEST_CT")


def label_ids(csv: Path) -> dict:
    """{structure name: label value} from the chest CT's ``labels.csv`` (columns ..., name, id)."""
    ids = {}
    for line in csv.read_text().splitlines()[1:]:
        parts = line.split(",")
        if len(parts) >= 4:
            ids[parts[2].strip()] = int(parts[3])
    return ids


def vertebra_meshes(labels_path=None, names=VERTEBRAE, *, spacing: float = 2.0, smooth: float = 1.0,
                    decimate_to: int | None = None, complete_only: bool = True) -> dict:
    """Closed surfaces of labelled vertebrae, ``{name: Mesh}`` (world mm, RAS+), NOT in correspondence.

    Marching cubes of the zero level of each vertebra's signed distance (mm,
    zero halfway between inside and outside voxels), blurred by a Gaussian of
    ``smooth`` mm (rounds the terraces of the 2.5 mm slices) and sampled on an
    isotropic grid of ``spacing`` mm (evenly sized, well shaped triangles, good
    for a registration template, instead of the CT's 0.7 x 0.7 x 2.5 mm voxels);
    the largest connected surface; optional quadric decimation.  Smoothing the
    field rather than the mesh: Taubin smoothing of the mesh made thin processes
    self-intersect; marching cubes never does.  With the defaults the chest CT's
    T1..L1 have 4400-8000 triangles, genus 1 (the ring round the spinal canal),
    and volumes 4-7% below their voxel counts (the surface lies about 0.2 mm
    inside on average: corners cut by the 2 mm grid and the blur).

    Parameters
    ----------
    labels_path : path of the label map (NIfTI), default ``chest_ct_dir() / "labels.nii.gz"``;
        ``labels.csv`` (columns group, original_idx, structure, id) must lie beside it.
    names : vertebrae, e.g. ``("T8", "L1")`` (the label table's ``vertebrae_<name>``).
    spacing : mm between the samples that marching cubes sees (about the edge length).
    smooth : standard deviation (mm) of the Gaussian blur of the mask (0 for none).
    decimate_to : about this many triangles per mesh (quadric decimation), or None to keep all.
    complete_only : leave out, with a warning, vertebrae whose label touches the border of the scan.
    """
    import nibabel as nib
    from scipy import ndimage

    path = Path(labels_path) if labels_path is not None else chest_ct_dir() / "labels.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"vertebra label map not found: {path} (the chest CT's labels.nii.gz; "
                                "set ENGINE_DATA to the folder that holds chest_ct/, or pass labels_path)")
    csv = path.parent / "labels.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"label table not found: {csv} (labels.csv beside the label map)")
    ids = label_ids(csv)
    img = nib.load(str(path))
    labels = np.asarray(img.dataobj).astype(np.int32)
    boxes = ndimage.find_objects(labels)
    out, cut = {}, []
    for name in names:
        key = f"vertebrae_{name}"
        if key not in ids:
            raise KeyError(f"{key} is not in {csv}")
        lab = ids[key]
        if lab > len(boxes) or boxes[lab - 1] is None:
            raise ValueError(f"{key} (label {lab}) is absent from {path}")
        lo = np.array([s.start for s in boxes[lab - 1]])
        hi = np.array([s.stop for s in boxes[lab - 1]])
        if complete_only and (np.any(lo == 0) or np.any(hi == labels.shape)):
            cut.append(name)
            continue
        lo, hi = np.maximum(lo - 2, 0), hi + 2
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
        mask = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == lab
        out[name] = _finish(_isosurface(mask, affine, spacing, smooth), decimate_to, name)
    if cut:
        warnings.warn(f"left out vertebrae cut by the border of the scan: {', '.join(cut)}", RuntimeWarning,
                      stacklevel=2)
    return out


def _isosurface(mask, affine, spacing: float, sigma: float):
    """Vertices (world mm) and faces of the largest zero surface of the mask's (blurred) signed distance."""
    from scipy import ndimage
    from skimage.measure import marching_cubes

    vox = np.linalg.norm(affine[:3, :3], axis=0)  # voxel size, mm
    step = spacing / vox  # index units of the mask per sample
    shape = np.floor((np.array(mask.shape) - 1) / step).astype(int) + 1
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, step)], indexing="ij")
    # signed distance (mm, positive outside), zero halfway between inside and outside voxels
    field = (ndimage.distance_transform_edt(~mask, sampling=vox) - ndimage.distance_transform_edt(mask, sampling=vox))
    if sigma > 0:  # rounds the terraces of thick slices; flat parts of the zero level stay in place
        field = ndimage.gaussian_filter(field, sigma / vox, mode="nearest")
    field = np.pad(ndimage.map_coordinates(field, grid, order=1), 1, constant_values=field.max())
    # samples at (or next to) the level put vertices on (next to) a grid corner, making (near) zero-area
    # triangles: keep every sample at least 2% of a step away from the level
    near = np.abs(field) < 0.02 * spacing
    field[near] = np.where(field[near] < 0, -0.02, 0.02) * spacing
    verts, faces, _, _ = marching_cubes(field, level=0.0)
    verts, faces = merge_vertices((verts - 1.0) * step, faces)
    comp = vertex_components(faces, len(verts))[faces[:, 0]]
    faces = faces[comp == np.bincount(comp).argmax()]
    used, faces = np.unique(faces, return_inverse=True)
    return verts[used] @ affine[:3, :3].T + affine[:3, 3], faces.reshape(-1, 3)


def _finish(surface, decimate_to: int | None, name: str) -> Mesh:
    """Optional quadric decimation, outward orientation, validation."""
    v, f = surface
    if decimate_to is not None and len(f) > decimate_to:
        import open3d as o3d

        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
        m = m.simplify_quadric_decimation(int(decimate_to))
        m.remove_degenerate_triangles()
        m.remove_unreferenced_vertices()
        v, f = np.asarray(m.vertices), np.asarray(m.triangles).astype(np.int64)
    if signed_volume(v, f) < 0:
        f = f[:, ::-1]
    return make_mesh(v, f, name=f"vertebra {name}")


def vertebra_population(labels_path=None, names=VERTEBRAE, *, template: str | None = None, meshes: dict | None = None,
                        scale: bool = True, chain: bool = True, **mesh_options):
    """The vertebrae in correspondence: ``(faces, [(V, 3) vertices per vertebra], names)``.

    The template vertebra (default: the one of median volume) keeps its own
    vertices; it is registered onto the others (rigid ICP with scale, then
    non-rigid ICP, :func:`engine.ssm.correspondence.correspond`).  With ``chain``
    (default) the registration walks along the spine from the template outward,
    each vertebra from its registered neighbour (``names`` in spine order), so that
    every step is a small deformation.  Each result lies in its vertebra's own
    frame (world mm): align them (Procrustes) before PCA.  ``meshes`` (from
    :func:`vertebra_meshes`) saves extracting the surfaces again; other keyword
    arguments go to :func:`vertebra_meshes`.
    """
    if meshes is None:
        meshes = vertebra_meshes(labels_path, names, **mesh_options)
    order = list(meshes)
    if len(order) < 2:
        raise ValueError(f"need at least two vertebrae, got {order}")
    if template is None:
        vols = np.array([meshes[n].volume for n in order])
        template = order[int(np.argsort(vols)[len(vols) // 2])]
    if template not in meshes:
        raise KeyError(f"template {template!r} is not among the vertebrae {order}")
    tpl = meshes[template]
    i = order.index(template)
    shapes = {template: np.array(tpl.vertices)}
    for side in (order[:i][::-1], order[i + 1:]):  # toward the head, then toward the feet
        shapes.update(zip(side, correspond(tpl, [meshes[n] for n in side], scale=scale, chain=chain)))
    return np.array(tpl.faces), [shapes[n] for n in order], order


def vertebra_segment(model, shapes, names, name: str, *, trend_degree: int | None = 1):
    """A three-vertebra segment model (:func:`engine.ssm.segment.segment_model`): ``name`` and its two
    neighbours, each an instance of ``model`` (a one-vertebra model), the neighbours placed and free within a
    spread measured on the consecutive pairs of ``shapes`` (in spine order, in correspondence with ``model``,
    world mm) that do not involve ``name``: the vertebra's own placement among its neighbours is not used.

    ``trend_degree`` (default 1): the placements above and below are predicted from a linear trend along the
    spine (:func:`engine.ssm.segment.placement_trend`; vertebrae grow taller and the curvature turns level by
    level), free within the prediction's standard error; ``None``: the mean placement over all pairs and the
    spread about it (:func:`engine.ssm.segment.consecutive_placement`).  On the chest CT the step between
    consecutive vertebrae grows from 20 mm (T1-T2) to 29 mm (T12-L1) and the mean misplaces the end levels' neighbours
    by 2-3.5 standard deviations.

    The neighbours put as much bone into the vertebra's region of an X-ray as the vertebra itself; rendered
    with it, they are explained rather than mistaken for it.  Parts: ``[above, name, below]``; the segment's
    frame is ``name``'s model frame.
    """
    from .procrustes import align
    from .segment import consecutive_placement, placement_trend, segment_model

    names = list(names)
    if name not in names:
        raise KeyError(f"{name!r} is not among the vertebrae {names}")
    k = names.index(name)
    if not 0 < k < len(names) - 1:
        raise ValueError(f"{name} needs a neighbour on either side among {names}")
    poses = [None if j == k else align(model.mean, s).matrix for j, s in enumerate(shapes)]  # name's unused
    if trend_degree is None:
        step, rotation_sd, translation_sd = consecutive_placement([poses[:k], poses[k + 1:]])
        above, below = np.linalg.inv(step), step
    else:
        steps, rotation_sd, translation_sd = placement_trend(poses, [k - 1, k], degree=trend_degree)
        above, below = np.linalg.inv(steps[0]), steps[1]
    return segment_model(model, [above, np.eye(4), below], reference=1, rotation_sd=rotation_sd,
                         translation_sd=translation_sd, names=[names[k - 1], name, names[k + 1]])
