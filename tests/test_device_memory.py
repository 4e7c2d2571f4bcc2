"""Projectors free their device memory: a loop that builds and drops them does not grow without bound, and
a second projector of the same kind compiles nothing (its kernels take ndarrays, cached per process)."""
import gc
import resource

import numpy as np
import pytest

import engine
from engine.mesh import MeshProjector, icosphere
from engine.volume import Volume, VolumeProjector

pytestmark = pytest.mark.kernel


def _max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def test_mesh_projectors_built_and_dropped_in_a_loop_free_their_buffers():
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=256, cols=256, pixel_size=1.0) for a in (-30, 30)]

    def once(close):
        mp = MeshProjector([icosphere(60.0, 2), icosphere(50.0, 2)], ["a", "b"], max_hits=128)
        img = mp(cams)  # ~70 MB of hit buffers for 2 views of 256^2 x 128 hits
        mp(cams[:1])  # a smaller detector reuses them
        if close:
            mp.close()
        return img

    once(True)
    gc.collect()
    before = _max_rss_mb()
    for i in range(8):
        once(close=i % 2 == 0)  # closed, or dropped and garbage collected
        gc.collect()
    # leaked, 8 rounds would add ~8 x 90 MB; freed, a few MB each
    assert _max_rss_mb() - before < 250


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_200_projectors_made_and_dropped_keep_memory_flat():
    """100 volume projectors (8 MB of device volume each) and 100 mesh projectors (4 MB of detector buffers
    each), closed or dropped: the resident memory stays flat (leaked, it would grow by ~1.2 GB)."""
    dens = np.full((2, 128, 128, 64), 1.0, np.float32)  # 2 materials x 1M voxels x 4 bytes = 8 MB
    vol = Volume(density=dens, materials=("water", "bone"), world_from_index=np.eye(4))
    cam = engine.carm(sid=300, sdd=500, rows=64, cols=64, pixel_size=4.0, isocenter=vol.center)
    ball = icosphere(20.0, 2, center=vol.center)

    def make(i):
        if i % 2:
            p = VolumeProjector(vol)
        else:
            p = MeshProjector(ball, "bone", max_hits=256)  # 64 x 64 x 256 hits x 4 bytes = 4 MB
        p(cam)
        if i % 4 < 2:
            p.close()

    for i in range(8):
        make(i)
    gc.collect()
    before = _rss_mb()
    for i in range(200):
        make(i)
        if i % 10 == 9:
            gc.collect()
    gc.collect()
    assert _rss_mb() - before < 100, (before, _rss_mb())


def _compiled(*kernels) -> int:
    """Compiled instances of Taichi kernels (one per template key: here element types and flags)."""
    return sum(len(k._primal.compiled_kernels) for k in kernels)


def test_new_projectors_and_detector_sizes_compile_nothing():
    """The kernels are cached per process and take ndarrays (keyed by element type, not by array): a new
    projector, a new volume or mesh, or a new detector size reuses the compiled code (a compilation costs
    seconds on the CPU, more in a GPU driver)."""
    from engine.mesh.projector import adjoint_kernel, raster_kernel
    from engine.volume.march import march_kernel, planes_kernel, upload_kernel

    def vol(n):
        return Volume(density=np.ones((1, n, n + 1, n + 2), np.float32), materials=("water",),
                      world_from_index=np.eye(4))

    def render(n, size, r):
        v = vol(n)
        cam = engine.carm(sid=200, sdd=400, rows=size, cols=size + 3, pixel_size=2.0, isocenter=v.center)
        VolumeProjector(v)(cam)
        VolumeProjector(v, sampling="midpoint")(cam)
        mp = MeshProjector(icosphere(r, 2, center=v.center), "bone")
        img, state = mp.forward(cam)
        mp.vjp(state, img)

    render(20, 16, 8.0)
    kernels = (planes_kernel(1, "f32", 1), march_kernel(1, "f32", 1), upload_kernel("f32"), raster_kernel(32),
               adjoint_kernel(32))
    before = _compiled(*kernels)
    assert before >= 5
    render(31, 40, 12.0)
    render(25, 9, 5.0)
    assert _compiled(*kernels) == before
