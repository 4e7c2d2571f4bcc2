import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/phantoms.py
sys.path.append(str(ROOT))  # research/ (the evaluation harness; not part of the library)
# External data (not shipped): $ENGINE_DATA (see engine.assets), else ../shared/data beside the repository; the
# tests pass its paths to the engine explicitly, and skip where it is absent.
DATA = Path(os.environ.get("ENGINE_DATA") or ROOT.parent / "shared" / "data")
CHEST_CT = Path(os.environ.get("ENGINE_CHEST_CT") or DATA / "chest_ct")
ASSETS = ROOT / "assets"


@pytest.fixture(scope="session")
def chest_ct_dir():
    if not (CHEST_CT / "ct.nii.gz").is_file():
        pytest.skip(f"real chest CT not found at {CHEST_CT} (set ENGINE_DATA to the folder that holds chest_ct/)")
    return CHEST_CT


# ----------------------------------------------------------------- backend
# The suite runs on whatever engine.backend chooses; ENGINE_ARCH=cpu|cuda|vulkan asks for one (CI runs the
# `kernel`-marked tests a second time with ENGINE_ARCH=vulkan on Mesa's lavapipe).  The backend is initialised
# at session start so that a requested arch that cannot start stops the run with a clear error instead of
# every test failing (or, worse, running on the CPU), and so that the header can say which one runs.
_BACKEND_LINE = None
_HINTS = {
    "vulkan": "Vulkan needs a Vulkan driver (ICD): without a GPU, Mesa's lavapipe (Debian/Ubuntu: apt-get install "
              "mesa-vulkan-drivers libvulkan1); ",
    "cuda": "CUDA needs an NVIDIA GPU and driver (/dev/nvidia0, libcuda.so); ",
}


def pytest_sessionstart(session):
    global _BACKEND_LINE
    requested = os.environ.get("ENGINE_ARCH", "").strip().lower()
    if session.config.option.collectonly:
        return
    import engine.backend

    try:
        got = engine.backend.init()
    except Exception as e:  # noqa: BLE001 - ValueError (bad name) or RuntimeError (cannot start)
        raise pytest.UsageError(
            f"ENGINE_ARCH={requested!r} was requested but the engine's backend could not be initialised on it: "
            f"{type(e).__name__}: {e}\n{_HINTS.get(requested, '')}unset ENGINE_ARCH to run on what engine.backend "
            "chooses"
        ) from e
    if requested and got.arch != requested:  # engine.backend.init raises already; this guards the guarantee
        raise pytest.UsageError(f"ENGINE_ARCH={requested} was requested but Taichi runs on {got.arch}")
    how = f"ENGINE_ARCH={requested}" if requested else "automatic: cuda > vulkan (hardware GPU) > cpu"
    _BACKEND_LINE = f"engine backend: {got.arch} (f{got.float_bits}; {how})"


def pytest_report_header(config):
    return _BACKEND_LINE or "engine backend: not initialised (collection only)"
