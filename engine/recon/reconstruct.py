"""3D shape from X-ray images: fit a shape model's coefficients and pose by gradient descent.

The model instance (:class:`ShapePose`) is rendered by the differentiable mesh
renderer (:class:`engine.mesh.MeshProjector`: path length through the bone, mm)
for every view; an image loss (:mod:`engine.recon.losses`) compares it with the
target images; the loss gradient flows back through the renderer to the vertices
and through :meth:`ShapePose.backward` to the unknowns, which Adam updates with a
learning rate per group.  A Mahalanobis prior ``w/2 |c|^2`` keeps the shape
plausible (coefficients are in standard deviations).

Schedule (:class:`Stage`): coarse to fine over detector bins (the targets are
binned, the cameras read out in bins, :meth:`engine.Camera.binned`), first the
pose alone, then pose and shape, optionally a last stage that frees the vertices
(per-vertex displacements with a graph-Laplacian smoothness term
``mu/2 |L d|^2``) for detail the model cannot express.  Each stage stops after
its iterations or when its best loss has not improved by ``tol`` (relative) for
``patience`` iterations; the best parameters of a stage start the next.

Frames: targets and cameras in world mm; the model in its own frame; the result's
``world_from_model`` maps one to the other (similarity).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, sparse

from ..geometry.camera import Camera, bin_image
from ..mesh.mesh import Mesh, make_mesh, save_mesh
from ..mesh.projector import MeshProjector
from ..ssm.model import ShapeModel
from .adam import Adam
from .bone_xray import offset_surface, offset_surface_vjp
from .named_losses import get_loss
from .shape_pose import Params, ShapePose

DEFAULT_LR = {"shape": 0.1, "rotation": np.deg2rad(1.0), "translation": 1.0, "scale": 0.003, "free": 0.1}


@dataclass(frozen=True)
class Stage:
    """One stage of the schedule: detector bin factor, iterations, groups optimised, learning-rate multiplier."""

    factor: int
    iterations: int
    groups: tuple = ("shape", "rotation", "translation")
    lr_scale: float = 1.0


def default_schedule(scale: bool = False, free_iterations: int = 0, detector_px: int | None = None,
                     min_level_px: int = 48, pose_first: bool = False) -> list:
    """Bins 4 -> 2 -> 1: pose alone, then pose + shape at each level, then optionally free vertices.

    With ``detector_px`` (the smaller detector side), levels coarser than ``min_level_px`` pixels are
    skipped (their iterations go to the coarsest level kept).  ``pose_first``: the pose alone at every
    level but the finest, then pose + shape at the two finest levels (for X-ray losses, where shape
    freedom early on fits the wrong edges)."""
    pose = ("rotation", "translation") + (("scale",) if scale else ())
    full = ("shape",) + pose
    factors = [f for f in (4, 2) if detector_px is None or detector_px // f >= min_level_px]
    first = factors[0] if factors else 1
    if pose_first:
        levels = factors + [1]
        stages = [Stage(f, 60, pose, 2.0 if i == 0 else 1.0) for i, f in enumerate(factors)] or \
            [Stage(1, 60, pose, 2.0)]
        stages += [Stage(f, 60, full, 0.5 if f > 1 else 0.25) for f in levels[-2:]]
    else:
        stages = [Stage(first, 40, pose, 2.0), Stage(first, 80, full, 1.0)]
        stages += [Stage(f, 60, full, 0.5) for f in factors[1:]]
        stages.append(Stage(1, 40, full, 0.25))
    if free_iterations:
        stages.append(Stage(1, free_iterations, ("free",), 1.0))
    return stages


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


def _laplacian(faces, n) -> sparse.csr_matrix:
    """Uniform graph Laplacian ``L = I - D^-1 A`` of the mesh's edges, (n, n)."""
    f = np.asarray(faces)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    a = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    deg = np.asarray(a.sum(1)).ravel()
    return (sparse.identity(n) - sparse.diags(1.0 / deg) @ a).tocsr()


