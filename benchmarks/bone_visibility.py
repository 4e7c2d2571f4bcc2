"""How much of an X-ray, in the region where a bone projects, is that bone?  (Why tier 3a fails, 3b not.)

A reconstruction from X-rays compares a render of ONE bone with the whole image in a
region of interest (ROI) around the bone's projection (loss ``xray``: band-pass NCC).
Whatever else projects into that region (other bones, the heart, the lungs' edges) is
clutter the render cannot explain.  This script splits the simulated line integral
``-ln(I/I0)`` (90 kVp spectrum, no scatter, no noise: the most favourable case) into
parts, each part's share being ``full - render(CT with that structure replaced by 40 HU
soft tissue)``:

- tier 3a, the real chest CT: the vertebra itself, its two neighbours, the ribs, the
  heart and great vessels (contrast-enhanced), and everything else (lungs, soft tissue,
  the CT's 2.5 mm slice steps);
- tier 3b, the pelvis phantom: the pelvis itself and everything else (soft tissue, fat,
  bowel gas).

For each, band-passed (``x - G_sigma * x``; sigma 4 and 16 full-resolution pixels, the
X-ray loss' default is 16) and ROI-weighted (the bone's silhouette dilated by 8 pixels, as
the loss does): the standard deviation of each part, ``snr = std(bone) / std(rest)``, and
``ncc``, the correlation of the bone's own part with the whole image in the ROI: the
best NCC any render of that bone could reach (the loss is ``1 - ncc``).

    python benchmarks/bone_visibility.py [--size 256] [--out benchmarks/results/bone_visibility.json]
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import engine  # noqa: E402
from _common import CHEST_CT  # noqa: E402
from engine.geometry.carm import carm  # noqa: E402
from engine.recon import BoneXrayNCC  # noqa: E402
from engine.volume import CT, Volume, VolumeProjector  # noqa: E402

VIEWS = {"AP": 0.0, "LAT": 90.0, "-30": -30.0, "+30": 30.0}
SIGMAS = (4.0, 16.0)
SOFT_HU = 40.0
VESSELS = ("heart", "aorta", "pulmonary_vein", "superior_vena_cava", "inferior_vena_cava", "atrial_appendage_left",
           "brachiocephalic_trunk", "brachiocephalic_vein_left", "brachiocephalic_vein_right")


def projector(ct: CT, replace=None) -> VolumeProjector:
    """The CT's projector, optionally with the voxels of a mask replaced by 40 HU soft tissue."""
    hu = ct.hu if replace is None else np.where(replace, SOFT_HU, ct.hu).astype(np.float32)
    return VolumeProjector(Volume.from_ct(CT(hu=hu, world_from_index=ct.world_from_index)))


def line_integrals(proj: VolumeProjector, cams) -> np.ndarray:
    """(n, rows, cols) noise- and scatter-free line integrals."""
    return engine.simulate(proj, cams, config=engine.XrayConfig(spectrum="fluoro90", output="line_integral"))


def analyse(full, parts: dict, bone: str, margin_px: float = 8.0) -> dict:
    """Per band-pass sigma: ROI std of each part, snr and the bone's best NCC (means over views)."""
    out = {}
    for sigma in SIGMAS:
        def high(x):
            return x - ndimage.gaussian_filter(x, sigma)
        rows = {k: [] for k in list(parts) + ["rest", "snr", "ncc"]}
        silhouette = (np.abs(parts[bone]) > 1e-3).astype(float)[:, None].repeat(2, axis=1)  # (n, 2, rows, cols)
        rois = BoneXrayNCC(roi_margin_px=margin_px).set_roi(silhouette)  # the loss' own region of interest
        for i in range(len(full)):
            w = rois[i] / rois[i].sum()

            def centred(x):
                h = high(x)
                return h - (w * h).sum()
            b, f = centred(parts[bone][i]), centred(full[i])
            rest = f - b
            for k, p in parts.items():
                rows[k].append(float(np.sqrt((w * centred(p[i]) ** 2).sum())))
            rows["rest"].append(float(np.sqrt((w * rest ** 2).sum())))
            rows["snr"].append(rows[bone][-1] / rows["rest"][-1] if rows["rest"][-1] > 0 else float("inf"))
            rows["ncc"].append(float((w * b * f).sum() / np.sqrt((w * b * b).sum() * (w * f * f).sum())))
        out[f"sigma{sigma:g}"] = rows
    return out


