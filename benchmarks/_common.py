"""Helpers shared by the benchmark scripts."""
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# External data (not shipped): $ENGINE_DATA (see engine.assets), else ../shared/data beside the repository.
# The benchmarks pass these paths to the engine explicitly; the engine never looks for them.
DATA = Path(os.environ.get("ENGINE_DATA") or ROOT.parent / "shared" / "data")
CHEST_CT = Path(os.environ.get("ENGINE_CHEST_CT") or DATA / "chest_ct")


def median_time(fn, repeats):
    """Median wall time (s) of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def clip_rays(vol, cam, rows=slice(None)):
    """Index-space source ``s`` (3,), ray vectors ``d`` (n, 3), clipped parameters ``t0, t1`` (n,) and world
    lengths (mm, n) of the detector rows ``rows``, with the projector's rule: the box of voxel extents
    [-0.5, n - 0.5] and the segment from the source to the pixel."""
    a = np.linalg.inv(vol.world_from_index)
    src, tgt = cam.rays()
    tgt = tgt[rows].reshape(-1, 3)
    s = a[:3, :3] @ src + a[:3, 3]
    d = tgt @ a[:3, :3].T + a[:3, 3] - s
    n = np.array(vol.shape, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (-0.5 - s) / d, (n - 0.5 - s) / d
    t0 = np.clip(np.nanmax(np.minimum(ta, tb), -1), 0, 1)
    t1 = np.clip(np.nanmin(np.maximum(ta, tb), -1), 0, 1)
    length = np.maximum(t1 - t0, 0) * np.linalg.norm(tgt - src, axis=-1)
    return s, d, t0, t1, length


def write_results(path, rows, **extra) -> dict:
    """Write ``{"machine": ..., "rows": rows, **extra}`` as JSON to ``path`` (folders created) and print where;
    the machine: platform, CPU count, the Taichi backend in use (when one was started) and the date."""
    import json
    import platform

    from engine import backend

    b = backend.current()
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(),
                   **({"arch": b.arch} if b is not None else {}), date=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out = dict(machine=machine, rows=rows, **extra)
    p.write_text(json.dumps(out, indent=1))
    print(f"machine: {machine}\nwrote {p}")
    return out
