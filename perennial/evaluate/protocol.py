"""Evaluating an avatar on a capture's test views, split by what is new in each view.

Groups (decided from the capture itself):
- ``novel_view``: a held-out camera (no training view) at a training frame;
- ``novel_pose``: a training camera at a held-out frame (no training view);
- ``novel_both``: a held-out camera at a held-out frame;
- ``other``: any other test view.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from perennial.body.regions import region_boxes, region_centres
from perennial.capture.capture import Capture, View
from perennial.errors import PerennialError
from perennial.evaluate.metrics import image_metrics, lpips, psnr
from perennial.evaluate.tlpips import tlpips_clips
from perennial.progress import progress as progress_bar

GROUPS = ("novel_view", "novel_pose", "novel_both", "other")


def view_group(capture: Capture, view: View) -> str:
    """The group of a test view (see module docstring)."""
    train = capture.views_of("train")
    cam_seen = view.camera in {v.camera for v in train}
    frame_seen = view.frame in {v.frame for v in train}
    if not cam_seen and frame_seen:
        return "novel_view"
    if cam_seen and not frame_seen:
        return "novel_pose"
    if not cam_seen and not frame_seen:
        return "novel_both"
    return "other"


def evaluate_avatar(
    avatar, capture: Capture, appearance: str | None = None, lpips_nets: Sequence[str] = ("alex",),
    max_views: int | None = None, progress: bool = True, regions: bool = True, temporal: bool = True,
    fid: bool = False,
) -> dict:  # fmt: skip
    """Render every test view of ``capture`` and compare it with the ground truth.

    Args:
        avatar: an avatar of any method (``render_image``, see :mod:`perennial.avatar.io`).
        capture: the capture (its test views are used).
        appearance: appearance to render (default: the capture's).
        lpips_nets: LPIPS backbones ("alex", "vgg").
        max_views: evaluate every k-th test view so that at most this many are used.
        progress: progress bar.
        regions: also ``psnr_face``, ``lpips_face``, ``psnr_hands``, ``lpips_hands``: the
            metrics on square boxes around the face and each hand
            (:mod:`perennial.body.regions`), resized to 64 px (LPIPS AlexNet); views where
            a region is out of the image leave it out of that region's mean.
        temporal: tLPIPS (AlexNet, :mod:`perennial.evaluate.tlpips`) over the pairs of
            evaluated views of one camera at consecutive frames of the capture.
        fid: FID and KID (:mod:`perennial.evaluate.fid`) between all rendered and all real
            test views (needs the Inception file; few views: read KID).

    Returns:
        ``{"appearance", "views": [per-view dict], "groups": {group: {metric: mean, "count": n}},
        "mean": {metric: mean over all views}, "render_ms_median"}``, with ``temporal``:
        ``{"tlpips", "pairs"}`` and ``fid``: ``{"fid", "kid", "kid_std", "n_real", "n_fake"}``
        when asked for.
    """
    appearance = appearance or capture.appearance
    views = capture.views_of("test")
    if not views:
        raise PerennialError(f"{capture.root}: the capture has no test views")
    if max_views and len(views) > max_views:
        views = views[:: math.ceil(len(views) / max_views)]
    groups = {v: view_group(capture, v) for v in views}
    rows, times, images = [], [], []
    if regions:
        from perennial.body.anny import load_template

        template = load_template(capture.body_info["template"])
        rest = template.rest_state(capture.body_info.get("phenotype"))
    for v in progress_bar(views, desc=f"evaluating {appearance}", unit="view", enabled=progress):
        rotvec, translation, facial = capture.body_params(v.frame)
        extra = {}
        if getattr(avatar, "temporal", False):  # a frame of a clip: it sees the capture's previous frame
            row = capture.frame_row(v.frame)
            extra["previous"] = capture.body_params(capture.frames[max(row - 1, 0)]["index"])
        t0 = time.perf_counter()
        out = avatar.render_image(capture.cameras[v.camera], rotvec, translation, appearance, facial, **extra)
        times.append(time.perf_counter() - t0)
        gt = capture.load_image(v).permute(2, 0, 1)
        if temporal or fid:
            images.append((out.rgb.permute(2, 0, 1).float(), gt))
        mask = capture.load_mask(v)
        m = image_metrics(out.rgb.permute(2, 0, 1), gt, mask, lpips_nets=lpips_nets)
        row = {"camera": v.camera, "frame": v.frame, "group": groups[v], **{k: float(x) for k, x in m.items()}}
        if regions:
            centres = region_centres(template, rest, rotvec, translation)
            row |= region_metrics(out.rgb.permute(2, 0, 1), gt, region_boxes(capture.cameras[v.camera], centres))
        rows.append(row)
    keys = [k for k in rows[0] if k not in ("camera", "frame", "group")]

    def mean(rs):
        out = {}
        for k in keys:
            vals = [r[k] for r in rs if not math.isnan(r[k])]
            out[k] = sum(vals) / len(vals) if vals else float("nan")
        return out | {"count": len(rs)}

    by_group = {g: mean([r for r in rows if r["group"] == g]) for g in GROUPS if any(r["group"] == g for r in rows)}
    result = {
        "appearance": appearance,
        "views": rows,
        "groups": by_group,
        "mean": mean(rows),
        "render_ms_median": 1000 * float(torch.tensor(times).median()),
    }
    if temporal:
        value, pairs = tlpips_clips(_clips(capture, views, images))
        result["temporal"] = {"tlpips": value, "pairs": pairs}
    if fid:
        from perennial.evaluate.fid import fid_kid

        result["fid"] = fid_kid(torch.stack([g for _, g in images]), torch.stack([p for p, _ in images]))
    return result


def _clips(capture: Capture, views: list[View], images: list[tuple[Tensor, Tensor]]):
    """(pred, gt) clips: runs of views of one camera at consecutive frames of the capture."""
    by_camera: dict[str, list[tuple[int, int]]] = {}
    for i, v in enumerate(views):
        by_camera.setdefault(v.camera, []).append((capture.frame_row(v.frame), i))
    for entries in by_camera.values():
        entries.sort()
        run = [entries[0]]
        for entry in [*entries[1:], None]:
            if entry is not None and entry[0] == run[-1][0] + 1:
                run.append(entry)
                continue
            if len(run) >= 2:
                yield tuple(torch.stack([images[i][k] for _, i in run]) for k in (0, 1))
            if entry is not None:
                run = [entry]


def region_metrics(pred: Tensor, gt: Tensor, boxes: dict[str, list[tuple[int, int, int, int]]],
                   size: int = 64) -> dict[str, float]:  # fmt: skip
    """PSNR and LPIPS (AlexNet) on each region's boxes, resized to ``size`` px, averaged per region.

    Args:
        pred, gt: (3, H, W) images in [0, 1].
        boxes: region -> pixel boxes ``(x0, y0, x1, y1)`` (:func:`perennial.body.regions.region_boxes`).

    Returns:
        ``psnr_<region>`` and ``lpips_<region>``; ``nan`` for a region without a box.
    """
    out = {}
    for region, bs in boxes.items():
        ps, ls = [], []
        for x0, y0, x1, y1 in bs:
            p, g = (F.interpolate(t[None, :, y0:y1, x0:x1], size=(size, size), mode="bilinear",
                                  align_corners=False) for t in (pred, gt))  # fmt: skip
            ps.append(float(psnr(p, g)[0]))
            ls.append(float(lpips(p, g, "alex")[0]))
        out[f"psnr_{region}"] = sum(ps) / len(ps) if ps else float("nan")
        out[f"lpips_{region}"] = sum(ls) / len(ls) if ls else float("nan")
    return out


def format_table(result: dict) -> str:
    """A small fixed-width table of the group means."""
    cols = [k for k in ("psnr", "ssim", "lpips_alex", "lpips_vgg", "psnr_bbox", "ssim_bbox", "lpips_face",
                        "lpips_hands") if k in result["mean"]]  # fmt: skip
    lines = [f"{'group':12s} {'views':>5s} " + " ".join(f"{c:>10s}" for c in cols)]
    for g, m in [*result["groups"].items(), ("all", result["mean"])]:
        lines.append(f"{g:12s} {m['count']:5d} " + " ".join(f"{m[c]:10.4f}" for c in cols))
    if "temporal" in result:
        t = result["temporal"]
        lines.append(f"tLPIPS {t['tlpips']:.4f} over {t['pairs']} pairs of consecutive frames" if t["pairs"]
                     else "tLPIPS: no two evaluated views of one camera at consecutive frames")  # fmt: skip
    if "fid" in result:
        from perennial.evaluate.fid import format_fid_kid

        lines.append(format_fid_kid(result["fid"]))
    return "\n".join(lines)
