"""The one place that chooses and initialises Taichi.

Taichi is initialised once, lazily, on the first call of :func:`init` (every
renderer calls it before allocating fields).  The architecture is taken from the
``ENGINE_ARCH`` environment variable (``cpu``, ``cuda`` or ``vulkan``) when set,
otherwise the first that works of CUDA, Vulkan and CPU.  Taichi silently falls
back to the CPU when a GPU backend fails to start, so the arch actually obtained
is read back and reported, and a request that could not be honoured raises.

The default float type is ``float32``; tests that check gradients against finite
differences ask for ``float64`` with ``ENGINE_FLOAT=f64`` or ``init(float_bits=64)``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass

_ARCH_NAMES = ("cpu", "cuda", "vulkan")
_HINTS = {
    "cuda": "no CUDA GPU or driver is usable here (Taichi needs an NVIDIA GPU with its driver)",
    "vulkan": "no Vulkan driver starts here (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1, which "
              "also runs Vulkan on the CPU; or a GPU's Vulkan driver)",
    "cpu": "Taichi's CPU backend did not start",
}


class BackendUnavailable(RuntimeError):
    """The requested Taichi backend cannot start on this machine (the message says why and what to install)."""


@dataclass(frozen=True)
class Backend:
    """What :func:`init` obtained."""

    arch: str  # "cpu", "cuda" or "vulkan"
    float_bits: int  # 32 or 64

    @property
    def is_gpu(self) -> bool:
        return self.arch != "cpu"


_backend: Backend | None = None


def _ti():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # taichi's locale warning
        import taichi as ti
    return ti


def _arch_of(ti, name: str):
    return {"cpu": ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan}[name]


def _current_arch_name(ti) -> str:
    arch = ti.lang.impl.current_cfg().arch
    for name in _ARCH_NAMES:
        if arch == _arch_of(ti, name):
            return name
    return str(arch)


def _has_nvidia_device() -> bool:
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _has_gpu_device() -> bool:
    """True when the machine exposes a hardware GPU node (NVIDIA or DRM render node).

    Without one, a Vulkan driver can only be Mesa's lavapipe, a software rasteriser
    on the CPU that is slower than Taichi's own CPU backend for compute.
    """
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dri/renderD*"))


def _automatic_candidates(float_bits: int) -> list[str]:
    names = ["cuda"] if _has_nvidia_device() else []
    if float_bits == 32 and _has_gpu_device():  # Vulkan has no general f64 support
        names.append("vulkan")
    return names + ["cpu"]


def init(arch: str | None = None, float_bits: int | None = None, verbose: bool | None = None) -> Backend:
    """Initialise Taichi once and return the :class:`Backend` obtained.

    Parameters
    ----------
    arch : {"cpu", "cuda", "vulkan"}, optional
        Requested architecture; default ``$ENGINE_ARCH`` or automatic (CUDA, then
        Vulkan, then CPU).  An explicit request that Taichi cannot honour raises
        ``RuntimeError`` rather than silently running elsewhere.
    float_bits : {32, 64}, optional
        Default real type of kernels; default ``$ENGINE_FLOAT`` (``f32``/``f64``) or 32.
    verbose : bool, optional
        Print the chosen backend to stderr (default: ``$ENGINE_VERBOSE`` set).

    Later calls return the first backend; asking for a different one then raises.  Taichi's own messages
    (its banner, "Starting on arch=...") go to stderr, not among a program's outputs.
    """
    global _backend
    requested = (arch or os.environ.get("ENGINE_ARCH", "")).strip().lower() or None
    if requested is not None and requested not in _ARCH_NAMES:
        raise ValueError(f"ENGINE_ARCH/arch must be one of {_ARCH_NAMES}, got {requested!r}")
    if float_bits is None:
        env = os.environ.get("ENGINE_FLOAT", "f32").strip().lower()
        if env not in ("f32", "f64", "32", "64"):
            raise ValueError(f"ENGINE_FLOAT must be f32 or f64, got {env!r}")
        float_bits = 64 if "64" in env else 32
    if float_bits not in (32, 64):
        raise ValueError(f"float_bits must be 32 or 64, got {float_bits}")
    if _backend is not None:
        if requested is not None and requested != _backend.arch:
            raise RuntimeError(f"Taichi already initialised on {_backend.arch}; cannot switch to {requested}")
        if float_bits != _backend.float_bits and arch is not None:
            raise RuntimeError(f"Taichi already initialised with f{_backend.float_bits}")
        return _backend

    ti = _ti()
    fp = ti.f64 if float_bits == 64 else ti.f32
    candidates = [requested] if requested else _automatic_candidates(float_bits)
    got = None
    for name in candidates:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                ti.init(arch=_arch_of(ti, name), default_fp=fp, offline_cache=True, log_level=ti.ERROR)
        except Exception:  # noqa: BLE001 - a backend that cannot start: try the next
            continue
        got = _current_arch_name(ti)
        if got == name:
            break
        if requested:
            ti.reset()
            raise BackendUnavailable(f"{requested} requested but Taichi started on {got}: {_HINTS[requested]}")
        ti.reset()
        got = None
    if got is None and requested:
        raise BackendUnavailable(f"{requested} requested but Taichi did not start on it: {_HINTS[requested]}")
    if got is None:
        with contextlib.redirect_stdout(sys.stderr):
            ti.init(arch=ti.cpu, default_fp=fp, offline_cache=True, log_level=ti.ERROR)
        got = "cpu"
    _backend = Backend(arch=got, float_bits=float_bits)
    if verbose or (verbose is None and os.environ.get("ENGINE_VERBOSE")):
        print(f"[engine] Taichi backend: {got} (f{float_bits})", file=sys.stderr)
    return _backend


def start(arch: str | None, flag: str = "--arch") -> Backend:
    """:func:`init` for a command line: a backend that cannot start is an
    :class:`engine.errors.InputError` naming the option (``--arch cuda: ...``)."""
    from .errors import InputError

    try:
        return init(arch)
    except BackendUnavailable as e:
        raise InputError(f"{flag} {arch}: {e}") from None


def current() -> Backend | None:
    """The initialised backend, or None before the first :func:`init`."""
    return _backend


def ti_module():
    """``import taichi`` after making sure the backend is initialised."""
    init()
    return _ti()
