"""Where the engine finds files that are not code: its shipped assets and the external data folder.

- **Shipped assets** (the repository's ``assets/``: ``pelvis_phantom.nii.gz``, ``pelvis_ssm.npz``,
  ``spectra/``): :func:`asset_path`.  Found beside the package (``<repository>/assets``), or in the folder that
  ``ENGINE_ASSETS`` names (for an installed package, which does not carry them).
- **External data** that is not shipped (the chest CT, a copy of the LLP26 model files): :func:`data_path`, in
  the folder that ``ENGINE_DATA`` names, which holds one sub-folder per data set (``chest_ct/``,
  ``llp26_pelvis_ssm/``).  Nothing is searched for: without ``ENGINE_DATA`` (or a path passed to the function
  that wants the data) the error says what to set.

This is the one module of the engine that locates files from its own position (``tests/test_layers.py``).
"""
from __future__ import annotations

import os
from pathlib import Path

ASSETS_ENV = "ENGINE_ASSETS"
DATA_ENV = "ENGINE_DATA"


def assets_dir() -> Path:
    """The folder of the shipped assets: ``$ENGINE_ASSETS``, else ``assets/`` beside the ``engine`` package."""
    env = os.environ.get(ASSETS_ENV, "").strip()
    return Path(env) if env else Path(__file__).resolve().parents[1] / "assets"


def asset_path(name: str, *, must_exist: bool = True) -> Path:
    """Path of a shipped asset, e.g. ``"pelvis_ssm.npz"`` or ``"spectra/fluoro90.npz"``.

    Raises FileNotFoundError (naming the file and ``ENGINE_ASSETS``) when it is missing and ``must_exist``.
    """
    p = assets_dir() / name
    if must_exist and not p.exists():
        raise FileNotFoundError(f"engine asset {name!r} not found: {p} does not exist (set {ASSETS_ENV} to the "
                                "folder that holds the engine's assets, the repository's assets/)")
    return p


def data_path(name: str, *, env: str | None = None) -> Path:
    """The folder of an external data set ``name`` (e.g. ``"chest_ct"``): ``$ENGINE_DATA/<name>``.

    ``env``: a variable naming that folder itself, which wins when set (``ENGINE_CHEST_CT`` for the chest CT).
    Raises FileNotFoundError, naming the variables, when neither is set or the folder does not exist.
    """
    own = os.environ.get(env, "").strip() if env else ""
    if own:
        p = Path(own)
    else:
        root = os.environ.get(DATA_ENV, "").strip()
        if not root:
            also = f" or {env} to the folder itself" if env else ""
            raise FileNotFoundError(f"data set {name!r}: {DATA_ENV} is not set (set it to the folder that holds "
                                    f"{name}/{also}, or pass the path)")
        p = Path(root) / name
    if not p.is_dir():
        where = env if own else DATA_ENV
        raise FileNotFoundError(f"data set {name!r} not found: {p} is not a folder (from {where})")
    return p