def _progress(stream, stage, n_stages, it, n_it, loss):
    width = 24
    done = int(width * (it + 1) / n_it)
    stream.write(f"\rstage {stage + 1}/{n_stages} [{'#' * done}{'.' * (width - done)}] {it + 1:4d}/{n_it} "
                 f"loss {loss:.5f}")
    stream.flush()


def _check_inputs(images, cameras):
    cams = [cameras] if isinstance(cameras, Camera) else list(cameras)
    imgs = np.asarray(images, np.float64)
    if imgs.ndim == 2:
        imgs = imgs[None]
    if imgs.ndim != 3 or len(imgs) != len(cams) or not cams:
        raise ValueError(f"need one image per camera: {len(cams)} cameras, images of shape {imgs.shape}")
    for i, (im, c) in enumerate(zip(imgs, cams)):
        if not isinstance(c, Camera):
            raise TypeError(f"camera {i} is not an engine.Camera")
        if im.shape != (c.rows, c.cols):
            raise ValueError(f"image {i} is {im.shape}, its camera's detector {c.rows}x{c.cols}")
        if not np.all(np.isfinite(im)):
            raise ValueError(f"image {i} contains NaN or inf")
    if len({(c.rows, c.cols) for c in cams}) > 1:
        raise ValueError("all views must share the detector shape")
    return imgs, cams


