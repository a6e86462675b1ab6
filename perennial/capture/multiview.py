"""A multi-view dataset (ZJU-MoCap layout) to a capture: landmarks in every camera, one fit to all of them.

The detector runs on each camera's images; Anny is fitted to every (frame, camera) at once with
the dataset's calibration (:func:`~perennial.capture.fit.fit_body`), using the dataset's masks
where it has them. The capture keeps the dataset's cameras (scaled to ``size``) and holds out
every fourth camera and every ``test_every``-th frame; images hold the person over black.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from perennial.body.anny import load_template
from perennial.body.rig import PHENOTYPE_LABELS
from perennial.capture.capture import Capture
from perennial.capture.detect import IMAGE_SUFFIXES, detect
from perennial.capture.fit import FitConfig, FitResult, Observations, fit_body
from perennial.capture.masks import mask_iou, resize_masks
from perennial.capture.monocular import (
    MonocularConfig,
    _read_detection,
    fitted_body,
    fitted_masks,
    overlay_sheet,
    person_over_black,
    scale_intrinsics,
)
from perennial.capture.readers import temp_dir_near, zju_mask, zju_views
from perennial.capture.writer import ViewData, write_capture
from perennial.errors import PerennialError
from perennial.render.camera import Camera
from perennial.render.image import save_png


def capture_from_zju(src: str | Path, out: str | Path, config: MonocularConfig | None = None,
                     fit_config: FitConfig | None = None, overwrite: bool = False,
                     progress: bool = True) -> Capture:  # fmt: skip
    """Write a capture of the ZJU-MoCap-layout folder ``src`` to ``out``; see the module."""
    cfg, fit_cfg = config or MonocularConfig(), fit_config or FitConfig()
    src, out = Path(src), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PerennialError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    t0 = time.perf_counter()
    names, K, R, t, paths, mask_dir = zju_views(src)
    paths = paths[:: cfg.stride][: cfg.max_frames]
    with temp_dir_near(out) as tmp:
        cams, rows = {}, []
        for c, name in enumerate(names):
            folder = Path(tmp) / f"in-{name}"
            folder.mkdir()
            for f, frame in enumerate(paths):
                if frame[c].suffix.lower() not in IMAGE_SUFFIXES:
                    raise PerennialError(f"{frame[c]}: not an image ({', '.join(IMAGE_SUFFIXES)})")
                (folder / f"{f:06d}{frame[c].suffix.lower()}").symlink_to(frame[c].resolve())
            det = detect(folder, Path(tmp) / f"det-{name}", size=cfg.size, progress=progress)
            meta, frames, found = _read_detection(det)
            given = [zju_mask(src, mask_dir, frame[c]) for frame in paths]
            masks = found if given[0] is None else resize_masks(np.stack(given), meta["width"], meta["height"])
            marks = np.load(det / "landmarks.npz")
            k = scale_intrinsics(K[c], meta["scale"])
            cams[name] = Camera(K=k, R=R[c], t=t[c], width=meta["width"], height=meta["height"])
            rows.append((name, meta, frames, masks, marks))
        sizes = {(m["width"], m["height"]) for _, m, *_ in rows}
        if len(sizes) != 1:
            raise PerennialError(f"{src}: cameras of different image sizes {sorted(sizes)} are not supported")
        W, H = sizes.pop()
        obs = _observations(rows, cams, len(paths), W, H)
        t_detect = time.perf_counter() - t0
        template = load_template("anny")
        fit = fit_body(template, obs, fit_cfg, progress=progress)
        capture = _write(out, cfg, fit, cams, rows, len(paths), overwrite)
    report = _report(template, fit, cams, rows, src, cfg, fit_cfg, t_detect, time.perf_counter() - t0)
    (out / "fit.json").write_text(json.dumps(report["json"], indent=1) + "\n")
    save_png(out / "overlay.png", report["overlay"])
    return capture


def _observations(rows, cams: dict, n_frames: int, W: int, H: int) -> Observations:
    def cat(key):
        return torch.cat([torch.from_numpy(np.asarray(m[key], np.float32)) for *_, m in rows])

    C = len(rows)
    return Observations(
        body=cat("body"), body_world=cat("body_world"), hands=cat("hands"), hand_score=cat("hand_score"),
        masks=torch.from_numpy(np.concatenate([r[3] for r in rows]) > 127), width=W, height=H, video=True,
        frame=torch.arange(n_frames).repeat(C),
        K=torch.stack([cams[r[0]].K for r in rows]).repeat_interleave(n_frames, 0),
        R=torch.stack([cams[r[0]].R for r in rows]).repeat_interleave(n_frames, 0),
        t=torch.stack([cams[r[0]].t for r in rows]).repeat_interleave(n_frames, 0),
        face=cat("face"), face_score=cat("face_score"),
    )  # fmt: skip


def _write(out: Path, cfg: MonocularConfig, fit: FitResult, cams: dict, rows, n_frames: int,
           overwrite: bool) -> Capture:  # fmt: skip
    views = []
    for c, (name, _, frames, masks, _) in enumerate(rows):
        for f in range(n_frames):
            held = c % 4 == 1 or (cfg.test_every and f % cfg.test_every == cfg.test_every - 1)
            views.append(ViewData(camera=name, frame=f, split="test" if held else "train",
                                  image=person_over_black(frames[f], masks[f]), mask=masks[f]))  # fmt: skip
    body, body_info = fitted_body(fit)
    return write_capture(out, appearance=cfg.appearance, body_info=body_info, cameras=cams,
                         frames=[{"index": f, "time": f * cfg.stride / 30.0} for f in range(n_frames)],
                         views_with_arrays=views, body=body, overwrite=overwrite)  # fmt: skip


def _report(template, fit: FitResult, cams: dict, rows, src: Path, cfg, fit_cfg, t_detect: float,
            total: float) -> dict:  # fmt: skip
    ious, tiles = {}, []
    for name, meta, frames, masks, _ in rows:
        cam = cams[name]
        one = FitResult(phenotype=fit.phenotype, rotvec=fit.rotvec, translation=fit.translation, K=cam.K, R=cam.R,
                        t=cam.t)  # fmt: skip
        fitted = fitted_masks(template, one, cam.width, cam.height)
        ious[name] = float(mask_iou(fitted, masks > 127).mean())
        tiles.append((frames, fitted))
    overlay = np.concatenate([overlay_sheet(fr, fi, count=4) for fr, fi in tiles[:4]], 0)
    doc = {"source": str(src), "layout": "zju-mocap", "frames": len(fit.rotvec), "cameras": list(cams),
           "phenotype": dict(zip(PHENOTYPE_LABELS, fit.phenotype.tolist())),
           "reprojection_px_median": fit.residual_px, "mask_iou_vs_masks": ious,
           "seconds": {"landmarks": t_detect, **fit.timings, "total": total},
           "config": asdict(cfg), "fit_config": asdict(fit_cfg)}  # fmt: skip
    return {"json": doc, "overlay": overlay}
