"""Side-by-side sheets: ground truth next to the renders of several avatars, with face and hand close-ups.

``perennial bench sheet --capture CAP --avatar field=AV1 --avatar texture=AV2 --out F.png``
writes one row per test view: truth, then each avatar, then the same for a
close-up of the face and of a hand (boxes from :mod:`perennial.body.regions`,
enlarged with nearest-neighbour sampling so pixels stay visible).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from perennial.body.regions import region_boxes, region_centres
from perennial.render.image import contact_sheet, save_png, to_uint8

__all__ = ["comparison_sheet"]


def _zoom(img: torch.Tensor, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """(H, W, 3) image -> the box enlarged to ``size`` x ``size`` (black when there is no box)."""
    if box is None:
        return np.zeros((size, size, 3), np.uint8)
    x0, y0, x1, y1 = box
    crop = img[y0:y1, x0:x1].permute(2, 0, 1)[None]
    return to_uint8(F.interpolate(crop, size=(size, size), mode="nearest")[0].permute(1, 2, 0))


def comparison_sheet(capture, avatars: dict, out: str | Path, views: int = 3, appearance: str | None = None) -> Path:
    """Write the sheet and return its path.

    Args:
        capture: the capture whose test views are shown (evenly spread).
        avatars: label -> avatar (any method).
        out: PNG path.
        views: how many test views.
        appearance: the appearance rendered (default: the capture's).
    """
    from perennial.body.anny import load_template

    appearance = appearance or capture.appearance
    tests = capture.views_of("test")
    picks = tests[:: max(1, math.ceil(len(tests) / views))][:views]
    template = load_template(capture.body_info["template"])
    rest = template.rest_state(capture.body_info.get("phenotype"))
    tiles, labels = [], []
    for v in picks:
        cam = capture.cameras[v.camera]
        rv, tr, fa = capture.body_params(v.frame)
        truth = capture.load_image(v)
        imgs = {"truth": truth} | {k: a.render_image(cam, rv, tr, appearance, fa).rgb for k, a in avatars.items()}
        boxes = region_boxes(cam, region_centres(template, rest, rv, tr))
        face = boxes["face"][0] if boxes["face"] else None
        hand = boxes["hands"][0] if boxes["hands"] else None
        size = cam.height
        for what, box in (("", None), ("face ", face), ("hand ", hand)):
            for label, img in imgs.items():
                tiles.append(to_uint8(img) if not what else _zoom(img, box, size))
                labels.append(f"{what}{label} {v.camera} f{v.frame}")
    path = Path(out)
    save_png(path, contact_sheet(tiles, cols=3 * (1 + len(avatars)), labels=labels))
    return path
