"""The objective of reconstruction: loss of the rendered model against the targets, with its gradient.

:class:`Objective` chains the differentiable stages of the forward model, each with an explicit state
(docs/architecture.md):

1. the shape model and pose (:class:`engine.recon.ShapePose`) give the vertices (world mm);
2. the loss' appearance model (:mod:`engine.recon.appearance`) says which surfaces to render (the model's, and
   for the bone X-ray loss an inner one offset by the cortex) and turns their renders into images;
3. the mesh renderer (:class:`engine.mesh.MeshProjector`) renders the path length through each surface (mm);
4. the loss (:mod:`engine.recon.losses`) compares the images with the targets;

then runs the adjoints back in the reverse order and adds the shape prior (and the free displacements'
smoothness term).  Targets are binned per level like the cameras and blurred like the render
(:func:`engine.mesh.finish.soft_blur`, the host form of the renderer's own soft-edge blur).
"""
from __future__ import annotations

import copy

import numpy as np

from ..geometry.camera import bin_image, camera_batch
from ..mesh.finish import soft_blur
from ..mesh.mesh import Mesh, make_mesh
from ..mesh.projector import MeshProjector
from ..mesh.topology import laplacian
from ..ssm.model import ShapeModel
from .config import ReconConfig
from .losses import get_loss
from .shape_pose import Params, ShapePose


def check_inputs(images, cameras):
    """``(images (n, rows, cols) float64, [Camera] * n)``, or a ValueError/TypeError naming what is wrong."""
    cams = camera_batch(cameras)
    imgs = np.asarray(images, np.float64)
    if imgs.ndim == 2:
        imgs = imgs[None]
    if imgs.ndim != 3 or len(imgs) != len(cams):
        raise ValueError(f"need one image per camera: {len(cams)} cameras, images of shape {imgs.shape}")
    for i, (im, c) in enumerate(zip(imgs, cams)):
        if im.shape != (c.rows, c.cols):
            raise ValueError(f"image {i} is {im.shape}, its camera's detector {c.rows}x{c.cols}")
        if not np.all(np.isfinite(im)):
            raise ValueError(f"image {i} contains NaN or inf")
    return imgs, cams


class Objective:
    """The reconstruction's loss and its gradient with respect to every group of unknowns (module doc).

    ``objective(params, free=False) -> (value, grads dict)``; :meth:`set_level` selects the detector bin
    factor; :meth:`prepare` lets the loss place its region of interest around an estimate.  ``config``: the
    :class:`ReconConfig` (loss, prior, smoothness, blur, renderer precision); ``init_vertices`` (V, 3) the
    start (for the inner surface's topology check; default the model's mean); ``shape_pose`` to share one.
    """

    def __init__(self, images, cameras, model: ShapeModel, config: ReconConfig | None = None, *,
                 init_vertices=None, shape_pose: ShapePose | None = None):
        self.config = ReconConfig() if config is None else config
        if not isinstance(self.config, ReconConfig):
            raise TypeError(f"config must be an engine.recon.ReconConfig, got {type(self.config).__name__}")
        cfg = self.config
        self.images, self.cameras = check_inputs(images, cameras)
        self.base_loss = copy.deepcopy(get_loss(cfg.loss))  # its region of interest is this objective's
        self.loss = self.base_loss
        self.appearance = self.base_loss.appearance
        self.model = model
        self.shape_pose = ShapePose(model) if shape_pose is None else shape_pose
        self.k = model.n_modes if cfg.n_modes is None else min(int(cfg.n_modes), model.n_modes)
        v0 = model.mean if init_vertices is None else init_vertices
        make_mesh(v0, model.faces, name="model instance")  # validates the model's topology
        surfaces = self.appearance.surfaces(v0, model.faces)
        self.projector = MeshProjector([Mesh(vertices=s, faces=model.faces) for s in surfaces],
                                       list(self.appearance.surface_names),
                                       max_hits=cfg.max_hits * len(surfaces), precision=cfg.precision)
        self._lap = None
        self.set_level(1)

    @property
    def prior_weight(self) -> float:
        return self.config.prior_weight

    def set_level(self, factor: int) -> None:
        """Use the detector binned by ``factor`` (targets binned, and blurred like the render)."""
        f = int(factor)
        self.loss = self.base_loss.at_level(f)
        self.level_cameras = [c.binned(f) if f > 1 else c for c in self.cameras]
        target = bin_image(self.images, f) if f > 1 else self.images
        sigma = self.config.soft_sigma_px if self.loss.blur_target else 0.0
        self.projector.soft_sigma_px = sigma
        self.level_targets = soft_blur(target, sigma)

    def render(self, params: Params, record: bool = True) -> np.ndarray:
        """Path lengths (mm) through the appearance's surfaces at the current level: (n, rows, cols) for one
        surface, (n, S, rows, cols) for several (the bone X-ray loss: outer, then cortex-offset inner).
        ``record=False``: no gradient will be asked for this render (faster)."""
        r = self._render(params, record)[0]
        return r[:, 0] if r.shape[1] == 1 else r

    def images_of(self, params: Params) -> np.ndarray:
        """The appearance's images of the posed instance at the current level (what the loss compares)."""
        return self.appearance.forward(self._render(params, False)[0])[0]

    def _render(self, params: Params, record: bool):
        """((n, S, rows, cols) path lengths, the mesh projector's state for its VJP or None, the vertices)."""
        x = self.shape_pose.vertices(params)
        self.projector.set_vertices(np.concatenate(self.appearance.surfaces(x, self.model.faces)))
        if record:
            img, state = self.projector.forward(self.level_cameras)
        else:
            img, state = self.projector(self.level_cameras, record=False), None
        return img.astype(np.float64), state, x

    def _prior(self, params: Params) -> float:
        c = params.shape[:self.k]
        return 0.5 * self.prior_weight * float(c @ c)

    def value(self, params: Params, place_roi: bool = False) -> float:
        """The loss (with the prior, without free displacements) and no gradient; with ``place_roi`` the
        loss is first prepared around this estimate (:meth:`prepare`, same render)."""
        images = self.images_of(params)
        if place_roi:
            self.loss.prepare(images)
        return float(self.loss(images, self.level_targets)[0]) + self._prior(params)

    def prepare(self, params: Params) -> None:
        """Let the loss place its region of interest (if it has one) around the estimate ``params``."""
        self.loss.prepare(self.images_of(params))


    def __call__(self, params: Params, free: bool = False):
        renders, state, x = self._render(params, record=True)
        images, a_state = self.appearance.forward(renders)
        val, l_state = self.loss.forward(images, self.level_targets)
        g_renders = self.appearance.vjp(a_state, self.loss.vjp(l_state))
        g_all = self.projector.vjp(state, g_renders)
        nv = self.model.n_vertices
        gx = self.appearance.surfaces_vjp(x, self.model.faces, [g_all[i * nv:(i + 1) * nv]
                                                                 for i in range(renders.shape[1])])
        grads = self.shape_pose.backward(params, gx).as_dict()
        c = params.shape
        val += self._prior(params)
        grads["shape"] = grads["shape"] + self.prior_weight * c
        grads["shape"][self.k:] = 0.0
        if free:
            if self._lap is None:
                self._lap = laplacian(self.model.faces, self.model.n_vertices)
            ld = self._lap @ params.free
            val += 0.5 * self.config.smoothness * float((ld ** 2).sum())
            grads["free"] = grads["free"] + self.config.smoothness * (self._lap.T @ ld)
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