class Objective:
    """The reconstruction's loss and its gradient with respect to every group of unknowns.

    ``objective(params) -> (value, grads dict)``: render the posed instance for the
    current level's cameras, compare with the level's targets, add the prior (and
    the smoothness term of the free displacements), back-propagate.  :meth:`set_level`
    selects the detector bin factor.  ``precision=64`` for gradient checks.
    """

    def __init__(self, images, cameras, model: ShapeModel, *, loss="ncc", prior_weight: float = 1e-3,
                 n_modes: int | None = None, smoothness: float = 10.0, soft_sigma_px: float = 1.0,
                 max_hits: int = 64, precision: int = 32, init_vertices=None, shape_pose: ShapePose | None = None):
        self.images, self.cameras = _check_inputs(images, cameras)
        self.base_loss = get_loss(loss)
        self.loss = self.base_loss
        self.model = model
        self.shape_pose = ShapePose(model) if shape_pose is None else shape_pose
        self.prior_weight = float(prior_weight)
        self.k = model.n_modes if n_modes is None else min(int(n_modes), model.n_modes)
        self.smoothness = float(smoothness)
        self.soft_sigma_px = float(soft_sigma_px)
        v0 = model.mean if init_vertices is None else init_vertices
        mesh = make_mesh(v0, model.faces, name="model instance")  # validates the model's topology
        # two-channel losses (BoneXrayNCC) see the outer surface and an inner one offset by the cortex
        self.shell_mm = getattr(self.base_loss, "shell_mm", None) if getattr(self.base_loss, "channels", 1) == 2 \
            else None
        if self.shell_mm is None:
            self.projector = MeshProjector(mesh, "bone", max_hits=max_hits, precision=precision)
        else:
            inner = Mesh(vertices=offset_surface(v0, model.faces, self.shell_mm), faces=model.faces)
            self.projector = MeshProjector([mesh, inner], ["outer", "inner"], max_hits=2 * max_hits,
                                           precision=precision)
        self._lap = None
        self.set_level(1)

    def set_level(self, factor: int) -> None:
        """Use the detector binned by ``factor`` (targets binned and blurred like the render)."""
        f = int(factor)
        self.loss = self.base_loss.at_level(f) if hasattr(self.base_loss, "at_level") else self.base_loss
        self.level_cameras = [c.binned(f) if f > 1 else c for c in self.cameras]
        target = bin_image(self.images, f) if f > 1 else self.images
        blur = self.soft_sigma_px > 0 and getattr(self.loss, "name", "") != "silhouette"
        self.projector.soft_sigma_px = self.soft_sigma_px if blur else 0.0
        if blur:
            target = ndimage.gaussian_filter(target, (0, self.soft_sigma_px, self.soft_sigma_px), mode="constant",
                                             truncate=4.0)
        self.level_targets = target

    def render(self, params: Params, record: bool = True) -> np.ndarray:
        """(n, rows, cols) path lengths (mm) of the posed instance at the current level; for a two-channel
        loss (n, 2, rows, cols): through the outer surface and through the inner (cortex-offset) one.
        ``record=False``: no gradient will be asked for this render (faster)."""
        return self._render(params, record)[0]

    def _render(self, params: Params, record: bool):
        """(path lengths as :meth:`render`, the mesh projector's state for its VJP or None, the vertices)."""
        x = self.shape_pose.vertices(params)
        verts = x if self.shell_mm is None else np.concatenate([x, offset_surface(x, self.model.faces, self.shell_mm)])
        self.projector.set_vertices(verts)
        if record:
            img, state = self.projector.forward(self.level_cameras)
        else:
            img, state = self.projector(self.level_cameras, record=False), None
        img = img.astype(np.float64)
        return (img[:, 0] if self.shell_mm is None else img), state, x

    def value(self, params: Params, place_roi: bool = False) -> float:
        """The loss (with the prior, without free displacements) and no gradient; with ``place_roi`` the
        loss' region of interest is first placed around this render (:meth:`update_roi`, same render)."""
        rendered = self.render(params, record=False)
        if place_roi and hasattr(self.loss, "set_roi"):
            self.loss.set_roi(rendered)
        c = params.shape[:self.k]
        return float(self.loss(rendered, self.level_targets)[0]) + 0.5 * self.prior_weight * float(c @ c)

    def update_roi(self, params: Params) -> None:
        """Let a loss with a region of interest (``set_roi``) place it around the current estimate."""
        if hasattr(self.loss, "set_roi"):
            self.loss.set_roi(self.render(params, record=False))


    def __call__(self, params: Params, free: bool = False):
        rendered, state, x = self._render(params, record=True)  # explicit state: no reliance on "the last call"
        val, g_img = self.loss(rendered, self.level_targets)
        if self.shell_mm is None:
            gx = self.projector.vjp(state, g_img[:, None])
        else:
            gx = self.projector.vjp(state, g_img)
            nv = self.model.n_vertices
            gx = gx[:nv] + offset_surface_vjp(x, self.model.faces, self.shell_mm, gx[nv:])
        grads = self.shape_pose.backward(params, gx).as_dict()
        c = params.shape
        val += 0.5 * self.prior_weight * float(c[:self.k] @ c[:self.k])
        grads["shape"] = grads["shape"] + self.prior_weight * c
        grads["shape"][self.k:] = 0.0
        if free:
            if self._lap is None:
                self._lap = _laplacian(self.model.faces, self.model.n_vertices)
            ld = self._lap @ params.free
            val += 0.5 * self.smoothness * float((ld ** 2).sum())
            grads["free"] = grads["free"] + self.smoothness * (self._lap.T @ ld)
        return float(val), grads


def translation_search(objective: Objective, params: Params, extent_mm: float, step_mm: float,
                       axes=None) -> Params:
    """The start on a grid of translations (``-extent..extent`` mm by ``step``, along ``axes``, default the
    world axes) with the lowest loss at the objective's current level (each candidate with its own region
    of interest).  A cheap global step before gradient descent: the image losses of thin bone are sharp,
    and a start off by about a bone's width can settle on the wrong edges."""
    offsets = np.arange(-extent_mm, extent_mm + 1e-9, step_mm)
    basis = np.eye(3) if axes is None else np.asarray(axes, np.float64)
    best, best_p = np.inf, params
    for d in np.stack(np.meshgrid(*[offsets] * len(basis), indexing="ij"), -1).reshape(-1, len(basis)):
        q = params.copy()
        q.translation = params.translation + d @ basis
        val = objective.value(q, place_roi=True)
        if val < best:
            best, best_p = val, q
    return best_p


