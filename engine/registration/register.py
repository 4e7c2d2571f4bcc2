"""Rigid 2D/3D registration of a CT to X-ray images by gradient descent.

The unknown is the CT's rigid pose in the world frame, ``p = (delta, tau)`` (rotation vector, rad; translation,
mm) about the volume's centre (:mod:`engine.geometry.transforms`); pose 0 renders the cameras as given.  Each view's
DRR is an attenuation image ``sum_m mu_m L_m`` (per-material line integrals of
:class:`~engine.volume.VolumeProjector` weighted by the materials' mass attenuation at an effective energy,
1/mm * mm), compared with the X-ray (as ``-ln(I/I0)``, or any image whose intensity is an increasing, roughly
affine function of attenuation) by gradient correlation (the NCC of the images' row and column differences;
plain NCC on request); the loss is ``1 - mean similarity``.  Gradients:
``NCC -> DRR -> projector VJP (pose of a move composed on the right) -> pose parameters``.

Optimiser: Adam with one step size for the rotation (rad) and one for the translation (mm), coarse to fine over
detector binnings (each level starts where the last ended), stopping a level when the loss has not improved by
``tol`` over ``patience`` iterations.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ..geometry import bin_image
from ..geometry.transforms import perturb, pose_parameter_gradient
from .similarity import gradient_ncc_grad, multiscale_ncc_grad, ncc_grad, patch_ncc_grad

SIMILARITIES = {"ncc": ncc_grad, "gncc": gradient_ncc_grad, "patch_ncc": patch_ncc_grad,
                "multiscale_ncc": multiscale_ncc_grad}


@dataclass
class RegistrationResult:
    """The registered pose (6,) (rad, mm), the loss per iteration, the level of each iteration, the time (s)
    and the final NCC per view."""

    pose: np.ndarray
    losses: list = field(default_factory=list)
    levels: list = field(default_factory=list)
    seconds: float = 0.0
    ncc: list = field(default_factory=list)

    def matrix(self, center) -> np.ndarray:
        """(4, 4) world-frame move of the CT the registration found."""
        return perturb(np.eye(4), self.pose[:3], self.pose[3:], center=center)


def attenuation_weights(materials, kev: float = 60.0) -> np.ndarray:
    """Mass attenuation (cm^2/g) of each material at ``kev``: DRR weights for g/cm^2 line integrals."""
    from ..physics.attenuation import get_material

    return np.array([float(get_material(m).mass_attenuation([kev])[0]) for m in materials])


class Registration:
    """Registers a :class:`~engine.volume.VolumeProjector`'s CT to X-ray images seen by known cameras.

    Parameters
    ----------
    projector : VolumeProjector
    cameras : sequence of Camera
        One per target image (same detector shape).
    targets : sequence of (rows, cols) arrays
        The X-rays, as attenuation (e.g. ``-ln(I/I0)``).
    kev : float
        Effective energy of the DRR's material weights.
    similarity : {"gncc", "ncc"}
        ``"gncc"`` (default): gradient correlation, blind to the smooth intensity changes scatter adds;
        ``"ncc"``: plain normalised cross-correlation (biased by scatter: see ``demos/register_ct.py``);
        ``"patch_ncc"``: mean NCC over 8 x 8-pixel tiles (local gain and offset); ``"multiscale_ncc"``: mean NCC
        of the image block-averaged 1x, 2x and 4x.
    physics : PhysicsChain, optional
        Render the DRRs through this physics model (``output="line_integral"``: spectrum, detector, scatter)
        instead of the attenuation-weighted line integrals, differentiated through its VJP; when it models the
        X-rays (a calibrated system, or a simulation), the similarity's optimum is not biased by scatter or beam
        hardening.  Its pixel size should be the cameras' (it is rescaled for binned levels).
    """

    def __init__(self, projector, cameras, targets, *, kev: float = 60.0, similarity: str = "gncc",
                 physics=None):
        if physics is not None and physics.output != "line_integral":
            raise ValueError("the physics model must output line integrals -ln(I/I0), like the targets")
        self.physics = physics
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(SIMILARITIES)}, got {similarity!r}")
        self.similarity = similarity
        self.projector = projector
        self.cameras = list(cameras)
        self.targets = [np.asarray(t, np.float64) for t in targets]
        if len(self.cameras) != len(self.targets) or not self.cameras:
            raise ValueError("need one target image per camera")
        for cam, t in zip(self.cameras, self.targets):
            if t.shape != (cam.rows, cam.cols):
                raise ValueError(f"target of shape {t.shape} for a {cam.rows}x{cam.cols} camera")
            if not np.all(np.isfinite(t)):
                raise ValueError("a target image contains NaN or inf")
        self.center = projector.volume.center
        self.weights = attenuation_weights(projector.materials, kev)
        self._targets = {1: self.targets}  # binned targets, per binning

    def cameras_at(self, pose, binning: int = 1) -> list:
        """The cameras that see the CT moved by ``pose`` (they move by its inverse), detectors binned."""
        pose = np.asarray(pose, np.float64)
        move_inv = np.linalg.inv(perturb(np.eye(4), pose[:3], pose[3:], center=self.center))
        return [(c.binned(binning) if binning > 1 else c).moved(move_inv) for c in self.cameras]

    def targets_at(self, binning: int = 1) -> list:
        """The target images binned like the detectors (computed once per binning)."""
        if binning not in self._targets:
            self._targets[binning] = [bin_image(t, binning) for t in self.targets]
        return self._targets[binning]

    def _drr(self, paths, cam):
        """``(image, vjp)``: the image compared with a target, from one view's path lengths (M, rows, cols)
        g/cm^2, and the map from d loss / d image to d loss / d paths."""
        if self.physics is None:
            return np.tensordot(self.weights, paths, axes=1), lambda g: self.weights[:, None, None] * g[None]
        self.physics.pixel_spacing = cam.pixel_spacing  # the scatter kernels' pixel scale at this binning
        img, state = self.physics.forward(paths, return_state=True)
        return img, lambda g: self.physics.vjp(state, g)

    def drrs(self, pose, binning: int = 1) -> list:
        """The images the loss compares with the targets, at ``pose`` (DRRs, or the physics model's)."""
        cams = self.cameras_at(pose, binning)
        paths = self.projector(cams).astype(np.float64)
        return [self._drr(p, c)[0] for p, c in zip(paths, cams)]

    def loss_and_grad(self, pose, binning: int = 1):
        """``(loss, d loss / d pose (6,), ncc per view)`` at ``pose`` on detectors binned by ``binning``."""
        pose = np.asarray(pose, np.float64)
        cams = self.cameras_at(pose, binning)
        targets = self.targets_at(binning)
        paths, state = self.projector.forward(cams)  # (n, M, rows, cols) g/cm^2
        paths = paths.astype(np.float64)
        nccs = []
        g_paths = np.empty_like(paths)
        for i, t in enumerate(targets):
            drr, drr_vjp = self._drr(paths[i], cams[i])
            c, g = SIMILARITIES[self.similarity](drr, t)
            nccs.append(c)
            g_paths[i] = drr_vjp(-g / len(targets))  # loss = 1 - mean similarity
        g_right = self.projector.vjp(state, g_paths, center=self.center)["pose"].sum(axis=0)
        return 1.0 - float(np.mean(nccs)), pose_parameter_gradient(pose, g_right), nccs

    def default_levels(self, min_pixels: int = 16, max_binning: int = 8) -> tuple:
        """Binnings 1, 2, 4, ... up to ``max_binning`` that leave at least ``min_pixels`` rows and columns,
        coarse first (a 128^2 detector: 8, 4, 2, 1; the coarsest level widens the capture range: on the chest
        CT a start 31 mm mTRE away that 4, 2, 1 left 25 mm off ends 0.06 mm off)."""
        n = min(min(c.rows, c.cols) for c in self.cameras)
        levels = [1]
        while levels[-1] * 2 <= max_binning and n // (levels[-1] * 2) >= min_pixels:
            levels.append(levels[-1] * 2)
        return tuple(reversed(levels))

    def run(self, pose0=None, *, levels=None, iterations: int = 60, step_rad: float = 0.02,
            step_mm: float = 2.0, tol: float = 1e-5, patience: int = 10, callback=None) -> RegistrationResult:
        """Adam from ``pose0`` (default 0) over the detector binnings ``levels`` (coarse to fine; default
        :meth:`default_levels`), at most ``iterations`` per level; steps ``step_rad`` (rotation) and ``step_mm``
        (translation), halved at every level.  ``callback(level, iteration, loss, pose)`` after each iteration."""
        t0 = time.perf_counter()
        levels = self.default_levels() if levels is None else tuple(levels)
        pose = np.zeros(6) if pose0 is None else np.asarray(pose0, np.float64).copy()
        res = RegistrationResult(pose=pose.copy())
        scale = np.array([step_rad] * 3 + [step_mm] * 3)
        for li, b in enumerate(levels):
            lr = scale / 2 ** li
            m = np.zeros(6)
            v = np.zeros(6)
            best, best_pose, stale = np.inf, pose.copy(), 0
            for it in range(iterations):
                loss, g, _ = self.loss_and_grad(pose, b)
                res.losses.append(loss)
                res.levels.append(b)
                if loss < best - tol:
                    best, best_pose, stale = loss, pose.copy(), 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                mh, vh = m / (1 - 0.9 ** (it + 1)), v / (1 - 0.999 ** (it + 1))
                pose = pose - lr * mh / (np.sqrt(vh) + 1e-12)
                if callback is not None:
                    callback(b, it, loss, pose)
            pose = best_pose
        final, _, nccs = self.loss_and_grad(pose, levels[-1])
        res.pose, res.ncc, res.seconds = pose, nccs, time.perf_counter() - t0
        res.losses.append(final)
        res.levels.append(levels[-1])
        return res
