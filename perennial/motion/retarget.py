"""Retargeting skeleton motion (BVH, or ASF/AMC read as BVH) onto Anny's ``anny`` rig,
vectorised over frames.

Frames and units: the source is read in its own axes and units; the bone map
(:class:`~perennial.motion.bonemap.BoneMap`, given or recognised from the file by
:mod:`perennial.motion.skeleton_detect`) gives the rotation ``C`` from source axes to
Anny's world frame (metres, Z up, the body faces -Y, its left is +X) and the metres
per file unit. Source positions are further scaled to Anny's leg length
(:func:`~perennial.motion.retarget_plan.body_scale`), so a taller performer's steps
fit Anny's legs.

Model. Anny's ``local-ref`` forward kinematics, written with the *world delta*
``G_c`` of each bone (its posed world orientation times the transpose of its
reference orientation, the reference being the identity pose):

- ``G_c = G_p @ D_c`` where ``D_c`` is the bone's ``local-ref`` rotation, so
  ``D_c = G_p^T G_c`` (and ``D_0 = G_0``: the root's rotation is its world delta);
- bone heads ``j_c = j_p + G_p @ (q_c - q_p)``, with ``q`` the identity-pose bone
  heads and ``j_0`` the root translation (:mod:`perennial.motion.rest`).

A BVH joint's world rotation ``R_s`` is measured against the source's reference
pose (the rest pose, where every world rotation is the identity, or a frame for
files whose rest is not a human pose: :mod:`perennial.motion.reference`). A mapped
Anny bone ``b`` driven by source joint ``s`` gets ``G_b = (C R_s R_ref,s^T C^T) A_b``,
where the constant alignment ``A_b`` says how Anny's identity pose sits relative to
the source's reference pose for that bone; the bone's mode (``"aim"``, ``"reach"``,
``"inherit"``, ``"world"``) chooses it, see :mod:`perennial.motion.bonemap` and
:mod:`perennial.motion.retarget_plan`. A ``"reach"`` bone is, after its ``"aim"``
alignment, swung per frame to point from Anny's posed joint to the source's posed
child joint.

Unmapped Anny bones *follow their parent*: their ``local-ref`` rotation is zero,
so fingers, toes' outer phalanges, twist bones and the eyes keep their identity-pose
shape relative to the nearest mapped ancestor.

Root translation: the root is placed so that Anny's hip-joint midpoint
(``upperleg01.L/R``) coincides with the source's mapped hip joints, frame by
frame (or on the source root joint when the upper legs are unmapped), so the
source world trajectory is kept, scaled to metres. Floor (z = 0), by ``floor``:

- ``"contact"`` (default): the clip is shifted vertically so that the 20th
  percentile over frames of the lowest sole point (either foot) sits at z = 0;
  this absorbs leg-length differences and is robust to a few frames where the
  source's feet dip below its floor. Frames that would still put a sole below
  z = 0 get a smooth extra root lift (never less than the penetration, eased
  over 0.1 s), so soles never go below the floor.
- ``"lowest"``: one shift so that the lowest sole point over the whole clip
  touches z = 0 (never below the floor; may float when the source dips once).
- ``"source"``: keep the source floor (source height 0 -> z = 0), no shift.

Sole points are foot vertices of Anny's mesh below the ankle moved rigidly with their
dominant bone (a few millimetres from the skinned mesh).

Legs use ``"reach"``: Anny's hips are wider than the CMU skeleton's, so swinging
each thigh and shin onto the source's knee and ankle keeps the feet where the
source's feet are (less foot sliding) at the cost of a couple of degrees of leg
adduction; arms reach the source's elbows and wrists the same way (skeletons put
their shoulders in different places). The root uses ``"aim"``: the torso is turned
to best fit the directions from the root to the hips, shoulders, neck and head (the
CMU skeleton has its shoulders ~5 cm behind its hips, Anny ~2 cm in front), the
spine and neck inherit that tilt and the head keeps its world orientation.

Everything per frame is batched numpy/torch; the Anny model is only run once to
get the identity-pose skeleton and sole points
(:class:`~perennial.motion.rest.AnnyRestInfo`, cached on disk in ``$PERENNIAL_CACHE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES, ANNY_PARENTS
from perennial.motion.bonemap import BoneMap
from perennial.motion.bvh import BVH
from perennial.motion.clip import MotionClip, quat_to_rotvec, rotmat_to_quat
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.rest import anny_forward_joints, rest_info, sole_heights
from perennial.motion.retarget_plan import make_plan, min_rotation_batch
from perennial.motion.skeleton_detect import bone_map_for

__all__ = ["local_ref_from_world", "retarget", "retarget_world"]

FLOOR_MODES = ("contact", "lowest", "source")
CONTACT_PERCENTILE = 20.0
"""``floor="contact"`` puts this percentile of the per-frame lowest sole point at z = 0."""
LIFT_SMOOTHING_S = 0.1
"""Radius in seconds of the smooth root lift that keeps soles above the floor."""


def local_ref_from_world(G: torch.Tensor, parents) -> torch.Tensor:
    """``local-ref`` rotation matrices from world deltas.

    Args:
        G: (F, J, 3, 3) per-bone world deltas (posed world orientation times the
            transposed identity-pose orientation).
        parents: (J,) parent indices, -1 for the root.

    Returns:
        (F, J, 3, 3) ``D_c = G_parent^T G_c``; ``D_0 = G_0``.
    """
    par = torch.as_tensor(np.asarray(parents)).clamp_min(0)
    D = G[:, par].transpose(-1, -2) @ G
    D[:, 0] = G[:, 0]
    return D


def retarget_world(
    bvh: BVH,
    rest=None,
    bone_map: BoneMap | str | Path | None = None,
    floor: str = "contact",
    frames: slice | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Retarget to per-bone world deltas (the step before ``local-ref`` rotations).

    Args:
        bvh: the source motion.
        rest: Anny rest information (or a template); cached default when None.
        bone_map: :class:`BoneMap`, JSON path, ``"cmu"``, or None to recognise the
            skeleton (:func:`~perennial.motion.skeleton_detect.detect_skeleton`).
        floor: ``"contact"``, ``"lowest"`` or ``"source"`` (see the module docstring).
        frames: optional frame selection of the BVH.

    Returns:
        G (F, J, 3, 3) world deltas, translation (F, 3) metres, and an info dict
        (``floor_shift_m``: the constant vertical shift; ``lifted_frames`` and
        ``max_lift_m``: the extra root lift that kept soles above the floor).
    """
    rest = rest_info(rest)
    bmap = bone_map_for(bvh, bone_map, rest)
    if floor not in FLOOR_MODES:
        raise ValueError(f"floor must be one of {FLOOR_MODES}, got {floor!r}")
    plan = make_plan(bvh, bmap, rest)
    pos, rot = forward_kinematics(bvh, frames)
    C = plan.C
    # world deltas of the mapped bones: G = C R_s R_ref^T C^T A
    Gm = C @ rot[:, plan.src] @ plan.post  # (F, M, 3, 3)
    G = Gm[:, plan.driver]  # (F, J, 3, 3)
    P = plan.scale * pos @ C.T  # (F, Js, 3) metres, Anny axes
    if len(plan.hips_src):
        trans = P[:, plan.hips_src].mean(1) - G[:, 0] @ plan.hips_anny
    else:
        trans = P[:, plan.root_src].copy()
    for m, k, seg in plan.reach:  # parents first
        b = plan.mapped[m]
        j_b = anny_forward_joints(G, trans, rest, upto=b)
        swing = min_rotation_batch(Gm[:, m] @ seg, P[:, k] - j_b)
        Gm[:, m] = swing @ Gm[:, m]
        G[:, plan.driver == m] = Gm[:, m, None]
    info: dict[str, Any] = {
        "bone_map": bmap.name,
        "reference_frame": plan.reference_frame,
        "body_scale": plan.scale / bmap.scale,
        "floor_shift_m": 0.0,
        "lifted_frames": 0,
        "max_lift_m": 0.0,
    }
    if floor != "source" and len(trans):
        z = sole_heights(G, trans, rest)
        if floor == "lowest":
            shift = -float(z.min())
        else:  # contact: typical lowest contact on the floor, then no penetration
            shift = -float(np.percentile(z, CONTACT_PERCENTILE))
            radius = max(1, round(LIFT_SMOOTHING_S * bvh.fps))
            lift = _smooth_cover(np.clip(-(z + shift), 0.0, None), radius)
            trans[:, 2] += lift
            info.update(lifted_frames=int((lift > 0).sum()), max_lift_m=float(lift.max()))
        trans[:, 2] += shift
        info["floor_shift_m"] = shift
    return G, trans, info