def vertebrae(size: int):
    import nibabel as nib

    from engine.ssm.vertebrae import label_ids
    from engine.volume import load_ct

    folder = CHEST_CT
    if not (folder / "ct.nii.gz").is_file():
        print(f"tier 3a part skipped: {folder / 'ct.nii.gz'} is absent", flush=True)
        return []
    ct = load_ct(folder / "ct.nii.gz")
    lab = np.asarray(nib.load(str(folder / "labels.nii.gz")).dataobj)
    ids = label_ids(folder / "labels.csv")
    ribs = [i for n, i in ids.items() if n.startswith("rib_")]
    vessels = [ids[n] for n in VESSELS if n in ids]
    order = [f"T{i}" for i in range(1, 13)] + ["L1", "L2"]
    whole = projector(ct)  # uploaded once, seen from every vertebra's cameras
    out = []
    for k in range(1, 11):  # T2..T11: the vertebrae of tier 3a's ten trials
        name = order[k]
        me = lab == ids[f"vertebrae_{name}"]
        centre = ct.world_from_index[:3, :3] @ np.argwhere(me).mean(0) + ct.world_from_index[:3, 3]
        cams = [carm(primary=a, sid=700.0, sdd=1000.0, rows=size, cols=size, pixel_size=0.8, isocenter=centre)
                for a in VIEWS.values()]
        full = line_integrals(whole, cams)
        masks = {"bone": me, "neighbours": np.isin(lab, [ids[f"vertebrae_{order[k - 1]}"],
                                                         ids[f"vertebrae_{order[k + 1]}"]]),
                 "ribs": np.isin(lab, ribs), "heart+vessels": np.isin(lab, vessels)}
        parts = {p: full - line_integrals(projector(ct, m), cams) for p, m in masks.items()}
        parts["other"] = full - sum(parts.values())
        for j, view in enumerate(VIEWS):
            res = analyse(full[j:j + 1], {p: v[j:j + 1] for p, v in parts.items()}, "bone")
            out.append({"tier": "3a chest CT vertebra", "case": name, "view": view, **res})
        print(f"{name}: " + "  ".join(f"{v} snr {r['sigma4']['snr'][0]:.2f} ncc {r['sigma4']['ncc'][0]:.2f}"
                                       for v, r in zip(VIEWS, out[-4:])), flush=True)
    return out


def pelvis(size: int, subjects=(0, 1, 2)):
    from engine.phantoms.pelvis_ct import make_pelvis_phantom
    from engine.ssm import llp26_population

    shapes, _ = llp26_population()
    out = []
    for s in subjects:
        hu, aff = make_pelvis_phantom(1.5, seed=s, coarse_vertices=shapes[s])
        ct = CT(hu=hu.astype(np.float32), world_from_index=aff)
        cams = [carm(primary=a, sid=700.0, sdd=1000.0, rows=size, cols=size, pixel_size=1.6) for a in VIEWS.values()]
        full = line_integrals(projector(ct), cams)
        bone = full - line_integrals(projector(ct, ct.hu > 100.0), cams)  # cortical 1400, cancellous 300 HU; soft 40
        parts = {"bone": bone, "other": full - bone}
        for j, view in enumerate(VIEWS):
            res = analyse(full[j:j + 1], {p: v[j:j + 1] for p, v in parts.items()}, "bone")
            out.append({"tier": "3b pelvis phantom", "case": f"subject {s}", "view": view, **res})
        print(f"pelvis {s}: " + "  ".join(f"{v} snr {r['sigma16']['snr'][0]:.2f} ncc {r['sigma16']['ncc'][0]:.2f}"
                                          for v, r in zip(VIEWS, out[-4:])), flush=True)
    return out


def summary(rows) -> list:
    out = []
    for tier in sorted({r["tier"] for r in rows}):
        for view in VIEWS:
            rs = [r for r in rows if r["tier"] == tier and r["view"] == view]
            if not rs:
                continue
            row = {"tier": tier, "view": view, "n": len(rs)}
            for s in SIGMAS:
                key = f"sigma{s:g}"
                for m in ("snr", "ncc"):
                    row[f"{m}_{key}_median"] = float(np.median([r[key][m][0] for r in rs]))
                parts = [p for p in rs[0][key] if p not in ("snr", "ncc")]
                row[f"std_{key}"] = {p: float(np.median([r[key][p][0] for r in rs])) for p in parts}
            out.append(row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bone_visibility.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = vertebrae(args.size) + pelvis(args.size)
    table = summary(rows)
    print()
    print(f"{'tier':<22} {'view':<5} {'n':>3}  {'snr s4':>7} {'ncc s4':>7}  {'snr s16':>7} {'ncc s16':>7}  "
          f"median ROI std per part (sigma 4)")
    for r in table:
        parts = " ".join(f"{p}={v:.3f}" for p, v in r["std_sigma4"].items())
        print(f"{r['tier']:<22} {r['view']:<5} {r['n']:3d}  {r['snr_sigma4_median']:7.2f} "
              f"{r['ncc_sigma4_median']:7.2f}  {r['snr_sigma16_median']:7.2f} {r['ncc_sigma16_median']:7.2f}  {parts}")
    machine = dict(platform=platform.platform(), cpu_count=os.cpu_count(), python=platform.python_version(),
                   date=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    print(f"machine: {machine}; total {time.perf_counter() - t0:.0f} s")
    Path(args.out).write_text(json.dumps({"machine": machine, "summary": table, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
