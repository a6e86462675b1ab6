"""Where the face and the hands are: world centres and image boxes for crops and metrics.

The face centre is the mean of the posed vertices of Anny's ``head`` part, each
hand's the mean of its ``hand.L`` / ``hand.R`` vertices. Boxes are squares of a
fixed world size around a centre, projected with the centre's depth.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["REGION_SIZE", "region_boxes", "region_centres"]

REGION_SIZE = {"face": 0.26, "hands": 0.22}
"""Side of a region's box, metres (a head is ~0.23 m tall, an open hand ~0.19 m long)."""


def region_centres(template, rest, rotvec: Tensor, translation: Tensor) -> dict[str, Tensor]:
    """World centres of the face and of each hand in one pose.

    Args:
        template: the body template; rest: its :meth:`rest_state` for the person.
        rotvec: (J, 3) radians; translation: (3,) world metres.

    Returns:
        ``{"face": (1, 3), "hands": (2, 3)}`` world metres (left hand first).
    """
    names = list(template.part_names)
    with torch.no_grad():
        verts, _ = template.pose_rest(rotvec[None].float(), translation[None].float(), rest)
    verts = verts[0]
    labels = template.part_labels
    face = verts[labels == names.index("head")].mean(0, keepdim=True)
    hands = torch.stack([verts[labels == names.index(f"hand.{s}")].mean(0) for s in "LR"])
    return {"face": face, "hands": hands}


def region_boxes(camera, centres: dict[str, Tensor], sizes: dict[str, float] | None = None
                 ) -> dict[str, list[tuple[int, int, int, int]]]:  # fmt: skip
    """Pixel boxes ``(x0, y0, x1, y1)`` (exclusive ends) of the regions in front of the camera.

    A box is the projection of a square of ``sizes[region]`` metres around the centre,
    clipped to the image; a centre behind the camera or outside the image has no box.
    """
    sizes = sizes or REGION_SIZE
    fx = float(camera.K[0, 0])
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for region, pts in centres.items():
        uv, z = camera.project(pts)
        boxes = []
        for (u, v), d in zip(uv.tolist(), z.tolist()):
            if d <= 0 or not (0 <= u < camera.width and 0 <= v < camera.height):
                continue
            half = max(4.0, 0.5 * sizes[region] * fx / d)
            x0, y0 = max(int(u - half), 0), max(int(v - half), 0)
            x1, y1 = min(int(u + half) + 1, camera.width), min(int(v + half) + 1, camera.height)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                boxes.append((x0, y0, x1, y1))
        out[region] = boxes
    return out
