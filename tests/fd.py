"""Central finite-difference checks shared by the gradient tests."""
import numpy as np
import pytest


def fd_check(f, grad, x, rng, n_dirs=3, h=1e-5, rtol=1e-5, unit=False):
    """Directional derivatives of f at x along random directions against <grad, dir> (``unit``: directions of
    length 1, so that ``h`` is the step's length whatever the size of ``x``)."""
    for _ in range(n_dirs):
        d = rng.standard_normal(x.shape)
        if unit:
            d /= np.linalg.norm(d)
        fd = (f(x + h * d) - f(x - h * d)) / (2 * h)
        an = float((grad * d).sum())
        assert an == pytest.approx(fd, rel=rtol, abs=1e-9 * max(1.0, abs(fd))), (an, fd)


POSE_AND_SHAPE_STEPS = (("shape", 1e-6), ("rotation", 1e-7), ("translation", 1e-6))


def fd_check_params(objective, params, grads, rng, steps=POSE_AND_SHAPE_STEPS, n_dirs=2, rtol=1e-3, **call):
    """:func:`fd_check` of a reconstruction objective's gradient, group by group (``steps``: (group, h)),
    ``objective(params, **call)[0]`` being the value.  Small steps: the render is piecewise smooth (rays
    crossing triangle edges), so finite differences converge as h -> 0."""
    for group, h in steps:
        def f(v, g=group):
            q = params.copy()
            setattr(q, g, v)
            return objective(q, **call)[0]
        fd_check(f, grads[group], getattr(params, group), rng, n_dirs=n_dirs, h=h, rtol=rtol)
