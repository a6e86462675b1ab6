"""Camera paths for driving videos: orbit, front, side, back."""

from __future__ import annotations

import math

from torch import Tensor

from perennial.errors import ConfigError
from perennial.render.camera import Camera

CAMERA_PATHS = ("orbit", "front", "side", "back")


def camera_path(
    kind: str, targets: Tensor, size: int, distance: float = 3.2, height: float = 1.1,
    fov_deg: float = 36.0, turns: float = 1.0,
) -> list[Camera]:  # fmt: skip
    """One camera per frame, following the body.

    Args:
        kind: ``orbit`` (circles the body ``turns`` times over the clip), ``front``
            (from -Y, the side the body faces at rest), ``side`` (from +X) or ``back``.
        targets: (F, 3) world points to look at per frame (e.g. the root), metres;
            the camera keeps its height and looks at the target's horizontal position
            at a fixed height of 0.9 m.
        size: image width and height, pixels.
        distance: horizontal distance to the target, metres.
        height: camera height above the floor (z = 0), metres.
        fov_deg: vertical field of view, degrees.
        turns: orbit turns over the clip.
    """
    if kind not in CAMERA_PATHS:
        raise ConfigError(f"unknown camera {kind!r}; choose one of {', '.join(CAMERA_PATHS)}")
    n = targets.shape[0]
    fixed = {"front": 0.0, "side": math.pi / 2, "back": math.pi}
    cams = []
    for f in range(n):
        angle = 2 * math.pi * turns * f / max(n, 1) if kind == "orbit" else fixed[kind]
        tx, ty = float(targets[f, 0]), float(targets[f, 1])
        eye = [tx + distance * math.sin(angle), ty - distance * math.cos(angle), height]
        cams.append(Camera.look_at(eye, [tx, ty, 0.9], size, size, fov_deg=fov_deg))
    return cams