def reconstruct(images, cameras, model: ShapeModel, init=None, *, loss="ncc", schedule=None,
                lr: dict | None = None, prior_weight: float = 1e-3, n_modes: int | None = None,
                scale: bool = False, free_iterations: int = 0, smoothness: float = 10.0, fix_depth=None,
                soft_sigma_px: float = 1.0, max_hits: int = 64, tol: float = 1e-4, patience: int = 15,
                search_mm=None, progress: bool = False, callback=None) -> ReconResult:
    """Reconstruct a shape from one or more X-ray views (see module doc).

    Parameters
    ----------
    images : (n, rows, cols) or (rows, cols) array
        Targets, one per camera; for X-ray intensities pass their line integral
        (:func:`engine.recon.losses.line_integral`); for ``loss="silhouette"`` a bone mask.
    cameras : Camera or list of n Cameras (world mm)
    model : ShapeModel (model frame mm; subdivide it first for smooth rendering)
    init : 4x4 array or dict, optional
        Initial ``world_from_model`` (rigid or similarity), or ``{"pose": 4x4, "coeffs": (k,)}``.
    loss : str or callable
        ``"ncc"``, ``"gncc"``, ``"mse"``, ``"silhouette"`` or an object as in :mod:`engine.recon.losses`.
    schedule : list of Stage, optional
        Default :func:`default_schedule` (with ``scale`` and ``free_iterations``).
    lr : dict, optional
        Learning rates per group, overriding :data:`DEFAULT_LR`.
    prior_weight : float
        ``w`` of the prior ``w/2 |c|^2`` (coefficients in standard deviations).
    n_modes : int, optional
        Optimise only the first modes (default all).
    smoothness : float
        ``mu`` of the free-vertex stage's Laplacian term.
    fix_depth : bool, optional
        Keep the model's distance along the (first) camera's principal ray at its initial value:
        from one view, depth is poorly determined by a gain-invariant loss (magnification trades
        against size), so it is better taken from the set-up (table height, source distance).
        Default: True for one view, False otherwise.
    soft_sigma_px : float
        Gaussian blur (pixels of the current level) applied to render and target alike.
    search_mm : (extent, step), optional
        Before the first stage, try the initial pose shifted on a grid of translations (mm; in the
        detector plane only when the depth is fixed) at the first stage's level and start from the best
        (:func:`translation_search`); 5 x 5 x 5 candidates for ``(16, 8)``.
    progress : bool
        A progress bar on stderr.
    callback : callable, optional
        ``callback(state)`` after each iteration with a dict (stage, iteration, loss, vertices (V, 3) world,
        world_from_model, coeffs); returning ``False`` stops the reconstruction.
    """
    t0 = time.perf_counter()
    sp = ShapePose(model)
    params = sp.initial(init.get("pose"), init.get("coeffs")) if isinstance(init, dict) else sp.initial(init)
    x0 = sp.vertices(params)
    objective = Objective(images, cameras, model, loss=loss, prior_weight=prior_weight, n_modes=n_modes,
                          smoothness=smoothness, soft_sigma_px=soft_sigma_px, max_hits=max_hits,
                          init_vertices=x0, shape_pose=sp)
    initial_mesh = Mesh(vertices=x0, faces=model.faces)
    lrs = {**DEFAULT_LR, **(lr or {})}
    cams = objective.cameras
    stages = (default_schedule(scale, free_iterations, min(cams[0].rows, cams[0].cols)) if schedule is None
              else list(schedule))
    fix = (len(cams) == 1) if fix_depth is None else bool(fix_depth)
    depth_axis, start = cams[0].principal_axis, params.translation.copy()
    history, stage_of = [], []
    stop = False
    if search_mm is not None and stages:
        objective.set_level(stages[0].factor)
        axes = None
        if fix:  # the two directions across the principal ray
            axes = np.linalg.svd(np.eye(3) - np.outer(depth_axis, depth_axis))[0][:, :2].T
        params = translation_search(objective, params, float(search_mm[0]), float(search_mm[1]), axes)
        start = params.translation.copy()
    for si, st in enumerate(stages):
        objective.set_level(st.factor)
        objective.update_roi(params)
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
