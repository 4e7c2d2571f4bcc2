"""engine.assets: the shipped assets (``ENGINE_ASSETS`` overrides their folder) and the external data folder
(``ENGINE_DATA``); missing files end in errors that name the file and the variable."""
import pytest

from engine import assets
from engine.ssm.vertebrae import chest_ct_dir


def test_shipped_assets_are_found_beside_the_package(monkeypatch):
    monkeypatch.delenv("ENGINE_ASSETS", raising=False)
    assert assets.asset_path("pelvis_ssm.npz").is_file()
    assert assets.asset_path("spectra/fluoro90.npz").is_file()


def test_engine_assets_overrides_the_folder_and_a_missing_asset_is_named(monkeypatch, tmp_path):
    (tmp_path / "pelvis_ssm.npz").write_bytes(b"")
    monkeypatch.setenv("ENGINE_ASSETS", str(tmp_path))
    assert assets.asset_path("pelvis_ssm.npz") == tmp_path / "pelvis_ssm.npz"
    with pytest.raises(FileNotFoundError, match=r"'pelvis_phantom.nii.gz'.*ENGINE_ASSETS"):
        assets.asset_path("pelvis_phantom.nii.gz")
    assert assets.asset_path("pelvis_phantom.nii.gz", must_exist=False) == tmp_path / "pelvis_phantom.nii.gz"


def test_external_data_comes_from_engine_data_only(monkeypatch, tmp_path):
    monkeypatch.delenv("ENGINE_DATA", raising=False)
    monkeypatch.delenv("ENGINE_CHEST_CT", raising=False)
    with pytest.raises(FileNotFoundError, match="ENGINE_DATA is not set.*ENGINE_CHEST_CT"):
        chest_ct_dir()
    monkeypatch.setenv("ENGINE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"chest_ct.*not a folder \(from ENGINE_DATA\)"):
        chest_ct_dir()
    (tmp_path / "chest_ct").mkdir()
    assert chest_ct_dir() == tmp_path / "chest_ct"
    monkeypatch.setenv("ENGINE_CHEST_CT", str(tmp_path))  # the older, narrower variable wins where set
    assert chest_ct_dir() == tmp_path
