"""Seeded face and finger animation for synthetic captures.

Both tracks are key-framed: at seeded key times (a few tenths of a second
apart) a named expression or hand shape is drawn with a seeded intensity, and
frames between two keys blend them with a smoothstep. Blinks, gaze and a little
speech-like jaw motion are laid over the face. Everything is a pure function of
``(frames, fps, seed)``: same inputs, same numbers, on any machine.

Finger rotations are flexions about each finger bone's own bending axis (its
local X axis, which curls the finger towards the palm in Anny's ``anny`` rig)
plus a small spread of the first joint about the bone's local Z axis (the palm
normal), returned as Anny ``local-ref`` rotation vectors: the axis is the
bone's identity-pose orientation in world axes.
"""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor

from perennial.body.rig import ANNY_BONES, ANNY_FACIAL_ACTIONS

__all__ = [
    "EXPRESSIONS", "HAND_SHAPES", "FINGER_MAX_FLEXION", "FINGER_MAX_SPREAD",
    "facial_action_track", "finger_bone_indices", "finger_rotvecs", "hand_shape_track",
]  # fmt: skip

EXPRESSIONS: dict[str, dict[str, float]] = {
    "smile": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6, "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3},  # fmt: skip
    "grin": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "jawOpen": 0.35, "mouthUpperUpLeft": 0.5, "mouthUpperUpRight": 0.5, "cheekSquintLeft": 0.8, "cheekSquintRight": 0.8},  # fmt: skip
    "surprise": {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0, "eyeWideLeft": 1.0, "eyeWideRight": 1.0, "jawOpen": 0.6},  # fmt: skip
    "sad": {"mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "browInnerUp": 0.9, "mouthShrugLower": 0.5, "eyeLookDownLeft": 0.4, "eyeLookDownRight": 0.4},  # fmt: skip
    "angry": {"browDownLeft": 1.0, "browDownRight": 1.0, "noseSneerLeft": 0.6, "noseSneerRight": 0.6, "mouthPressLeft": 0.7, "mouthPressRight": 0.7, "eyeSquintLeft": 0.6, "eyeSquintRight": 0.6},  # fmt: skip
    "disgust": {"noseSneerLeft": 1.0, "noseSneerRight": 1.0, "mouthUpperUpLeft": 0.8, "mouthUpperUpRight": 0.8, "browDownLeft": 0.5, "browDownRight": 0.5},  # fmt: skip
    "pucker": {"mouthPucker": 1.0, "browInnerUp": 0.4},
    "oo": {"mouthFunnel": 1.0, "jawOpen": 0.3},
    "ah": {"jawOpen": 0.85, "browOuterUpLeft": 0.3, "browOuterUpRight": 0.3},
    "puff": {"cheekPuff": 1.0, "mouthPucker": 0.3},
    "smirk": {"mouthSmileLeft": 1.0, "mouthLeft": 0.5, "browOuterUpLeft": 0.6, "cheekSquintLeft": 0.6},
    "wink": {"eyeBlinkRight": 1.0, "mouthSmileRight": 0.7, "cheekSquintRight": 0.7},
    "tongue": {"tongueOut": 1.0, "jawOpen": 0.5},
    "stretch": {"mouthStretchLeft": 1.0, "mouthStretchRight": 1.0, "jawOpen": 0.2, "eyeWideLeft": 0.5, "eyeWideRight": 0.5},  # fmt: skip
}
"""Named expressions: ARKit facial-action weights in [0, 1] at full intensity."""

HAND_SHAPES: dict[str, tuple[tuple[float, float, float, float, float], float]] = {
    "open": ((0.0, 0.0, 0.0, 0.0, 0.0), 0.0),
    "spread": ((0.0, 0.0, 0.0, 0.0, 0.0), 1.0),
    "relaxed": ((0.2, 0.3, 0.35, 0.4, 0.45), 0.2),
    "fist": ((0.8, 1.0, 1.0, 1.0, 1.0), 0.0),
    "point": ((0.7, 0.0, 1.0, 1.0, 1.0), 0.0),
    "peace": ((0.8, 0.0, 0.0, 1.0, 1.0), 0.8),
    "thumbs-up": ((0.0, 1.0, 1.0, 1.0, 1.0), 0.0),
    "ok": ((0.6, 0.65, 0.1, 0.1, 0.1), 0.5),
    "claw": ((0.4, 0.55, 0.55, 0.55, 0.55), 0.6),
    "rock": ((0.7, 0.0, 1.0, 1.0, 0.0), 0.7),
}
"""Named hand shapes: per-finger curl in [0, 1] (thumb, index, middle, ring, little) and spread in [0, 1]."""

