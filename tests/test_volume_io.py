"""Reading CTs (NIfTI, DICOM), HU calibration, materials, and clear errors on bad input."""
import numpy as np
import pytest

from engine.volume import CT, HUCalibration, Volume, load_ct, read_dicom_series, threshold_weights, write_nifti


def _ct_values(shape=(12, 10, 7), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, shape).astype(np.int16)


def test_nifti_round_trip_keeps_voxels_and_affine(tmp_path):
    hu = _ct_values()
    aff = np.array([[0.0, -0.8, 0.1, 10.0], [0.7, 0.0, 0.0, -20.0], [0.0, 0.05, 2.5, 30.0], [0, 0, 0, 1]])
    write_nifti(tmp_path / "a.nii.gz", hu, aff)
    ct = load_ct(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(ct.hu, hu.astype(np.float32))
    np.testing.assert_allclose(ct.world_from_index, aff, atol=1e-5)


def _write_dicom_series(folder, hu, world_from_index, slope=1.0, intercept=-1024.0, shuffle=True):
    """A CT series as DICOM files (LPS), one file per k-slice, in shuffled file order."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ world_from_index
    row_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    dc, dr = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    series, study = generate_uid(), generate_uid()
    order = np.random.default_rng(1).permutation(hu.shape[2]) if shuffle else np.arange(hu.shape[2])
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"x{n:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series, study
        ds.InstanceNumber = int(n + 1)  # deliberately not the slice order
        ds.ImagePositionPatient = [float(x) for x in lps[:3, :3] @ [0, 0, k] + lps[:3, 3]]
        ds.ImageOrientationPatient = [float(x) for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(dr), float(dc)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.round((hu[:, :, k].T - intercept) / slope).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ds.save_as(str(folder / f"x{n:03d}.dcm"), enforce_file_format=True)


def test_dicom_series_reads_back_to_the_same_voxels_and_affine(tmp_path):
    hu = _ct_values((16, 12, 9)).astype(np.float32)
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([0.75, 0.8, 2.0])  # oblique
    aff[:3, 3] = [-40.0, 25.0, 100.0]
    _write_dicom_series(tmp_path, hu, aff)
    (tmp_path / "notes.txt").write_text("not a dicom file")
    ct = load_ct(tmp_path)
    np.testing.assert_array_equal(ct.hu, hu)
    np.testing.assert_allclose(ct.world_from_index, aff, atol=1e-4)


def test_dicom_series_of_the_shipped_phantom(tmp_path):
    from conftest import ASSETS

    path = ASSETS / "pelvis_phantom.nii.gz"
    if not path.is_file():
        pytest.skip("assets/pelvis_phantom.nii.gz not generated")
    ct = load_ct(path)
    sub = ct.hu[::4, ::4, 20:28]  # a slab, to keep the test fast
    aff = ct.world_from_index @ np.diag([4.0, 4.0, 1.0, 1.0])
    aff[:3, 3] = ct.world_from_index[:3, :3] @ [0, 0, 20] + ct.world_from_index[:3, 3]
    _write_dicom_series(tmp_path, sub, aff, slope=0.5, intercept=-1024.0)
    back = read_dicom_series(tmp_path)
    np.testing.assert_allclose(back.hu, sub, atol=0.25)  # slope 0.5: stored values are rounded to 0.5 HU
    np.testing.assert_allclose(back.world_from_index, aff, atol=1e-4)


def test_dicom_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match="no DICOM image slices"):
        read_dicom_series(tmp_path)
    hu = _ct_values((8, 8, 4)).astype(np.float32)
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    _write_dicom_series(tmp_path, hu, aff, shuffle=False)
    (tmp_path / "x001.dcm").unlink()  # a missing inner slice leaves a gap
    with pytest.raises(ValueError, match="uneven slice spacing"):
        read_dicom_series(tmp_path)


def test_bad_files_give_clear_errors(tmp_path):
    import nibabel as nib

    with pytest.raises(FileNotFoundError, match="not found"):
        load_ct(tmp_path / "missing.nii.gz")
    (tmp_path / "fake.nii.gz").write_bytes(b"this is not nifti")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        load_ct(tmp_path / "fake.nii.gz")
    (tmp_path / "ct.mha").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown CT format"):
        load_ct(tmp_path / "ct.mha")
    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.float32), np.eye(4)), str(tmp_path / "flat.nii"))
    with pytest.raises(ValueError, match="not a 3D volume"):
        load_ct(tmp_path / "flat.nii")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 3), np.float32), np.eye(4)), str(tmp_path / "t.nii"))
    with pytest.raises(ValueError, match="not a 3D volume"):
        load_ct(tmp_path / "t.nii")
    bad = np.zeros((4, 4, 4), np.float32)
    bad[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(ValueError, match=r"NaN/inf voxels \(first at index \(1, 2, 3\)\)"):
        load_ct(tmp_path / "nan.nii")
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        CT(hu=bad, world_from_index=np.eye(4))
    with pytest.raises(ValueError, match="zero voxel spacing|singular"):
        CT(hu=np.zeros((3, 3, 3)), world_from_index=np.diag([1.0, 0.0, 1.0, 1.0]))


def test_calibration_and_threshold_materials():
    cal = HUCalibration()
    np.testing.assert_allclose(cal([-1000, 0, 100, 1600, -3000]), [0.0012, 1.0, 1.1, 1.92, 0.0012], rtol=1e-6)
    hu = np.array([-1000.0, -800, -500, 0, 350, 400, 1500])
    w = threshold_weights(hu)
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(w[:, 0], [1, 0, 0])  # air
    np.testing.assert_allclose(w[:, 1], [0.5, 0.5, 0])  # at the air threshold: half and half
    np.testing.assert_allclose(w[:, 3], [0, 1, 0])
    np.testing.assert_allclose(w[:, 4], [0, 0.5, 0.5])
    np.testing.assert_allclose(w[:, 6], [0, 0, 1])
    hard = threshold_weights(hu, transition=0)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        HUCalibration(hu=(0, -1), density=(1, 2))
    with pytest.raises(ValueError):
        threshold_weights(hu, air_below=400, bone_above=300)


def test_volume_from_ct_and_labels():
    hu = np.full((6, 6, 6), 40.0, np.float32)
    hu[0] = -1000
    hu[5] = 1200
    ct = CT(hu=hu, world_from_index=np.eye(4))
    vol = Volume.from_ct(ct)
    assert vol.materials == ("air", "soft_tissue", "bone")
    np.testing.assert_allclose(vol.density.sum(0), HUCalibration()(hu), rtol=1e-6)
    assert vol.density[2, 5].min() > 1.5 and vol.density[2, 1:5].max() == 0
    labels = np.zeros(hu.shape, int)
    labels[2:4, 2:4, 2:4] = 7
    lv = Volume.from_labels(ct, labels, {7: "titanium"})
    assert lv.materials == ("air", "soft_tissue", "bone", "titanium")
    assert lv.density[3][labels == 7].min() > 0 and lv.density[:3][:, labels == 7].max() == 0
    with pytest.raises(ValueError, match="label map shape"):
        Volume.from_labels(ct, labels[:-1], {7: "bone"})
    with pytest.raises(ValueError, match="material names"):
        Volume(density=np.zeros((2, 3, 3, 3)), materials=("a",), world_from_index=np.eye(4))
    with pytest.raises(ValueError, match=">= 0"):
        Volume(density=-np.ones((1, 3, 3, 3)), materials=("a",), world_from_index=np.eye(4))


def test_inputs_are_not_modified():
    hu = np.zeros((4, 4, 4), np.float32)
    ct = CT(hu=hu, world_from_index=np.eye(4))
    assert not np.shares_memory(ct.hu, hu)
    d = np.ones((1, 4, 4, 4), np.float32)
    v = Volume(density=d, materials=("m",), world_from_index=np.eye(4))
    assert not np.shares_memory(v.density, d)


def test_integer_hu_fast_path_equals_direct_formula():
    rng = np.random.default_rng(4)
    hu = rng.integers(-1100, 2500, (9, 8, 7)).astype(np.float32)
    vol = Volume.from_ct(CT(hu=hu, world_from_index=np.eye(4)))
    direct = threshold_weights(hu) * HUCalibration()(hu)[None]
    np.testing.assert_allclose(vol.density, direct, rtol=1e-6, atol=1e-7)
    frac = Volume.from_ct(CT(hu=hu + 0.25, world_from_index=np.eye(4)))  # non-integer: direct path
    np.testing.assert_allclose(frac.density, threshold_weights(hu + 0.25) * HUCalibration()(hu + 0.25)[None],
                               rtol=1e-6)
