"""Running a plan: shards rendered in this process, in N worker processes, or as Ray tasks; the same files.

Each shard is a task (:func:`engine.dataset.write.render_shard`); a worker keeps its CT scenes between
shards.  Images are sampled by index from the plan's seed, never from the order of work, so 1 worker, N
workers and Ray give byte-identical files.  Finished shards are skipped: rerunning an interrupted run resumes.
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from ..progress import ProgressBar
from .write import clean_parts, finish, render_shard, shard_indices

_SCENES: dict = {}  # per process: {ct index: CTScene}


def _task(plan, k: int, out_dir) -> list:
    return render_shard(plan, k, out_dir, _SCENES)


def _scenes_info(plan) -> dict:
    """Structure names and mesh materials per CT (from the first images' metadata, read back)."""
    return {"inputs": [str(i.ct) for i in plan.inputs], "mesh_materials": [m.material for m in plan.meshes]}


def run(plan, out_dir, *, workers: int = 1, ray: bool = False, ray_address: str | None = None,
        gpus_per_task: float = 0.0, progress: bool = True) -> dict:
    """Render every shard of ``plan`` into ``out_dir``; returns ``{"rendered": n shards, "skipped": n, ...}``.

    workers : local processes (1: this process); ray / ray_address : Ray tasks on a local instance or a cluster;
    gpus_per_task : Ray's GPU share per task (e.g. 1 on GPU nodes: each task sees its GPU, and the engine's
    backend picks CUDA there; 0: CPU tasks).
    """
    from ..errors import InputError

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = clean_parts(out)
    todo = [k for k in range(plan.n_shards) if not (out / f"shard_{k:06d}").is_dir()]
    done_before = plan.n_shards - len(todo)
    rows = []
    for k in range(plan.n_shards):
        if k not in todo:
            rows += render_shard(plan, k, out, {})  # complete: read its manifest
    bar = ProgressBar(sum(len(shard_indices(plan, k)) for k in todo), "rendering", unit="images",
                      enabled=progress)
    n = 0
    if ray or ray_address:
        try:
            import ray as ray_mod
        except ImportError:
            raise InputError("--ray needs Ray: pip install -e \".[ray]\" (ray==2.60.0)") from None
        if not ray_mod.is_initialized():
            ray_mod.init(address=ray_address, num_cpus=None if ray_address else max(1, workers),
                         include_dashboard=False, log_to_driver=False)
        remote = ray_mod.remote(num_gpus=float(gpus_per_task))(_task) if gpus_per_task else ray_mod.remote(_task)
        pending = {remote.remote(plan, k, str(out)): k for k in todo}
        while pending:
            ready, _ = ray_mod.wait(list(pending), num_returns=1)
            for ref in ready:
                r = ray_mod.get(ref)
                rows += r
                n += len(r)
                bar(n)
                del pending[ref]
    elif workers > 1 and len(todo) > 1:
        ctx = mp.get_context("spawn")  # a fresh Taichi per worker
        with ctx.Pool(min(workers, len(todo))) as pool:
            for r in pool.imap_unordered(_star, [(plan, k, str(out)) for k in todo]):
                rows += r
                n += len(r)
                bar(n)
    else:
        for k in todo:
            r = _task(plan, k, out)
            rows += r
            n += len(r)
            bar(n)
    bar.close()
    finish(plan, out, rows, _scenes_info(plan))
    return {"rendered": len(todo), "skipped": done_before, "stale_parts_removed": stale, "images": len(rows),
            "seconds": bar_seconds(bar)}


def _star(args):
    return _task(*args)


def bar_seconds(bar) -> float:
    import time

    return time.perf_counter() - bar.t0
