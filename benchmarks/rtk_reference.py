"""RTK's Joseph forward projector (``itk-rtk``), set up for an engine Camera: the CPU reference of
``benchmarks/drr.py``.

RTK's frame: the rotation axis is y; at gantry angle 0 the source is at ``(0, 0, sid)`` and the
detector plane at ``z = sid - sdd``, its u axis along x and v along y.  An engine camera is moved
into that frame by the rigid map ``x' = R (x - c)`` with ``R``'s rows the detector's column and
row directions and their cross product (pointing from the detector to the source), and ``c`` the
point that lands at the origin.  The volume becomes an ITK image with that map folded into its
origin and direction, so both renderers cast the same rays through the same voxels.  RTK
integrates value x mm (Joseph: one bilinear sample per voxel plane along the ray's main axis, between
the first and last voxel centres); the engine's g/cm^3 x mm -> g/cm^2 adds a factor 0.1.

    pip install itk-rtk==2.7.0.post1
"""
import numpy as np


def available() -> bool:
    """True when ``itk`` with RTK can be imported."""
    try:
        from itk import RTK  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or itk's lazy loader failing
        return False
    return True


class JosephReference:
    """RTK Joseph projections of one density channel (g/cm^3) on an engine volume's grid.

    Parameters
    ----------
    density : (I, J, K) array, g/cm^3
    world_from_index : (4, 4) affine of the grid (rotation x spacing, no shear)
    cam : engine Camera, the view to render
    """

    def __init__(self, density, world_from_index, cam):
        import itk
        from itk import RTK as rtk

        self.itk, self.rtk = itk, rtk
        src, p00, du, dv = (np.asarray(x, np.float64) for x in cam.pixel_grid())
        self.px = (float(np.linalg.norm(du)), float(np.linalg.norm(dv)))
        eu, ev = du / self.px[0], dv / self.px[1]
        ew = np.cross(eu, ev)
        self.flip = float((src - p00) @ ew) < 0  # then render with v reversed (rows flipped)
        if self.flip:
            ev, ew = -ev, -ew
        self.R = np.stack([eu, ev, ew])
        self.sdd = float((src - p00) @ ew)
        self.sid = self.sdd / 2  # any: the volume is placed relative to the source
        self.c = src - self.sid * ew
        a = np.asarray(world_from_index, np.float64)
        ra = self.R @ a[:3, :3]
        spacing = np.linalg.norm(ra, axis=0)
        img = itk.GetImageFromArray(np.ascontiguousarray(np.asarray(density, np.float32).transpose(2, 1, 0)))
        img.SetSpacing(spacing.tolist())
        img.SetOrigin((self.R @ (a[:3, 3] - self.c)).tolist())
        img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(ra / spacing)))
        self.volume = img
        self.rows, self.cols = cam.rows, cam.cols
        # the pipeline, kept alive here (ITK's Python wrappers free a source whose object is dropped)
        self.proj, self.geo, self.filter = self._pipeline(p00)

    def _pipeline(self, p00):
        itk, rtk = self.itk, self.rtk
        image_t = itk.Image[itk.F, 3]
        q = self.R @ (p00 - self.c)  # pixel (0, 0) in RTK's frame
        origin = [q[0], q[1] if not self.flip else q[1] - (self.rows - 1) * self.px[1], 0.0]
        proj = rtk.ConstantImageSource[image_t].New()
        proj.SetOrigin(origin)
        proj.SetSpacing([self.px[0], self.px[1], 1.0])
        proj.SetSize([self.cols, self.rows, 1])
        proj.SetConstant(0.0)
        geo = rtk.ThreeDCircularProjectionGeometry.New()
        geo.AddProjection(self.sid, self.sdd, 0.0, 0.0, 0.0)
        f = rtk.JosephForwardProjectionImageFilter[image_t, image_t].New()
        f.SetInput(0, proj.GetOutput())
        f.SetInput(1, self.volume)
        f.SetGeometry(geo)
        return proj, geo, f

    def __call__(self) -> np.ndarray:
        """(rows, cols) float32 line integrals, g/cm^2, of the camera given at construction."""
        f = self.filter
        f.Modified()
        f.Update()
        img = self.itk.array_from_image(f.GetOutput())[0]  # (rows, cols) in RTK's v order
        if self.flip:
            img = img[::-1]
        return np.ascontiguousarray(img) * 0.1
