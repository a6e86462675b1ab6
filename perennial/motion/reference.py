"""The source pose that Anny's identity pose is aligned with (a bone map's ``reference``).

The BVH rest pose (every channel zero) is the usual reference: every world rotation
is the identity there and the offsets draw the skeleton. Some exporters write a rest
that is not a human pose at all (every bone along its local +Y or +X, so the zero
pose is a straight line); for those a frame of the motion serves as the reference.
:func:`pose_scores` rates poses for that: upright torso and head, straight vertical
legs, flat feet, feet side by side (a person standing); :func:`choose_reference_frame`
takes the best frame (frame 0 when it is nearly as good: many files start in a
calibration pose).

Positions are in the file's units and axes; ``up`` is a unit vector in those axes.
"""

from __future__ import annotations

import numpy as np

from perennial.motion.bonemap import BoneMap, RetargetError, axis_vector
from perennial.motion.bvh import BVH
from perennial.motion.kinematics import forward_kinematics

__all__ = ["KEY_BONES", "choose_reference_frame", "is_standing", "key_joints", "pose_scores", "pose_terms",
           "reference_pose"]

KEY_BONES = {
    "thigh.L": "upperleg01.L", "thigh.R": "upperleg01.R", "knee.L": "lowerleg01.L", "knee.R": "lowerleg01.R",
    "ankle.L": "foot.L", "ankle.R": "foot.R", "toe.L": "toe1-1.L", "toe.R": "toe1-1.R", "root": "root",
    "neck": "neck01", "chest": "spine01", "head": "head",
}  # fmt: skip
"""Key points of a pose and the Anny bone whose source joint marks each."""
NEEDED = {"thigh.L", "thigh.R", "knee.L", "knee.R", "ankle.L", "ankle.R", "root", "head"}
"""Key points :func:`pose_scores` cannot do without."""
SAMPLES = 600
"""Frames scored at most (evenly strided) when choosing a reference frame."""
FIRST_FRAME_MARGIN = 0.05
"""Frame 0 is taken when its score is within this of the best frame's."""


def key_joints(bvh: BVH, bmap: BoneMap) -> dict[str, int]:
    """Source joint index of each key point the map marks (evaluation joints first)."""
    out = {}
    for key, bone in KEY_BONES.items():
        joint = bmap.evaluate.get(bone) or bmap.bones.get(bone)
        if joint is not None and joint in bvh.names:
            out[key] = bvh.index(joint)
    if "neck" not in out and "chest" in out:
        out["neck"] = out["chest"]
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-12)


def pose_terms(P: np.ndarray, keys: dict[str, int], up: np.ndarray) -> dict[str, np.ndarray]:
    """The terms of :func:`pose_scores`, each (F,): ``legs_down`` (per leg, -1..1: the
    hip-to-ankle direction against ``up``; the smaller of the two legs), ``legs_straight``
    (mean over legs of hip-to-ankle distance / thigh + shin, 0..1), ``feet_flat`` (0..1,
    1 when no toes), ``torso_up`` and ``head_up`` (-1..1), ``feet_apart`` (horizontal
    ankle distance / leg length)."""
    down, straight, flat, legs = [], [], [], []
    for s in "LR":
        hip, knee, ankle = (P[:, keys[f"{k}.{s}"]] for k in ("thigh", "knee", "ankle"))
        d = ankle - hip
        chain = np.linalg.norm(knee - hip, axis=-1) + np.linalg.norm(ankle - knee, axis=-1)
        down.append(-(_unit(d) @ up))
        straight.append(np.linalg.norm(d, axis=-1) / chain.clip(1e-12))
        legs.append(chain)
        f = P[:, keys[f"toe.{s}"]] - ankle if f"toe.{s}" in keys else np.zeros_like(d)
        flat.append(np.where(np.linalg.norm(f, axis=-1) > 0, 1 - np.abs(_unit(f) @ up), 1.0))
    neck = P[:, keys.get("neck", keys["head"])]
    head = P[:, keys["head"]] - neck
    apart = P[:, keys["ankle.L"]] - P[:, keys["ankle.R"]]
    apart = apart - (apart @ up)[:, None] * up
    return {
        "legs_down": np.minimum(*down),
        "legs_straight": np.mean(straight, 0),
        "feet_flat": np.mean(flat, 0),
        "torso_up": _unit(neck - P[:, keys["root"]]) @ up,
        "head_up": np.where(np.linalg.norm(head, axis=-1) > 0, _unit(head) @ up, 1.0),
        "feet_apart": np.linalg.norm(apart, axis=-1) / np.mean(legs, 0).clip(1e-12),
    }


