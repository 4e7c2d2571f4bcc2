import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/phantoms.py
CHEST_CT = ROOT.parent / "shared" / "data" / "chest_ct"
if os.environ.get("ENGINE_CHEST_CT"):
    CHEST_CT = Path(os.environ["ENGINE_CHEST_CT"])
ASSETS = ROOT / "assets"


@pytest.fixture(scope="session")
def chest_ct_dir():
    if not (CHEST_CT / "ct.nii.gz").is_file():
        pytest.skip(f"real chest CT not found at {CHEST_CT} (set ENGINE_CHEST_CT to its folder)")
    return CHEST_CT
