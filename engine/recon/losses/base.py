"""The loss protocol of reconstruction: what :class:`engine.recon.Objective` may ask of a loss, and nothing else.

A loss compares the images of the model (made by its :attr:`Loss.appearance` from the mesh renders, see
:mod:`engine.recon.appearance`) with the targets, stacks of views ``(n, rows, cols)``.  It follows the
differentiable-stage convention of docs/architecture.md:

- ``forward(images, target) -> (value, state)``: the value (float, averaged over the views) and an explicit
  state for the adjoint; ``vjp(state, grad=1.0) -> d (grad * value) / d images``, float64, the shape of
  ``images``; exact (it flows back through the renderer: tests check it against central differences);
- ``__call__(images, target) -> (value, d value / d images)``: both at once;
- ``appearance``: the appearance model whose images it compares (default :class:`PathLength`);
- ``blur_target``: whether the targets get the render's soft-edge blur (a mask target does not);
- ``at_level(factor) -> Loss``: the loss for images binned by ``factor`` (coarse to fine; widths in pixels
  scale); default itself;
- ``prepare(images)``: called with the images of the current estimate at the start of each stage (and of each
  candidate of a start search), e.g. to place a region of interest around it; held until the next call; default
  nothing.

Subclasses of :class:`Loss` implement :meth:`Loss.evaluate` (value and gradient together, which is how these
losses are computed); a plain function ``f(images, target) -> (value, grad)`` becomes a loss with
:class:`FunctionLoss`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..appearance import PathLength

EPS = 1e-12


def views(a) -> np.ndarray:
    """float64 stack of views: a (rows, cols) image becomes (1, rows, cols)."""
    a = np.asarray(a, np.float64)
    return a[None] if a.ndim == 2 else a


@dataclass(frozen=True, eq=False)
class LossState:
    """What :meth:`Loss.vjp` needs of one :meth:`Loss.forward`: d value / d images."""

    grad: np.ndarray


class Loss:
    """Base of the image losses (module doc): subclasses set :attr:`name` and implement :meth:`evaluate`."""

    name = "loss"
    appearance = PathLength()
    blur_target = True

    def evaluate(self, images, target):
        """``(value, d value / d images)``."""
        raise NotImplementedError

    def __call__(self, images, target):
        return self.evaluate(images, target)

    def forward(self, images, target):
        value, grad = self.evaluate(images, target)
        return float(value), LossState(np.asarray(grad, np.float64))

    def vjp(self, state: LossState, grad: float = 1.0) -> np.ndarray:
        return float(grad) * state.grad

    def at_level(self, factor: int) -> "Loss":
        return self

    def prepare(self, images) -> None:
        return None


class FunctionLoss(Loss):
    """A loss from a function ``f(images, target) -> (value, d value / d images)`` (path-length appearance)."""

    def __init__(self, fn, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"a loss must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "name", None) or getattr(fn, "__name__", type(fn).__name__)

    def evaluate(self, images, target):
        return self.fn(images, target)
