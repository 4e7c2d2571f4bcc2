"""Dataset throughput: images per second of ``engine dataset`` at 256 x 256 with physics (polychromatic, scatter,
noise) on the shipped phantom with a titanium rod: bare images (no structures, no landmarks) vs all labels (bone
mask and line integral, landmarks, mesh lengths), and with labels: 1 process vs 2 worker processes vs a local Ray
instance (2 CPUs).  Each mode renders the same plan into a fresh folder after a warm-up render in this process;
the time includes starting the workers (each compiles or loads Taichi's kernels from its offline cache, loads the
CT and computes its spectrum), so it is the time a user waits.  Targets (issue 21): labels cost at most 30 % over
bare images; 2 workers at least 1.7x one worker on a 2-core machine.

    python benchmarks/dataset.py [--images 32] [--out benchmarks/results/dataset.json]
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def plan_dict(n: int, labels: bool, label_downsample: int = 1) -> dict:
    import yaml

    d = yaml.safe_load((ROOT / "assets" / "plans" / "quick.yaml").read_text())
    d.update(images_per_ct=n, shard_size=4, detector={"rows": 256, "cols": 256, "pixel_size": 1.6})
    d["physics"]["kvp"] = {"min": 90, "max": 90}  # one spectrum: spekpy's ~1 s per kVp is not what is measured
    if not labels:
        d["inputs"] = [{"ct": d["inputs"][0]["ct"]}]
    elif label_downsample > 1:
        d["inputs"][0]["label_downsample"] = label_downsample
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dataset.json"))
    args = ap.parse_args(argv)
    from _common import write_results
    from engine.dataset import parse_plan, run

    base = ROOT / "assets" / "plans"
    modes = [("bare, 1 process", False, dict(workers=1)), ("labels, 1 process", True, dict(workers=1)),
             ("labels at 1/2 grid, 1 process", 2, dict(workers=1)), ("labels, 2 workers", True, dict(workers=2))]
    try:
        import ray  # noqa: F401

        modes.append(("labels, Ray (2 CPUs)", True, dict(ray=True, workers=2)))
    except ImportError:
        print("Ray not installed: no Ray row (pip install -e '.[ray]')")
    warm = Path(tempfile.mkdtemp(prefix="engine_ds_warm_"))  # compile the kernels, load spekpy, before timing
    run(parse_plan(plan_dict(4, True), base=base), warm, progress=False)
    shutil.rmtree(warm, ignore_errors=True)
    rows = []
    for name, labels, kw in modes:
        plan = parse_plan(plan_dict(args.images, bool(labels), int(labels) if labels is not True else 1), base=base)
        out = Path(tempfile.mkdtemp(prefix="engine_ds_bench_"))
        t = time.perf_counter()
        run(plan, out, progress=False, **kw)
        sec = time.perf_counter() - t
        shutil.rmtree(out, ignore_errors=True)
        rows.append(dict(mode=name, images=plan.n_images, seconds=sec, images_per_s=plan.n_images / sec))
        print(f"{name:<32}{plan.n_images:>5} images {sec:7.1f} s {plan.n_images / sec:6.2f} images/s", flush=True)
    if any(r["mode"].startswith("labels, Ray") for r in rows):
        import ray

        ray.shutdown()
    by = {r["mode"]: r["seconds"] for r in rows}
    summary = dict(label_overhead=by["labels, 1 process"] / by["bare, 1 process"] - 1,
                   label_overhead_half_grid=by["labels at 1/2 grid, 1 process"] / by["bare, 1 process"] - 1,
                   speedup_2_workers=by["labels, 1 process"] / by["labels, 2 workers"])
    print(f"labels cost {100 * summary['label_overhead']:.0f} % over bare images; 2 workers "
          f"{summary['speedup_2_workers']:.2f}x one")
    write_results(args.out, rows, summary=summary)


if __name__ == "__main__":
    main()
