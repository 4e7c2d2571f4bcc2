"""3D shape from X-ray images: fit a shape model's coefficients and pose by gradient descent.

``reconstruct(images, cameras, model, init, config)``: the model instance (:class:`ShapePose`) is rendered by
the differentiable mesh renderer for every view and compared with the targets by the configured loss
(:class:`engine.recon.Objective`: appearance, renderer, loss, each with its adjoint); the gradient flows back
to the unknowns, which Adam updates with a learning rate per group.  A Mahalanobis prior ``w/2 |c|^2`` keeps
the shape plausible (coefficients are in standard deviations).

Schedule (:mod:`engine.recon.schedule`): coarse to fine over detector bins (the targets are binned, the cameras
read out in bins, :meth:`engine.Camera.binned`), first the pose alone, then pose and shape, optionally a last
stage that frees the vertices (per-vertex displacements with a graph-Laplacian smoothness term
``mu/2 |L d|^2``) for detail the model cannot express.  Each stage stops after its iterations or when its best
loss has not improved by ``tol`` (relative) for ``patience`` iterations; the best parameters of a stage start
the next.  Every setting is a field of the frozen :class:`ReconConfig`.

Frames: targets and cameras in world mm; the model in its own frame; the result's ``world_from_model`` maps one
to the other (similarity).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..mesh.mesh import Mesh, save_mesh
from ..ssm.model import ShapeModel
from .adam import Adam
from .config import ReconConfig
from .objective import Objective, translation_search
from .shape_pose import Params, ShapePose


@dataclass
class ReconResult:
    """What :func:`reconstruct` found; meshes in world mm."""

    mesh: Mesh
    coeffs: np.ndarray
    world_from_model: np.ndarray
    params: Params = field(repr=False)
    loss_history: np.ndarray = field(repr=False)
    stage_history: np.ndarray = field(repr=False)
    time_s: float = 0.0
    iterations: int = 0
    initial_mesh: Mesh | None = field(default=None, repr=False)

    @property
    def final_loss(self) -> float:
        return float(self.loss_history[-1]) if len(self.loss_history) else float("nan")

    def save_mesh(self, path) -> Path:
        """Write the reconstructed mesh (PLY, STL, OBJ, OFF)."""
        return save_mesh(path, self.mesh)

    def save_overlay(self, path, images, cameras) -> Path:
        """PNG: each target view with the initial (blue) and reconstructed (red) outlines."""
        from .overlay import save_overlay

        meshes = {"result": self.mesh} if self.initial_mesh is None else {"initial": self.initial_mesh,
                                                                            "result": self.mesh}
        return save_overlay(path, images, cameras, meshes)


def _progress(stream, stage, n_stages, it, n_it, loss):
    width = 24
    done = int(width * (it + 1) / n_it)
    stream.write(f"\rstage {stage + 1}/{n_stages} [{'#' * done}{'.' * (width - done)}] {it + 1:4d}/{n_it} "
                 f"loss {loss:.5f}")
    stream.flush()


def reconstruct(images, cameras, model: ShapeModel, init=None, config: ReconConfig | None = None, *,
                progress: bool = False, callback=None) -> ReconResult:
    """Reconstruct a shape from one or more X-ray views (see module doc).

    Parameters
    ----------
    images : (n, rows, cols) or (rows, cols) array
        Targets, one per camera; for X-ray intensities pass their line integral
        (:func:`engine.recon.line_integral`); for the ``silhouette`` loss a bone mask.
    cameras : Camera or list of n Cameras (world mm)
    model : ShapeModel (model frame mm; subdivide it first for smooth rendering)
    init : 4x4 array or dict, optional
        Initial ``world_from_model`` (rigid or similarity), or ``{"pose": 4x4, "coeffs": (k,)}``.
    config : ReconConfig, optional
        Loss, schedule, learning rates, prior, search...; default ``ReconConfig()`` (NCC, the default
        schedule); ``ReconConfig.xray(detector_px)`` for X-ray targets.
    progress : bool
        A progress bar on stderr.
    callback : callable, optional
        ``callback(state)`` after each iteration with a dict (stage, iteration, loss, vertices (V, 3) world,
        world_from_model, coeffs); returning ``False`` stops the reconstruction.
    """
    cfg = ReconConfig() if config is None else config
    if not isinstance(cfg, ReconConfig):
        raise TypeError(f"config must be an engine.recon.ReconConfig, got {type(cfg).__name__}")
    t0 = time.perf_counter()
    sp = ShapePose(model)
    params = sp.initial(init.get("pose"), init.get("coeffs")) if isinstance(init, dict) else sp.initial(init)
    x0 = sp.vertices(params)
    objective = Objective(images, cameras, model, cfg, init_vertices=x0, shape_pose=sp)
    initial_mesh = Mesh(vertices=x0, faces=model.faces)
    lrs = cfg.learning_rates
    cams = objective.cameras
    stages = cfg.stages(min(cams[0].rows, cams[0].cols))
    fix = (len(cams) == 1) if cfg.fix_depth is None else bool(cfg.fix_depth)
    tol, patience = cfg.tol, cfg.patience
    depth_axis, start = cams[0].principal_axis, params.translation.copy()
    history, stage_of = [], []
    stop = False
    if cfg.search_mm is not None and stages:
        objective.set_level(stages[0].factor)
        axes = None
        if fix:  # the two directions across the principal ray
            axes = np.linalg.svd(np.eye(3) - np.outer(depth_axis, depth_axis))[0][:, :2].T
        params = translation_search(objective, params, cfg.search_mm[0], cfg.search_mm[1], axes)
        start = params.translation.copy()
    for si, st in enumerate(stages):
        objective.set_level(st.factor)
        objective.prepare(params)
        opt = Adam({g: lrs[g] * st.lr_scale for g in st.groups})
        best, best_p, since = np.inf, params.copy(), 0
        for it in range(int(st.iterations)):
            val, grads = objective(params, free="free" in st.groups)
            history.append(val)
            stage_of.append(si)
            if val < best * (1 - tol) or not np.isfinite(best):
                best, best_p, since = val, params.copy(), 0
            else:
                since += 1
            if progress:
                _progress(sys.stderr, si, len(stages), it, int(st.iterations), val)
            if callback is not None and callback({"stage": si, "iteration": it, "loss": val,
                                                  "vertices": sp.vertices(params),
                                                  "world_from_model": sp.world_from_model(params),
                                                  "coeffs": params.shape.copy()}) is False:
                stop = True
                break
            if since >= patience:
                break
            opt.step(params.as_dict(), grads)
            if fix:
                params.translation -= depth_axis * float(depth_axis @ (params.translation - start))
        if not stop:
            params = best_p
        if progress:
            sys.stderr.write("\n")
        if stop:
            break
    verts = sp.vertices(params)
    return ReconResult(mesh=Mesh(vertices=verts, faces=model.faces), coeffs=params.shape.copy(),
                       world_from_model=sp.world_from_model(params), params=params,
                       loss_history=np.asarray(history), stage_history=np.asarray(stage_of),
                       time_s=time.perf_counter() - t0, iterations=len(history), initial_mesh=initial_mesh)
