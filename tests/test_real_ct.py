"""The real chest CT (../shared/data/chest_ct): bones appear where the geometry says they must."""
import numpy as np
import pytest

from engine.geometry import carm
from engine.volume import Volume, VolumeProjector, load_ct


@pytest.fixture(scope="module")
def chest(chest_ct_dir):
    import nibabel as nib

    ct = load_ct(chest_ct_dir / "ct.nii.gz")
    labels = np.asarray(nib.load(str(chest_ct_dir / "labels.nii.gz")).dataobj).astype(np.int16)
    names = {}
    for line in (chest_ct_dir / "labels.csv").read_text().splitlines()[1:]:
        group, _, name, lab = line.split(",")
        names[name] = int(lab)
    vol = Volume.from_ct(ct)
    return ct, labels, names, VolumeProjector(vol)


def _label_centroid(ct, labels, lab):
    idx = np.argwhere(labels == lab)
    assert len(idx) > 100, f"label {lab} is missing"
    return ct.world_from_index[:3, :3] @ idx.mean(0) + ct.world_from_index[:3, 3]


def _bone_at_voxels(ct, labels, lab, cam, bone, n=300, seed=0):
    """Bone image (g/cm^2) at the projections of ``n`` random voxel centres of a label."""
    idx = np.argwhere(labels == lab)
    assert len(idx) > 100, f"label {lab} is missing"
    idx = idx[np.random.default_rng(seed).choice(len(idx), min(n, len(idx)), replace=False)]
    uv = np.round(cam.project_points(idx @ ct.world_from_index[:3, :3].T + ct.world_from_index[:3, 3]))
    uv = uv.astype(int)
    assert np.all((uv >= 0) & (uv < [cam.cols, cam.rows])), "structure projects off the detector"
    return bone[uv[:, 1], uv[:, 0]]


@pytest.mark.parametrize("primary", [0, 90])
def test_spine_and_ribs_project_onto_bone(chest, primary):
    """Pixels onto which vertebra and rib voxels project hold far more bone than those of the lungs."""
    ct, labels, names, proj = chest
    cam = carm(primary=primary, sid=800, sdd=1200, rows=200, cols=200, pixel_size=3.0, isocenter=ct.center)
    bone = proj(cam)[0, 2]
    lung = np.median(_bone_at_voxels(ct, labels, names["lung_upper_lobe_left"], cam, bone))
    # background: the lungs in AP; in the lateral view they lie behind the contrast-filled heart and the
    # arms, so the liver (no bone in front of or behind it laterally) serves instead
    ref = lung if primary == 0 else np.median(_bone_at_voxels(ct, labels, names["liver"], cam, bone))
    for name in ("vertebrae_T6", "vertebrae_T10"):
        assert np.median(_bone_at_voxels(ct, labels, names[name], cam, bone)) > 3 * ref + 0.5, name
    if primary == 0:  # ribs over the lungs: each adds its own bone to the lung background
        for name in ("rib_left_6", "rib_right_6"):
            assert np.median(_bone_at_voxels(ct, labels, names[name], cam, bone)) > lung + 0.1, name


def test_ap_view_is_radiological(chest):
    """In the AP view the liver (patient's right) is on the image's left, the heart leans to the right."""
    ct, labels, names, proj = chest
    cam = carm(primary=0, sid=800, sdd=1200, rows=128, cols=128, pixel_size=3.0, isocenter=ct.center)
    liver = cam.project_points(_label_centroid(ct, labels, names["liver"]))
    spleen = cam.project_points(_label_centroid(ct, labels, names["spleen"]))
    assert liver[0] < 64 < spleen[0]
    # the liver's projected centroid is dense soft tissue: more soft tissue there than in the lungs
    soft = proj(cam)[0, 1]
    lung = cam.project_points(_label_centroid(ct, labels, names["lung_upper_lobe_left"]))
    s = lambda uv: soft[int(round(uv[1])), int(round(uv[0]))]  # noqa: E731
    assert s(liver) > s(lung)


def test_vertebra_mesh_distance_map_matches_ct_projection_of_its_mask(chest_ct_dir):
    """Marching-cubes mesh of T8 vs the CT projector's line integral of the same binary mask (density 1)."""
    import nibabel as nib

    from engine.mesh import MeshProjector, from_labels

    img = nib.load(str(chest_ct_dir / "labels.nii.gz"))
    labels = np.asarray(img.dataobj).astype(np.int16)
    names = {line.split(",")[2]: int(line.split(",")[3])
             for line in (chest_ct_dir / "labels.csv").read_text().splitlines()[1:]}
    lab = names["vertebrae_T8"]
    idx = np.argwhere(labels == lab)
    lo, hi = idx.min(0) - 2, idx.max(0) + 3
    sub = (labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == lab).astype(np.float32)
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    mesh = from_labels(sub, 1.0, aff)
    vol = Volume(density=sub[None], materials=("t8",), world_from_index=aff)
    centre = mesh.vertices.mean(0)
    for primary in (0, 90):
        cam = carm(primary=primary, sid=600, sdd=900, rows=96, cols=96, pixel_size=1.0, isocenter=centre)
        dist = MeshProjector(mesh, "bone")(cam)[0, 0]
        ct_mm = VolumeProjector(vol)(cam)[0, 0] * 10.0  # g/cm^2 of density 1 -> mm
        inside = (dist > 5) & (ct_mm > 5)
        assert inside.sum() > 500
        # the mesh is the 0.5 iso-surface of the trilinear mask, the CT projector integrates the same
        # trilinear field: they differ by partial-volume shading within about one voxel (2.5 mm slices)
        assert np.median(np.abs(dist - ct_mm)[inside]) < 1.0  # mm
        assert np.abs(dist.sum() - ct_mm.sum()) / ct_mm.sum() < 0.05  # projected volumes agree within 5%
