"""Central finite-difference checks shared by the gradient tests."""
import pytest


def fd_check(f, grad, x, rng, n_dirs=3, h=1e-5, rtol=1e-5):
    """Directional derivatives of f at x along random directions against <grad, dir>."""
    for _ in range(n_dirs):
        d = rng.standard_normal(x.shape)
        fd = (f(x + h * d) - f(x - h * d)) / (2 * h)
        an = float((grad * d).sum())
        assert an == pytest.approx(fd, rel=rtol, abs=1e-9 * max(1.0, abs(fd))), (an, fd)
