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

from perennial.capture.capture import Capture, View
from perennial.errors import PerennialError
from perennial.evaluate.metrics import image_metrics
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
    max_views: int | None = None, progress: bool = True,
) -> dict:  # fmt: skip
    """Render every test view of ``capture`` and compare it with the ground truth.

    Args:
        avatar: an avatar of any method (``render_image``, see :mod:`perennial.avatar.io`).
        capture: the capture (its test views are used).
        appearance: appearance to render (default: the capture's).
        lpips_nets: LPIPS backbones ("alex", "vgg").
        max_views: evaluate every k-th test view so that at most this many are used.
        progress: progress bar.

    Returns:
        ``{"appearance", "views": [per-view dict], "groups": {group: {metric: mean, "count": n}},
        "mean": {metric: mean over all views}, "render_ms_median"}``.
    """
    appearance = appearance or capture.appearance
    views = capture.views_of("test")
    if not views:
        raise PerennialError(f"{capture.root}: the capture has no test views")
    if max_views and len(views) > max_views:
        views = views[:: math.ceil(len(views) / max_views)]
    groups = {v: view_group(capture, v) for v in views}
    rows, times = [], []
    for v in progress_bar(views, desc=f"evaluating {appearance}", unit="view", enabled=progress):
        rotvec, translation, facial = capture.body_params(v.frame)
        t0 = time.perf_counter()
        out = avatar.render_image(capture.cameras[v.camera], rotvec, translation, appearance, facial)
        times.append(time.perf_counter() - t0)
        gt = capture.load_image(v).permute(2, 0, 1)
        mask = capture.load_mask(v)
        m = image_metrics(out.rgb.permute(2, 0, 1), gt, mask, lpips_nets=lpips_nets)
        rows.append({"camera": v.camera, "frame": v.frame, "group": groups[v],
                     **{k: float(x) for k, x in m.items()}})  # fmt: skip
    keys = [k for k in rows[0] if k not in ("camera", "frame", "group")]

    def mean(rs):
        return {k: sum(r[k] for r in rs) / len(rs) for k in keys} | {"count": len(rs)}

    by_group = {g: mean([r for r in rows if r["group"] == g]) for g in GROUPS if any(r["group"] == g for r in rows)}
    return {
        "appearance": appearance,
        "views": rows,
        "groups": by_group,
        "mean": mean(rows),
        "render_ms_median": 1000 * float(torch.tensor(times).median()),
    }


def format_table(result: dict) -> str:
    """A small fixed-width table of the group means."""
    cols = [k for k in ("psnr", "ssim", "lpips_alex", "lpips_vgg", "psnr_bbox", "ssim_bbox") if k in result["mean"]]
    lines = [f"{'group':12s} {'views':>5s} " + " ".join(f"{c:>10s}" for c in cols)]
    for g, m in [*result["groups"].items(), ("all", result["mean"])]:
        lines.append(f"{g:12s} {m['count']:5d} " + " ".join(f"{m[c]:10.4f}" for c in cols))
    return "\n".join(lines)
