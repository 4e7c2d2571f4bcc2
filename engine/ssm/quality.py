"""How good a shape model is, the standard way (Davies et al., IEEE TMI 2002; Styner et al., IPMI 2003).

- *Compactness* C(k): the fraction of the population's variance the first k modes explain.
- *Generalisation* G(k): leave one shape out, build the model from the others, fit
  the left-out shape with k modes (Procrustes onto the model, then least squares),
  and measure the surface distance between the fit and the truth (mean and max,
  symmetric, mm: ASSD and Hausdorff); both averaged over the shapes left out.  It is the error to expect
  when the model meets a shape it has not seen, with perfect data.
- *Specificity* S(k): draw random instances with k modes and measure the mean
  vertex-to-vertex distance (mm) of each to the nearest training shape; small means
  the model only produces shapes like the real ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..mesh.mesh import Mesh
from ..metrics import surface_metrics
from .build import build_model
from .procrustes import generalized_procrustes


@dataclass
class QualityReport:
    """Model quality over numbers of modes ``ks`` (see module doc); distances in mm."""

    ks: np.ndarray
    compactness: np.ndarray
    generalisation_mean: np.ndarray
    generalisation_max: np.ndarray
    generalisation_mean_std: np.ndarray
    specificity: np.ndarray
    specificity_std: np.ndarray
    per_shape: np.ndarray = field(repr=False)  # (N, len(ks)) mean surface distance of each left-out shape

    def table(self) -> str:
        """A plain-text table, one row per number of modes."""
        lines = [f"{'modes':>5}  {'compact':>7}  {'gen mean mm':>11}  {'gen max mm':>10}  {'spec mm':>8}",
                 "-" * 50]
        for i, k in enumerate(self.ks):
            lines.append(f"{k:5d}  {self.compactness[i]:7.3f}  {self.generalisation_mean[i]:6.2f} +- "
                         f"{self.generalisation_mean_std[i]:4.2f}  {self.generalisation_max[i]:10.2f}  "
                         f"{self.specificity[i]:8.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def plot(self, path) -> None:
        """Three panels (compactness, generalisation, specificity against modes) to a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
        ax[0].plot(self.ks, self.compactness, "o-")
        ax[0].set(xlabel="modes", ylabel="variance explained", title="compactness", ylim=(0, 1.02))
        ax[1].errorbar(self.ks, self.generalisation_mean, self.generalisation_mean_std, fmt="o-", label="mean")
        ax[1].plot(self.ks, self.generalisation_max, "s--", label="max")
        ax[1].set(xlabel="modes", ylabel="surface distance (mm)", title="generalisation (leave one out)")
        ax[1].legend()
        ax[2].errorbar(self.ks, self.specificity, self.specificity_std, fmt="o-")
        ax[2].set(xlabel="modes", ylabel="mean distance to nearest (mm)", title="specificity")
        for a in ax:
            a.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def leave_one_out_fit(shapes, faces, i: int, ks, *, scale: bool = False):
    """Fit shape ``i`` with the model built from the others, for each k in ``ks``.

    Returns
    -------
    list of (fit Mesh, truth Mesh), in the left-out model's frame, one per k.
    """
    s = np.asarray(shapes, np.float64)
    model = build_model(np.delete(s, i, axis=0), faces, variance=None, scale=scale)
    out = []
    for k in ks:
        c, t = model.project(s[i], n_modes=min(int(k), model.n_modes), scale=scale)
        out.append((Mesh(vertices=model.instance(c), faces=model.faces), Mesh(vertices=t.apply(s[i]), faces=faces)))
    return out


def evaluate(shapes, faces, ks=None, *, scale: bool = False, n_samples: int = 200, seed: int = 0,
             surface_points: int = 4000, progress=None) -> QualityReport:
    """Compactness, leave-one-out generalisation and specificity of the model of ``shapes`` (N, V, 3).

    ``progress``: optional callable(done, total) after each left-out shape and each specificity mode count."""
    s = np.asarray(shapes, np.float64)
    n = len(s)
    if n < 3:
        raise ValueError("need at least three shapes to evaluate a model")
    kmax = n - 2  # a model of N - 1 shapes has N - 2 modes
    ks = np.arange(1, kmax + 1) if ks is None else np.asarray([k for k in ks if 1 <= k <= kmax], int)
    aligned = generalized_procrustes(s, scale=scale)[0]
    model = build_model(aligned, faces, variance=None, align=False)  # every non-null mode
    var = model.std ** 2
    compact = (np.cumsum(var) / var.sum())[np.minimum(ks, len(var)) - 1]
    per = np.zeros((n, len(ks)))
    mx = np.zeros((n, len(ks)))
    total = n + len(ks)
    for i in range(n):
        for j, (fit, truth) in enumerate(leave_one_out_fit(s, faces, i, ks, scale=scale)):
            m = surface_metrics(fit, truth, n=surface_points, seed=i)
            per[i, j], mx[i, j] = m["assd"], m["hd"]
        if progress is not None:
            progress(i + 1, total)
    spec, spec_sd = [], []
    for ik, k in enumerate(ks):
        if progress is not None:
            progress(n + ik, total)
        inst, _ = model.sample(n_samples, seed, n_modes=int(k))
        best = np.array([np.sqrt(((x - aligned) ** 2).sum(-1)).mean(-1).min() for x in inst])
        spec.append(best.mean())
        spec_sd.append(best.std())
    return QualityReport(ks=ks, compactness=compact, generalisation_mean=per.mean(0), generalisation_max=mx.mean(0),
                         generalisation_mean_std=per.std(0), specificity=np.array(spec),
                         specificity_std=np.array(spec_sd), per_shape=per)