def pose_scores(P: np.ndarray, keys: dict[str, int], up: np.ndarray) -> np.ndarray:
    """How much each pose looks like a person standing upright (higher is better).

    Args:
        P: (F, J, 3) joint positions, file units.
        keys: key point -> joint index (:func:`key_joints`); thighs, knees, ankles,
            root and head are needed, toes and neck are used when present.
        up: (3,) unit up vector in the file's axes.

    Returns:
        (F,) score, 5 for a person standing straight with flat feet together.
    """
    t = pose_terms(P, keys, up)
    return (t["legs_down"] + t["legs_straight"] + t["feet_flat"] + t["torso_up"] + t["head_up"]
            - np.clip(t["feet_apart"] - 0.4, 0, None))  # fmt: skip


def is_standing(P: np.ndarray, keys: dict[str, int], up: np.ndarray) -> bool:
    """A pose (J, 3) of a person standing: legs down, torso and head up (the feet may be
    apart and turned, the legs splayed, the arms anywhere)."""
    t = {k: float(v[0]) for k, v in pose_terms(P[None], keys, up).items()}
    return t["legs_down"] > 0.7 and t["legs_straight"] > 0.8 and t["torso_up"] > 0.7 and t["head_up"] > 0.3


def motion_up(bvh: BVH, keys: dict[str, int], frames: np.ndarray | None = None) -> np.ndarray:
    """(3,) mean direction from the ankles to the head over (sampled) frames, file axes."""
    if frames is None:
        frames = _sample(bvh.num_frames)
    P, _ = forward_kinematics(bvh, frames)
    v = P[:, keys["head"]] - 0.5 * (P[:, keys["ankle.L"]] + P[:, keys["ankle.R"]])
    return _unit(_unit(v).mean(0))


def _sample(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, SAMPLES)).round().astype(int))


def choose_reference_frame(bvh: BVH, keys: dict[str, int], up: np.ndarray) -> int:
    """The frame that best looks like a person standing (:func:`pose_scores`), frame 0
    when it scores within :data:`FIRST_FRAME_MARGIN` of the best."""
    frames = _sample(bvh.num_frames)
    P, _ = forward_kinematics(bvh, frames)
    s = pose_scores(P, keys, up)
    best = int(np.argmax(s))
    if frames[0] == 0 and s[0] >= s[best] - FIRST_FRAME_MARGIN:
        return 0
    return int(frames[best])


def reference_pose(bvh: BVH, bmap: BoneMap) -> tuple[int | None, np.ndarray, np.ndarray]:
    """The map's reference pose of this file.

    Returns:
        the frame index (None for the rest pose), joint positions (J, 3) in file units
        and world rotations (J, 3, 3) in the file's axes.
    """
    ref = bmap.reference
    if ref == "rest":
        pos, rot = forward_kinematics(bvh, rest=True)
        return None, pos[0], rot[0]
    if ref == "auto":
        keys = key_joints(bvh, bmap)
        ref = choose_reference_frame(bvh, keys, axis_vector(bmap.up)) if NEEDED <= set(keys) else 0
    frame = int(ref)
    if frame >= bvh.num_frames:
        raise RetargetError(f"{bvh.path}: bone map {bmap.name!r} takes frame {frame} as its reference pose, "
                            f"but the file has {bvh.num_frames} frames")  # fmt: skip
    pos, rot = forward_kinematics(bvh, np.array([frame]))
    return frame, pos[0], rot[0]