FINGER_MAX_FLEXION = ((0.45, 0.55, 0.7), (1.3, 1.4, 1.0))
"""Flexion at full curl of the three joints (proximal to distal), radians: thumb, then the other fingers.

At most 80 degrees per joint; the thumb bends less."""
FINGER_MAX_SPREAD = (0.3, 0.2, 0.06, 0.1, 0.22)
"""Spread of each finger's first joint at full spread, radians (thumb ... little)."""
_SPREAD_SIGN = (1.0, 1.0, 0.3, -1.0, -1.0)
"""Direction of each finger's spread: +1 towards the thumb side, -1 towards the little finger."""

_KEY_GAP = (0.2, 0.45)
"""Seconds between two key poses (uniform)."""
_FACE_GAP = (0.25, 0.55)
_BLINK_GAP = (0.6, 2.2)
_BLINK_LENGTH = 0.16


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _key_times(rng: random.Random, duration: float, gap: tuple[float, float]) -> list[float]:
    """Seeded key times from before 0 to past ``duration`` seconds."""
    times = [-rng.uniform(0.0, gap[1])]
    while times[-1] <= duration:
        times.append(times[-1] + rng.uniform(*gap))
    return times


def _blend(times: list[float], values: list[Tensor], t: float) -> Tensor:
    """Smoothstep blend between the key values around time ``t``."""
    i = max(k for k in range(len(times) - 1) if times[k] <= t)
    w = _smoothstep((t - times[i]) / (times[i + 1] - times[i]))
    return values[i] * (1 - w) + values[i + 1] * w


def facial_action_track(frames: int, fps: float, seed: int) -> Tensor:
    """Seeded facial actions of a clip.

    Args:
        frames: number of frames F.
        fps: frame rate, frames per second.
        seed: the seed; the same seed gives the same track.

    Returns:
        (F, 52) float32 ARKit weights in [0, 1], columns in
        :data:`~perennial.body.rig.ANNY_FACIAL_ACTIONS` order.
    """
    rng = random.Random(f"perennial-face-{seed}")
    col = {n: i for i, n in enumerate(ANNY_FACIAL_ACTIONS)}
    duration = (frames - 1) / fps
    names = sorted(EXPRESSIONS)
    times = _key_times(rng, duration, _FACE_GAP)
    keys, last = [], None
    for _ in times:
        name = rng.choice([n for n in names if n != last])
        last = name
        v = torch.zeros(len(ANNY_FACIAL_ACTIONS))
        strength = rng.uniform(0.6, 1.0)
        for action, w in EXPRESSIONS[name].items():
            v[col[action]] = w * strength
        keys.append(v)
    blinks = _key_times(rng, duration, _BLINK_GAP)[1:]
    gaze_times = _key_times(rng, duration, (0.4, 1.0))
    gaze = [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in gaze_times]
    talk_amp, talk_hz, talk_phase = rng.uniform(0.05, 0.2), rng.uniform(3.0, 5.0), rng.uniform(0, 2 * math.pi)
    out = torch.zeros(frames, len(ANNY_FACIAL_ACTIONS))
    for f in range(frames):
        t = f / fps
        v = _blend(times, keys, t).clone()
        # blinks: a triangular pulse of _BLINK_LENGTH seconds at each blink time
        blink = max((1 - abs(t - b) / (_BLINK_LENGTH / 2) for b in blinks), default=0.0)
        if blink > 0:
            for side in ("Left", "Right"):
                v[col[f"eyeBlink{side}"]] = max(float(v[col[f"eyeBlink{side}"]]), blink)
        # gaze: horizontal h (+ = towards the body's left), vertical g (+ = up)
        h, g = _blend(gaze_times, [torch.tensor(x) for x in gaze], t).tolist()
        v[col["eyeLookOutLeft"]] += max(h, 0.0) * 0.8
        v[col["eyeLookInRight"]] += max(h, 0.0) * 0.8
        v[col["eyeLookInLeft"]] += max(-h, 0.0) * 0.8
        v[col["eyeLookOutRight"]] += max(-h, 0.0) * 0.8
        for side in ("Left", "Right"):
            v[col[f"eyeLookUp{side}"]] += max(g, 0.0) * 0.6
            v[col[f"eyeLookDown{side}"]] += max(-g, 0.0) * 0.6
        # a little speech-like jaw motion
        v[col["jawOpen"]] += talk_amp * (0.5 + 0.5 * math.sin(2 * math.pi * talk_hz * t + talk_phase))
        out[f] = v
    return out.clamp(0.0, 1.0)