def _smooth_cover(p: np.ndarray, r: int) -> np.ndarray:
    """A smooth curve >= ``p`` everywhere: box average (radius r) of a running max (radius r).

    Each average covers frame f with values that are all >= p[f], so the result
    never drops below ``p``; it is zero where ``p`` is zero for 2r frames around.
    """
    if not p.any():
        return p
    n = len(p)
    pad = np.pad(p, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * r + 1)
    m = np.pad(win.max(1), r, mode="edge")
    c = np.concatenate([[0.0], np.cumsum(m)])
    return (c[2 * r + 1 :] - c[:n]) / (2 * r + 1)


def retarget(
    bvh: BVH,
    rest=None,
    fps: float | None = None,
    bone_map: BoneMap | str | Path | None = None,
    floor: str = "contact",
) -> MotionClip:
    """Retarget a BVH motion onto Anny.

    Args:
        bvh: parsed BVH (:func:`perennial.motion.bvh.read_bvh`).
        rest: :class:`AnnyRestInfo`, an Anny template, or None for the cached default.
        fps: resample the result to this frame rate (slerp); the BVH's rate when None.
        bone_map: :class:`BoneMap`, a JSON bone-map path, ``"cmu"``, or None to
            recognise the skeleton from its names and shape.
        floor: ``"contact"`` (default), ``"lowest"`` or ``"source"``, see the
            module docstring.

    Returns:
        A :class:`MotionClip` (``local-ref`` rotvec, root translation in metres).

    Raises:
        RetargetError: the bone map is malformed or names joints the BVH lacks;
            :class:`~perennial.motion.skeleton_detect.SkeletonError` (a RetargetError) when
            no map is given and the skeleton cannot be recognised.
    """
    rest = rest_info(rest)
    bmap = bone_map_for(bvh, bone_map, rest)
    G, trans, _ = retarget_world(bvh, rest, bmap, floor)
    mapped = torch.tensor([ANNY_BONES.index(b) for b in bmap.bones])
    Gt = torch.from_numpy(G)
    parents = torch.tensor(ANNY_PARENTS)[mapped].clamp_min(0)
    D = Gt[:, parents].transpose(-1, -2) @ Gt[:, mapped]  # D_c = G_p^T G_c
    D[:, mapped == 0] = Gt[:, :1]  # the root's rotation is its world delta
    # unmapped bones follow their parent exactly: zero local-ref rotation
    rotvec = torch.zeros(G.shape[0], len(ANNY_BONES), 3, dtype=torch.float64)
    rotvec[:, mapped] = quat_to_rotvec(rotmat_to_quat(D))
    clip = MotionClip(
        rotvec.float(), torch.from_numpy(trans).float(), bvh.fps, source=str(bvh.path)
    )
    return clip if fps is None else clip.resample(fps)
