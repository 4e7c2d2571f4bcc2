"""The vertebra shape model of the chest CT (T1..L1, not in correspondence) and its quality.

Marching cubes of each vertebra's label, a template (T7, median volume) registered
rigidly and non-rigidly onto each (chained along the spine), Procrustes without
scale, PCA; then compactness, leave-one-out generalisation and specificity.
Needs the chest CT (not shipped): ``$ENGINE_DATA/chest_ct``, default ``../shared/data/chest_ct``.

    python benchmarks/vertebra_ssm.py [--out benchmarks/results/vertebra_ssm_quality.png]
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import CHEST_CT  # noqa: E402
from engine.ssm import build_model, evaluate  # noqa: E402
from engine.ssm.vertebrae import vertebra_population  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vertebra_ssm_quality.png"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    faces, shapes, names = vertebra_population(CHEST_CT / "labels.nii.gz")
    t1 = time.perf_counter()
    model = build_model(shapes, faces, variance=None, info={"name": "chest CT vertebrae " + "-".join(names)})
    print(f"{model} from {names} (correspondence {t1 - t0:.0f} s)")
    rep = evaluate(shapes, faces)
    print(rep.table())
    rep.plot(args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"names": list(names), **rep.to_dict()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
