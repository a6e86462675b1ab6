"""Built-in procedural motions for the ``anny`` rig (no mocap needed).

Rotations are per-bone rotation vectors in Anny's ``local-ref`` parameterisation:
relative to the parent, expressed in world-aligned axes at rest (X to the body's
left, Y backwards, Z up). With these axes, a rotation about +X swings a hanging
leg backwards, one about +Y lowers the left arm and raises the right one.

Every motion is a function of a phase in [0, 1) plus a seed-free amplitude, so a
clip of any length is exact and deterministic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from perennial.body.rig import ANNY_BONES
from perennial.errors import ConfigError

MOTIONS: tuple[str, ...] = ("walk", "wave", "squat", "turn", "mix")
_IDX = {b: i for i, b in enumerate(ANNY_BONES)}


def _set(rv: Tensor, bone: str, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> None:
    rv[_IDX[bone]] += torch.tensor([x, y, z])


def _relaxed_arms(rv: Tensor, swing: float = 0.0) -> None:
    """Arms from Anny's A-pose to hanging along the body, swinging by ``swing`` radians."""
    _set(rv, "upperarm01.L", x=swing, y=0.55)
    _set(rv, "upperarm01.R", x=-swing, y=-0.55)
    _set(rv, "lowerarm01.L", x=-0.15)
    _set(rv, "lowerarm01.R", x=-0.15)


def _walk(phase: float) -> tuple[Tensor, Tensor]:
    rv = torch.zeros(len(ANNY_BONES), 3)
    # starts at the widest stride, so frames half a cycle apart are the two strides
    s = math.cos(2 * math.pi * phase)
    _set(rv, "upperleg01.L", x=-0.45 * s)
    _set(rv, "upperleg01.R", x=0.45 * s)
    _set(rv, "lowerleg01.L", x=0.7 * max(0.0, s))
    _set(rv, "lowerleg01.R", x=0.7 * max(0.0, -s))
    _set(rv, "foot.L", x=-0.2 * max(0.0, s))
    _set(rv, "foot.R", x=-0.2 * max(0.0, -s))
    _relaxed_arms(rv, swing=0.35 * s)
    _set(rv, "spine03", z=0.08 * s)
    lift = 0.02 * abs(s)
    return rv, torch.tensor([0.0, 0.0, -lift])


def _wave(phase: float) -> tuple[Tensor, Tensor]:
    rv = torch.zeros(len(ANNY_BONES), 3)
    # one wave per cycle, starting at the end of a swing: frames half a cycle apart (a
    # 2-frame clip) fall on opposite ends; two waves per cycle gave the same pose twice
    s = math.cos(2 * math.pi * phase)
    _relaxed_arms(rv)
    rv[_IDX["upperarm01.R"]] = torch.tensor([0.0, 1.2, 0.0])  # raise the right arm sideways
    _set(rv, "lowerarm01.R", y=0.9 + 0.45 * s)  # forearm up, waving
    _set(rv, "head", z=0.15 * s, x=-0.05)
    _set(rv, "spine02", y=0.05 * s)
    return rv, torch.zeros(3)


def _squat(phase: float) -> tuple[Tensor, Tensor]:
    rv = torch.zeros(len(ANNY_BONES), 3)
    a = 0.5 - 0.5 * math.cos(2 * math.pi * phase)  # 0 -> 1 -> 0
    bend = 1.1 * a
    for side in ("L", "R"):
        _set(rv, f"upperleg01.{side}", x=-bend)
        _set(rv, f"lowerleg01.{side}", x=2 * bend)
        _set(rv, f"foot.{side}", x=-bend)
    _set(rv, "spine04", x=-0.35 * a)
    _set(rv, "upperarm01.L", x=-1.2 * a, y=0.55 * (1 - a))
    _set(rv, "upperarm01.R", x=-1.2 * a, y=-0.55 * (1 - a))
    # thigh ~0.42 m, shin ~0.40 m: the hips drop by about l (1 - cos bend) each
    drop = 0.42 * (1 - math.cos(bend)) + 0.40 * (1 - math.cos(bend))
    return rv, torch.tensor([0.0, 0.0, -drop])


def _turn(phase: float) -> tuple[Tensor, Tensor]:
    rv = torch.zeros(len(ANNY_BONES), 3)
    _relaxed_arms(rv, swing=0.1 * math.sin(4 * math.pi * phase))
    rv[_IDX["root"]] = torch.tensor([0.0, 0.0, 2 * math.pi * phase])
    _set(rv, "head", z=0.2 * math.sin(2 * math.pi * phase))
    return rv, torch.zeros(3)


_FUNCS = {"walk": _walk, "wave": _wave, "squat": _squat, "turn": _turn}


def procedural_motion(name: str, frames: int, cycles: float = 1.0) -> tuple[Tensor, Tensor]:
    """A built-in motion sampled at ``frames`` frames.

    Args:
        name: one of :data:`MOTIONS`. ``mix`` plays walk, wave, squat and turn
            one after the other (a quarter of the frames each).
        frames: number of frames.
        cycles: motion cycles over the clip (per part for ``mix``).

    Returns:
        rotvec (F, J, 3) in ``local-ref`` and root offset (F, 3) in metres, to be
        added to the standing root position.
    """
    if name not in MOTIONS:
        raise ConfigError(f"unknown motion {name!r}; built-in motions: {', '.join(MOTIONS)}")
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    rots, offs = [], []
    for f in range(frames):
        if name == "mix":
            part = min(4 * f // frames, 3)
            start, stop = part * frames / 4, (part + 1) * frames / 4
            key = ("walk", "wave", "squat", "turn")[part]
            phase = ((f - start) / max(stop - start, 1)) * cycles % 1.0
        else:
            key, phase = name, (f / frames) * cycles % 1.0
        rv, off = _FUNCS[key](phase)
        rots.append(rv)
        offs.append(off)
    return torch.stack(rots), torch.stack(offs)
