"""Driving an avatar with a motion: the library's render path, with optional Motion Distribution Align.

``perennial render --motion CLIP [--align]`` is :func:`render_motion`; with ``align`` the
clip's body poses are first moved into the range of the avatar's training poses by
:mod:`perennial.motion.align` (by default a per-bone projection, instant; with its optional
learned decoder, trained on first use and cached).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from perennial.errors import PerennialError

__all__ = ["align_poses", "render_motion", "training_poses"]


def training_poses(poses: dict[str, dict[str, Tensor]]) -> Tensor:
    """(F, J, 3) every appearance's training poses (as :func:`perennial.avatar.io.load_avatar` returns
    them), in capture order, one appearance after the other."""
    rv = [p["rotvec"] for _, p in sorted(poses.items()) if "rotvec" in p]
    if not rv:
        raise PerennialError("align: the avatar keeps no training poses")
    return torch.cat(rv).float()


def align_poses(poses: dict[str, dict[str, Tensor]] | Tensor, rotvec: Tensor, prior=None, config=None) -> Tensor:
    """A motion's poses (F, J, 3) aligned to an avatar's training poses (Motion Distribution Align)."""
    from perennial.motion.align import aligner_for

    train = poses if isinstance(poses, Tensor) else training_poses(poses)
    return aligner_for(train, prior, config).align(rotvec)


def render_motion(avatar, appearance: str, cameras: list, rotvec: Tensor, translation: Tensor,
                  facial_actions: Tensor | None = None, align: bool = False,
                  poses: dict[str, dict[str, Tensor]] | Tensor | None = None, align_config=None) -> Iterator:  # fmt: skip
    """Render one frame per pose (the avatar protocol's ``render_image``), lazily.

    Args:
        avatar: any avatar (:mod:`perennial.avatar.io`).
        appearance: the appearance to show.
        cameras: one camera per frame.
        rotvec: (F, J, 3) poses; translation: (F, 3) root positions, metres.
        facial_actions: optional (F, 52).
        align: move the poses into the avatar's training distribution first.
        poses: the avatar's training poses (needed with ``align``).
        align_config: the aligner's :class:`~perennial.motion.align.AlignConfig` (default settings when None).
    """
    if align:
        if poses is None:
            raise PerennialError("render with align needs the avatar's training poses")
        rotvec = align_poses(poses, rotvec, config=align_config)
    state = None  # a texture avatar with temporal attention carries the previous frame (causal)
    for f in range(rotvec.shape[0]):
        fa = None if facial_actions is None else facial_actions[f]
        extra = {"previous": state} if getattr(avatar, "temporal", False) else {}
        out = avatar.render_image(cameras[f], rotvec[f], translation[f], appearance, fa, **extra)
        state = getattr(out, "state", None)
        yield out
