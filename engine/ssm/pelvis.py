"""The engine's pelvis shape model, built from the 26 real subjects of the LLP26 model.

LLP26 (Zhang et al., J Biomech 2016; MPL-2.0) gives each of its 26 adult subjects
as scores on its own modes; :func:`llp26_population` regenerates the subjects'
pelvis surfaces (two hip bones and the sacrum, 1946 vertices, in correspondence)
in the anatomical RAS+ frame of the LLP26 mean pelvis
(:func:`engine.phantoms.llp26.pelvis_to_ras`), and :func:`build_pelvis_model`
builds the engine's model from them with :func:`engine.ssm.build_model`
(generalised Procrustes without scale, then PCA), optionally leaving subjects
out for leave-one-out experiments.

``python -m engine.ssm.pelvis`` writes ``assets/pelvis_ssm.npz`` (all 26 subjects,
coarse mesh; use ``ShapeModel.subdivided(1)`` or ``(2)`` for rendering).
"""
from __future__ import annotations

import numpy as np

from ..assets import asset_path
from .build import build_model
from .model import ShapeModel

ASSET = asset_path("pelvis_ssm.npz", must_exist=False)  # where main() writes by default
N_SUBJECTS = 26


def llp26_population():
    """The 26 LLP26 subjects' pelvis vertices, (26, 1946, 3) mm in the mean pelvis' RAS+ frame, and the faces."""
    from ..phantoms import llp26

    faces = llp26.pelvis_topology()
    shapes = np.stack([llp26.pelvis_to_ras(llp26.pelvis_subject_vertices(i)) for i in range(N_SUBJECTS)])
    return shapes, faces


def build_pelvis_model(exclude=(), *, variance: float | None = None, n_modes: int | None = None) -> ShapeModel:
    """The pelvis model of the LLP26 subjects not in ``exclude`` (indices 0..25); all modes by default."""
    shapes, faces = llp26_population()
    ex = sorted({int(i) for i in np.atleast_1d(exclude)})
    if any(i < 0 or i >= N_SUBJECTS for i in ex):
        raise ValueError(f"subject indices are 0..{N_SUBJECTS - 1}, got {ex}")
    keep = [i for i in range(N_SUBJECTS) if i not in ex]
    return build_model(shapes[keep], faces, variance=variance, n_modes=n_modes, scale=False,
                       info={"name": "LLP26 pelvis" + (f" without subjects {ex}" if ex else ""),
                             "source": "LLP26 (Zhang et al., J Biomech 2016, doi:10.1016/j.jbiomech.2016.10.021), "
                                       "MPL-2.0, via musculoskeletal-models==0.2.4",
                             "subjects": keep, "frame": "RAS+ of the LLP26 mean pelvis (mm)"})


def load_pelvis_model(path=None) -> ShapeModel:
    """The shipped model (``assets/pelvis_ssm.npz``), built by :func:`build_pelvis_model` with all subjects."""
    return ShapeModel.load(asset_path("pelvis_ssm.npz") if path is None else path)


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Build the LLP26 pelvis shape model into assets/.")
    ap.add_argument("--out", default=str(ASSET))
    args = ap.parse_args(argv)
    model = build_pelvis_model()
    model.save(args.out)
    print(f"{model}, std of mode 1-3: {np.round(model.std[:3], 2)} mm -> {args.out}")


if __name__ == "__main__":
    main()