def hand_shape_track(frames: int, fps: float, seed: int) -> Tensor:
    """Seeded per-finger curl and spread of both hands.

    Returns:
        (F, 2, 6) float32 in [0, 1]: hand (0 left, 1 right), then curl of the
        thumb, index, middle, ring and little finger, then the spread.
    """
    rng = random.Random(f"perennial-hands-{seed}")
    duration = (frames - 1) / fps
    names = sorted(HAND_SHAPES)
    out = torch.zeros(frames, 2, 6)
    for hand in range(2):
        times = _key_times(rng, duration, _KEY_GAP)
        keys, last = [], None
        for _ in times:
            name = rng.choice([n for n in names if n != last])
            last = name
            curl, spread = HAND_SHAPES[name]
            strength = rng.uniform(0.75, 1.0)
            v = torch.tensor([c * strength + rng.uniform(-0.08, 0.08) for c in curl] + [spread * strength])
            keys.append(v.clamp(0.0, 1.0))
        for f in range(frames):
            out[f, hand] = _blend(times, keys, f / fps)
    return out.clamp(0.0, 1.0)


def finger_bone_indices(side: str) -> list[list[int]]:
    """Bone ids of the three joints of each finger (thumb first) of hand ``side`` (``"L"``/``"R"``)."""
    index = {b: i for i, b in enumerate(ANNY_BONES)}
    return [[index[f"finger{k}-{j}.{side}"] for j in (1, 2, 3)] for k in range(1, 6)]


def finger_rotvecs(shapes: Tensor, bone_poses: Tensor) -> Tensor:
    """Finger rotations for hand shapes.

    Args:
        shapes: (F, 2, 6) from :func:`hand_shape_track`.
        bone_poses: (J, 4, 4) identity-pose world pose of each bone (rotation
            columns: the bone's local X, Y (along the bone) and Z axes; last column:
            the bone head, metres), e.g. ``template(*template.rest_pose(1)).bone_poses[0]``.

    Returns:
        (F, J, 3) ``local-ref`` rotation vectors, radians: zero except on the 30
        finger bones.
    """
    F = shapes.shape[0]
    rv = torch.zeros(F, len(ANNY_BONES), 3)
    poses = bone_poses.to(torch.float32).cpu()
    for hand, side in enumerate(("L", "R")):
        fingers = finger_bone_indices(side)
        # across the palm, from the little finger's knuckle to the index finger's
        across = poses[fingers[1][0], :3, 3] - poses[fingers[4][0], :3, 3]
        for k, bones in enumerate(fingers):
            limits = FINGER_MAX_FLEXION[0 if k == 0 else 1]
            for j, b in enumerate(bones):
                rv[:, b] = (shapes[:, hand, k] * limits[j])[:, None] * poses[b, :3, 0]
            # spread: the first joint about its Z axis (the palm normal); +a about Z moves
            # the finger towards -X, which ``towards_thumb`` orients across the palm
            b = bones[0]
            towards_thumb = 1.0 if float(-poses[b, :3, 0] @ across) >= 0 else -1.0
            angle = shapes[:, hand, 5] * FINGER_MAX_SPREAD[k] * _SPREAD_SIGN[k] * towards_thumb
            rv[:, b] = _compose(angle[:, None] * poses[b, :3, 2], rv[:, b])
    return rv


def _compose(first: Tensor, second: Tensor) -> Tensor:
    """Rotation vector of ``R(first) @ R(second)`` (both (F, 3))."""
    import roma

    return roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(first) @ roma.rotvec_to_rotmat(second))
