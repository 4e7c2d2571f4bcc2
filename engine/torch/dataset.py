"""PyTorch datasets of a sampling plan: rendered on the fly (:class:`DRRDataset`) or read from a written dataset
(:class:`WrittenDataset`, the layout of :mod:`engine.dataset.write`); both return the same dict per image.

Each item: ``image`` (1, rows, cols) float32 (the plan's output units), ``masks`` (S, rows, cols) uint8,
``structure_line_integrals`` (S, rows, cols) float32 g/cm^2, ``mesh_lengths`` (M, rows, cols) float32 mm,
``landmarks`` (K, 2) float32 pixel (u = column, v = row), ``landmarks_visible`` (K,) bool, ``P`` (3, 4) float64
the camera's projection matrix, ``index``.  Taichi renders in the calling process: with a DataLoader use
``num_workers=0`` or ``multiprocessing_context="spawn"`` (a forked Taichi is not safe).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def _item(index, image, masks, lines, lengths, landmarks, P) -> dict:
    uv = np.array([[lm["u"], lm["v"]] for lm in landmarks], np.float32).reshape(-1, 2)
    return {"index": int(index), "image": torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
            "structure_line_integrals": torch.from_numpy(np.ascontiguousarray(lines, np.float32)),
            "mesh_lengths": torch.from_numpy(np.ascontiguousarray(lengths, np.float32)),
            "landmarks": torch.from_numpy(uv),
            "landmarks_visible": torch.tensor([bool(lm["visible"]) for lm in landmarks], dtype=torch.bool),
            "P": torch.from_numpy(np.asarray(P, np.float64))}


class DRRDataset(torch.utils.data.Dataset):
    """Images of a plan rendered when asked (no files): ``plan`` a Plan or a plan file."""

    def __init__(self, plan):
        from ..dataset import Plan, load_plan

        self.plan = plan if isinstance(plan, Plan) else load_plan(plan)
        self._scenes = {}

    def __len__(self) -> int:
        return self.plan.n_images

    def __getitem__(self, i: int) -> dict:
        from ..dataset import sample
        from ..dataset.write import scene_for

        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        s = sample(self.plan, i)
        r = scene_for(self.plan, s.ct, self._scenes).render(s)
        return _item(i, r["image"], r["masks"], r["structure_line_integrals"], r["mesh_lengths"], r["landmarks"],
                     r["camera"].P)


class WrittenDataset(torch.utils.data.Dataset):
    """A dataset written by ``engine dataset`` (its ``manifest.jsonl``)."""

    def __init__(self, folder):
        from ..errors import InputError

        self.folder = Path(folder)
        m = self.folder / "manifest.jsonl"
        if not m.is_file():
            raise InputError(f"{self.folder}: no manifest.jsonl (not a finished dataset; run engine dataset again "
                             "to complete it)")
        self.rows = [json.loads(line) for line in m.read_text().splitlines() if line.strip()]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        import tifffile

        from ..geometry import Camera

        r = self.rows[i]
        f = {k: self.folder / v for k, v in r["files"].items()}
        meta = json.loads(f["meta.json"].read_text())
        with np.load(f["labels.npz"], allow_pickle=False) as z:
            masks, lines, lengths = z["masks"], z["structure_line_integrals"], z["mesh_lengths"]
        cam = Camera.from_dict(meta["camera"])
        return _item(r["index"], tifffile.imread(f["image.tiff"]), masks, lines, lengths, meta["landmarks"], cam.P)
