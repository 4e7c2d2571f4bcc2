"""Projectors free their Taichi fields: a loop that builds and drops them does not grow without bound."""
import gc
import resource

import numpy as np
import pytest

import engine
from engine.field_group import FieldGroup
from engine.mesh import MeshProjector, icosphere


def _max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def test_projectors_built_and_dropped_in_a_loop_free_their_buffers():
    cams = [engine.carm(primary=a, sid=700, sdd=1000, rows=256, cols=256, pixel_size=1.0) for a in (-30, 30)]

    def once():
        mp = MeshProjector([icosphere(60.0, 2), icosphere(50.0, 2)], ["a", "b"], max_hits=128)
        img = mp(cams)  # ~70 MB of hit buffers for 2 views of 256^2 x 128 hits
        mp(cams[:1])  # another detector shape: the first buffers are released
        return img

    once()
    gc.collect()
    before = _max_rss_mb()
    for _ in range(8):
        once()
        gc.collect()
    # leaked, 8 rounds would add ~8 x 90 MB (plain ti.field()s are never freed); freed, a few MB each
    assert _max_rss_mb() - before < 250


def test_field_group_release():
    ti = engine.backend.ti_module()
    g = FieldGroup(ti)
    a = g.field(ti.f32, (4, 5))
    v = g.field(ti.f32, (3,), n=3)
    g.finalize()
    a.from_numpy(np.arange(20, dtype=np.float32).reshape(4, 5))
    assert a.to_numpy()[3, 4] == 19 and v.to_numpy().shape == (3, 3)
    g.release()
    g.release()  # twice is harmless
    with pytest.raises(RuntimeError, match="finalized"):
        g.field(ti.f32, (2,))
