"""Adam (Kingma & Ba, ICLR 2015) over named parameter groups, each with its own learning rate.

A learning rate is the largest step per iteration in the group's own units (SD of a
shape coefficient, radian, mm, log scale, mm of displacement): Adam normalises the
gradient per parameter, so ``lr`` is roughly the step size far from the optimum.
"""
from __future__ import annotations

import numpy as np


class Adam:
    """``step(params, grads)`` updates a dict of arrays in place; groups with lr 0 (or absent) stay fixed."""

    def __init__(self, lrs: dict, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lrs = dict(lrs)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m, self.v, self.t = {}, {}, 0

    def set_lr(self, group: str, lr: float) -> None:
        self.lrs[group] = float(lr)

    def reset(self) -> None:
        """Forget the moments (use after changing the problem, e.g. a new resolution level)."""
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        for g, lr in self.lrs.items():
            if not lr or g not in grads:
                continue
            grad = np.asarray(grads[g], np.float64)
            m = self.m.get(g, np.zeros_like(grad))
            v = self.v.get(g, np.zeros_like(grad))
            m = self.b1 * m + (1 - self.b1) * grad
            v = self.b2 * v + (1 - self.b2) * grad ** 2
            self.m[g], self.v[g] = m, v
            mh = m / (1 - self.b1 ** self.t)
            vh = v / (1 - self.b2 ** self.t)
            params[g] -= lr * mh / (np.sqrt(vh) + self.eps)
