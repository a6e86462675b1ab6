"""What generative replay draws from: the stored cameras and training poses of past appearances.

A learned appearance keeps no images, only its training cameras (``state.json``)
and poses (the version's ``replay.<key>.*`` tensors). Replay of any method draws a
past appearance, one of its training poses and one of its training cameras from
here with the term's own generator (so the draw is part of the term's explicit
state), and lets a frozen copy of the previous version render what that
appearance looked like there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from perennial.render.camera import Camera

__all__ = ["PastView", "PastViews"]


@dataclass
class PastView:
    """One replay target: an appearance seen by one of its cameras in one of its poses.

    Attributes:
        appearance: the past appearance's name.
        rotvec: (J, 3) pose, radians; translation: (3,) root, world metres.
        facial_actions: (52,) in [0, 1], or None when none were stored.
        camera: one of the appearance's training cameras.
    """

    appearance: str
    rotvec: Tensor
    translation: Tensor
    facial_actions: Tensor | None
    camera: Camera


class PastViews:
    """The past appearances' training cameras and poses.

    Args:
        cameras: appearance -> {camera name -> camera}.
        poses: appearance -> ``{"rotvec": (F, J, 3), "translation": (F, 3)}`` and
            optionally ``"facial_actions": (F, 52)``.
    """

    def __init__(self, cameras: dict[str, dict[str, Camera]], poses: dict[str, dict[str, Tensor]]) -> None:
        self.names = sorted(cameras)
        self.cameras = {n: list(cameras[n].values()) for n in self.names}
        self.poses = poses

    def __len__(self) -> int:
        return len(self.names)

    def draw(self, g: torch.Generator) -> PastView:
        """A random appearance, then a random training pose and camera of it."""
        name = self.names[int(torch.randint(len(self.names), (1,), generator=g))]
        p = self.poses[name]
        i = int(torch.randint(p["rotvec"].shape[0], (1,), generator=g))
        cams = self.cameras[name]
        cam = cams[int(torch.randint(len(cams), (1,), generator=g))]
        facial = p["facial_actions"][i] if "facial_actions" in p else None
        return PastView(name, p["rotvec"][i], p["translation"][i], facial, cam)
