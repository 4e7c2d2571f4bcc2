"""``engine dataset``: render a labelled dataset from a sampling plan (see :mod:`engine.dataset`)."""
import argparse
import json

DATASET_HELP = """\
Render a labelled synthetic fluoroscopy dataset from a sampling plan (YAML; see engine/dataset/plan.py and the
example assets/plans/quick.yaml): X-rays (float32 TIFF + 16-bit PNG) and, per image, the exact camera (JSON),
projected landmarks with visibility, per-structure masks and line integrals, mesh path lengths, in shards with
a manifest.  The plan is checked before anything renders.  The same plan and seed give the same bytes with any
number of workers; rerunning an interrupted run resumes it (finished shards are kept).

examples:
  engine dataset assets/plans/quick.yaml --out out/dataset_quick
  engine dataset plan.yaml --out data/ --workers 2
  engine dataset plan.yaml --out data/ --ray                    # a local Ray instance (pip install -e ".[ray]")
  engine dataset plan.yaml --out data/ --ray-address ray://head:10001
"""


def add_command(sub):
    p = sub.add_parser("dataset", help="render a labelled dataset from a sampling plan", description=DATASET_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", help="sampling plan (YAML)")
    p.add_argument("--out", required=True, help="output folder (created; an existing one is resumed)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--ray", action="store_true", help="run the shards as tasks on a local Ray instance")
    p.add_argument("--ray-address", help="run the shards on this Ray cluster")
    p.add_argument("--gpus-per-task", type=float, default=0.0,
                   help="with Ray: GPUs per shard task (e.g. 1 on GPU nodes; the worker then renders with CUDA)")
    p.add_argument("--check", action="store_true", help="only validate the plan and print what it would render")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from .dataset import load_plan
    from .dataset import run as run_plan
    from .errors import InputError

    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: give at least 1")
    plan = load_plan(args.plan)
    print(f"plan {args.plan}: {plan.n_images} images of {plan.rows} x {plan.cols} from {len(plan.inputs)} CT(s), "
          f"{plan.n_shards} shards of {plan.shard_size}")
    if args.check:
        return 0
    if args.gpus_per_task < 0 or (args.gpus_per_task and not (args.ray or args.ray_address)):
        raise InputError("--gpus-per-task needs --ray or --ray-address and a value >= 0")
    res = run_plan(plan, args.out, workers=args.workers, ray=args.ray, ray_address=args.ray_address,
                   gpus_per_task=args.gpus_per_task, progress=not args.quiet)
    print(json.dumps(res))
    print(f"wrote {args.out}/manifest.jsonl and {args.out}/dataset.json")
    return 0
