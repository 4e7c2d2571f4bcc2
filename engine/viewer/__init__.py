"""The live viewer: drive a virtual C-arm and watch the X-ray change (``engine view``, ``demos/viewer.py``).

:mod:`.state` (what is shown and how events change it), :mod:`.render` (the X-ray from the engine's own
Simulator, the overview), :mod:`.app` (the GGUI window, interactive or headless with a scripted event list).
Taichi is imported when a viewer is built, not by ``import engine.viewer``.
"""
from .state import ViewerState, apply

__all__ = ["ViewerState", "apply", "default_scene", "open_viewer"]


def default_scene():
    """The shipped pelvis phantom (a Volume) and a titanium screw-like rod (7 mm x 60 mm, conical tip) placed
    through the left sacroiliac region (world RAS+, mm): ``(volume, [(mesh, "titanium")], ct_path)``."""
    import numpy as np

    from ..assets import asset_path
    from ..mesh import rod
    from ..volume import Volume, load_ct

    path = asset_path("pelvis_phantom.nii.gz")
    ct = load_ct(path)
    screw = rod(radius=3.65, length=60.0, start=np.array([-75.0, -10.0, 20.0]), direction=[1.0, 0.1, -0.15])
    return Volume.from_ct(ct), [(screw, "titanium")], str(path)


def open_viewer(volume=None, meshes=(), state=None, *, show_window=True, out_dir="out/viewer", drr_source="CT"):
    """A :class:`engine.viewer.app.Viewer` over a CT and/or meshes ``[(Mesh, material), ...]``; the initial
    view looks at the CT's centre (or the meshes')."""
    from .app import Viewer
    from .render import SceneRenderer

    renderer = SceneRenderer(volume, list(meshes))
    if state is None:
        state = ViewerState(isocenter=tuple(float(x) for x in renderer.center))
    return Viewer(renderer, state, show_window=show_window, out_dir=out_dir, drr_source=drr_source)
