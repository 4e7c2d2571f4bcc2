"""One CT of a plan, on the device, and one image of it with all its labels.

``CTScene(spec, plan)`` loads the CT once per worker: its materials (one :class:`VolumeProjector`), its
structures as label channels, its 3D landmarks, the plan's meshes (one :class:`MeshProjector`, BVH traversal:
each ray sums its hits in one fixed order, so images are the same bytes in every process). ``render(sample)``
gives the X-ray (the engine's :class:`Simulator`), and, for the same camera:

- ``masks`` (S, rows, cols) uint8: 1 where the ray's path through structure s is at least half the smallest
  voxel spacing of its label grid;
- ``structure_line_integrals`` (S, rows, cols) float32 g/cm^2: the line integral of the CT's density inside
  structure s (the projector run on each label);
- ``mesh_lengths`` (M, rows, cols) float32 mm per mesh material;
- ``landmarks``: per 3D landmark its pixel (u = column, v = row, pixel centres at integers), whether it is in
  front of the source and on the detector, and the structure it names.

Structure channels: the label map (or the HU ranges) as indicator volumes (block means when downsampled), two
channels per structure (indicator, density x indicator), rendered in groups of 8 channels per projector.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

GROUP = 8  # label channels per projector (kernels are specialised per channel count)
KVP_STEP = 5.0  # sampled kVp is rounded to this step: each spectrum is computed once per worker (spekpy ~1 s)


def _label_table(path) -> dict:
    """{name: id} from a CSV with columns ..., structure, id (the chest CT's labels.csv)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"structure", "id"} <= set(rows[0]):
        raise InputError(f"{path}: expected a CSV with columns structure and id")
    return {r["structure"]: int(r["id"]) for r in rows}


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a.astype(np.float32)
    s = [n // f * f for n in a.shape]
    a = a[: s[0], : s[1], : s[2]].astype(np.float32)
    return a.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


class CTScene:
    """A plan's CT with its structures, landmarks and meshes (see the module doc)."""

    def __init__(self, spec, plan):
        from ..mesh import MeshProjector, load_mesh, rod
        from ..volume import Volume, VolumeProjector, load_ct

        self.plan = plan
        ct = load_ct(spec.ct)
        self.ct = ct
        self.volume = Volume.from_ct(ct)
        self.proj = VolumeProjector(self.volume)
        self.names, indicators = self._structures(spec, ct)
        f = int(spec.label_downsample)
        aff = ct.world_from_index.copy()
        if f > 1:  # block means: voxel (i, j, k) of the coarse grid covers fine voxels f*i .. f*i + f - 1
            aff = aff @ np.array([[f, 0, 0, (f - 1) / 2], [0, f, 0, (f - 1) / 2], [0, 0, f, (f - 1) / 2],
                                  [0, 0, 0, 1.0]])
        self.mask_threshold_mm = 0.5 * float(np.min(np.linalg.norm(aff[:3, :3], axis=0)))
        total = self.volume.density.sum(axis=0)
        channels, names = [], []
        for name, ind in zip(self.names, indicators):
            i = _block_mean(ind, f)
            channels += [i, _block_mean(ind * total, f)]
            names += [f"{name}:indicator", f"{name}:density"]
        self.label_projs = []
        for g in range(0, len(channels), GROUP):
            vol = Volume(density=np.stack(channels[g:g + GROUP]), materials=tuple(names[g:g + GROUP]),
                         world_from_index=aff)
            self.label_projs.append(VolumeProjector(vol))
        self.landmarks = self._landmarks(spec, indicators)
        meshes, mats = [], []
        for m in plan.meshes:
            if m.file is not None:
                meshes.append(load_mesh(m.file))
            else:
                r = m.rod
                meshes.append(rod(float(r["radius"]), float(r["length"]), np.asarray(r["start"], float),
                                  np.asarray(r["direction"], float)))
            mats.append(m.material)
        self.mesh_base = [mm.vertices.copy() for mm in meshes]
        self.meshes = MeshProjector(meshes, mats, method="bvh") if meshes else None
        self._spectra = {}

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _structures(spec, ct):
        """(names, boolean indicator volumes on the CT grid)."""
        s = spec.structures
        if spec.labels is not None:
            from ..volume import load_ct

            lab = load_ct(spec.labels)
            if lab.shape != ct.shape or not np.allclose(lab.world_from_index, ct.world_from_index, atol=1e-3):
                raise InputError(f"{spec.labels}: the label map's grid differs from the CT's {ct.shape}")
            table = _label_table(spec.label_names)
            names = list(table) if s is None else list(s)
            unknown = [n for n in names if n not in table]
            if unknown:
                raise InputError(f"{spec.label_names}: unknown structure(s) {unknown}")
            values = np.rint(np.asarray(lab.hu)).astype(np.int64)
            names = [n for n in names if (values == table[n]).any()][:32]
            return names, [values == table[n] for n in names]
        if isinstance(s, dict):
            hu = np.asarray(ct.hu)
            return list(s), [(hu >= r.get("hu_min", -1e9)) & (hu < r.get("hu_max", 1e9)) for r in s.values()]
        return [], []

    def _landmarks(self, spec, indicators) -> list:
        """[(name, structure, (3,) world mm)]."""
        lm = spec.landmarks
        if lm is None:
            return []
        if lm == "pelvis":
            # the LLP26 mean pelvis' named landmarks are vertices of its control mesh (8.5 mm nodes); the phantom's
            # bone is that mesh Loop-subdivided and voxelised, which lies up to a few mm inside them at convex
            # extremes (the iliac crests): each is moved to the nearest voxel of the bone structure
            from scipy.spatial import cKDTree

            from ..phantoms.llp26 import pelvis_landmarks

            if "bone" not in self.names:
                raise InputError(f"{spec.ct}: landmarks: pelvis needs a structure named bone (e.g. structures: "
                                 "{bone: {hu_min: 250}})")
            a = self.ct.world_from_index
            vox = np.argwhere(indicators[self.names.index("bone")]) @ a[:3, :3].T + a[:3, 3]
            tree = cKDTree(vox)
            out = []
            for k, p in sorted(pelvis_landmarks().items()):
                if k.endswith("centroid"):
                    continue  # centroids of a body need not lie in its bone
                d, j = tree.query(np.asarray(p, float))
                out.append((k, "bone", vox[j]))
            return out
        if lm == "centroids":
            out = []
            a = self.ct.world_from_index
            for name, ind in zip(self.names, indicators):
                idx = np.argwhere(ind)
                if len(idx):
                    out.append((name, name, a[:3, :3] @ idx.mean(axis=0) + a[:3, 3]))
            return out
        import json

        try:
            d = json.loads(lm.read_text(encoding="utf-8"))
            return [(k, v.get("structure", "") if isinstance(v, dict) else "",
                     np.asarray(v["position"] if isinstance(v, dict) else v, float).reshape(3))
                    for k, v in sorted(d.items())]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{lm}: expected a JSON object {{name: [x, y, z] mm}} ({e})") from None

    # ------------------------------------------------------------------ one image
    def camera(self, s):
        from ..geometry import carm

        p = self.plan
        iso = np.asarray(self.ct.center) + np.asarray(s.isocenter_offset)
        return carm(primary=s.primary, secondary=s.secondary, sid=s.sid, sdd=s.sdd, isocenter=iso, rows=p.rows,
                    cols=p.cols, pixel_size=p.pixel_size)

    def spectrum(self, kvp):
        from ..physics import preset, tube_spectrum

        p = self.plan
        key = p.preset if kvp is None else float(np.round(kvp / KVP_STEP) * KVP_STEP)
        if key not in self._spectra:
            self._spectra[key] = preset(key, bins=p.bins) if kvp is None else tube_spectrum(key, bins=p.bins)
        return key, self._spectra[key]

    def render(self, s) -> dict:
        """Everything of sample ``s`` (see the module doc)."""
        from ..geometry.transforms import perturb
        from ..simulator import Simulator
        from ..xray_config import XrayConfig

        p = self.plan
        cam = self.camera(s)
        if self.meshes is not None:
            verts = []
            for base, (rot, t) in zip(self.mesh_base, s.mesh_moves):
                c = base.mean(axis=0)
                m = perturb(np.eye(4), np.asarray(rot), np.asarray(t), center=c)
                verts.append(base @ m[:3, :3].T + m[:3, 3])
            self.meshes.set_vertices(np.concatenate(verts))
        kvp_used, spec = self.spectrum(s.kvp)
        config = XrayConfig(spectrum=spec, scatter=p.scatter, noise=s.photons, output=p.output)
        image = Simulator(self.proj, self.meshes, config)(cam, seed=s.noise_seed)[0]  # every call: (n, ...)
        ind, dens = [], []
        for lp in self.label_projs:
            img = lp(cam)[0]
            ind += list(img[0::2])
            dens += list(img[1::2])
        shape = (0, p.rows, p.cols)
        masks = (np.stack(ind) * 10.0 >= self.mask_threshold_mm).astype(np.uint8) if ind else np.zeros(shape, np.uint8)
        lines = np.stack(dens).astype(np.float32) if dens else np.zeros(shape, np.float32)
        lengths = self.meshes(cam, record=False)[0].astype(np.float32) if self.meshes is not None else \
            np.zeros(shape, np.float32)
        lms = []
        for name, structure, x in self.landmarks:
            u, v = cam.project_points(x)  # NaN behind the source
            on = bool(cam.on_detector((u, v)))
            lms.append({"name": name, "structure": structure, "u": float(u), "v": float(v), "visible": on,
                        "world_mm": [float(a) for a in x]})
        return {"image": image.astype(np.float32), "masks": masks, "structure_line_integrals": lines,
                "mesh_lengths": lengths, "landmarks": lms, "camera": cam, "kvp_used": kvp_used,
                "structures": list(self.names), "mesh_materials": list(self.meshes.materials) if self.meshes else []}

    def close(self) -> None:
        self.proj.close()
        for lp in self.label_projs:
            lp.close()
        if self.meshes is not None:
            self.meshes.close()
