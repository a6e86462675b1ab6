"""Retargeting BVH motion onto Anny's ``anny`` rig, vectorised over frames.

Frames and units: the source is read in its own axes and units; the bone map
(:class:`~perennial.motion.bonemap.BoneMap`) gives the rotation ``C`` from source
axes to Anny's world frame (metres, Z up, the body faces -Y, its left is +X) and
the metres per file unit.

Model. Anny's ``local-ref`` forward kinematics, written with the *world delta*
``G_c`` of each bone (its posed world orientation times the transpose of its
reference orientation, the reference being the identity pose):

- ``G_c = G_p @ D_c`` where ``D_c`` is the bone's ``local-ref`` rotation, so
  ``D_c = G_p^T G_c`` (and ``D_0 = G_0``: the root's rotation is its world delta);
- bone heads ``j_c = j_p + G_p @ (q_c - q_p)``, with ``q`` the identity-pose bone
  heads and ``j_0`` the root translation (:mod:`perennial.motion.rest`).

A BVH joint's world rotation ``R_s`` is its rotation relative to the source rest
pose (where every world rotation is the identity). A mapped Anny bone ``b`` driven
by source joint ``s`` gets ``G_b = (C R_s C^T) A_b``, where the constant
alignment ``A_b`` says how Anny's identity pose sits relative to the source rest
pose for that bone; the bone's mode (``"aim"``, ``"reach"``, ``"inherit"``,
``"world"``) chooses it, see :mod:`perennial.motion.bonemap`. A ``"reach"`` bone
is, after its ``"aim"`` alignment, swung per frame to point from Anny's posed
joint to the source's posed child joint.

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

Sole points are low foot vertices of Anny's mesh moved rigidly with their
dominant bone (a few millimetres from the skinned mesh).

Legs use ``"reach"``: Anny's hips are wider than the CMU skeleton's, so swinging
each thigh and shin onto the source's knee and ankle keeps the feet where the
source's feet are (less foot sliding) at the cost of a couple of degrees of leg
adduction. The CMU root uses ``"aim"``: the torso is tilted so that Anny's
hip-centre -> shoulder-centre line matches the source's (the CMU skeleton has its
shoulders ~5 cm behind its hips, Anny ~2 cm in front), the spine and neck inherit
that tilt and the head keeps its world orientation.

Everything per frame is batched numpy/torch; the Anny model is only run once to
get the identity-pose skeleton and sole points
(:class:`~perennial.motion.rest.AnnyRestInfo`, cached on disk in ``$PERENNIAL_CACHE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES, ANNY_PARENTS
from perennial.motion.bonemap import BoneMap, RetargetError, resolve_bone_map
from perennial.motion.bvh import BVH
from perennial.motion.clip import MotionClip, quat_to_rotvec, rotmat_to_quat
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.rest import AnnyRestInfo, anny_forward_joints, rest_info, sole_heights

__all__ = ["local_ref_from_world", "retarget", "retarget_world"]

FLOOR_MODES = ("contact", "lowest", "source")
CONTACT_PERCENTILE = 20.0
"""``floor="contact"`` puts this percentile of the per-frame lowest sole point at z = 0."""
LIFT_SMOOTHING_S = 0.1
"""Radius in seconds of the smooth root lift that keeps soles above the floor."""


# ---------------------------------------------------------------------------
# rotation helpers


def _min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) smallest rotation taking direction ``a`` onto direction ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        # opposite: half turn about any axis perpendicular to a
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis, s, c = perp / np.linalg.norm(perp), 1.0, -1.0
        angle = np.pi
    else:
        angle = np.arctan2(s, c)
        axis = axis / s
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _min_rotation_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F, 3, 3) smallest rotations taking directions ``a`` (F, 3) onto ``b`` (F, 3).

    Near-opposite pairs (never met by a swing correction) get the identity.
    """
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    v = np.cross(a, b)
    c = (a * b).sum(-1)
    K = np.zeros(a.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    # Rodrigues with sin = |v|, 1 - cos: R = I + K + K^2 / (1 + c)
    k = np.where(c > -0.999, 1.0 / (1.0 + c).clip(1e-3), 0.0)[..., None, None]
    R = np.eye(3) + K + (K @ K) * k
    return np.where((c > -0.999)[..., None, None], R, np.eye(3))


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


# ---------------------------------------------------------------------------
# the retargeting plan (per skeleton + map) and its application (per frame)


@dataclass
class _Plan:
    mapped: np.ndarray  # (M,) Anny bone ids that are mapped
    src: np.ndarray  # (M,) source joint per mapped bone
    align: np.ndarray  # (M, 3, 3)
    driver: np.ndarray  # (J,) position in `mapped` of the bone that drives each Anny bone
    reach: list[tuple[int, int, np.ndarray]]  # (mapped position, source target joint, Anny segment)
    hips_src: np.ndarray  # (K,) source joints of the hip anchors (may be empty)
    hips_anny: np.ndarray  # (3,) Anny hip midpoint relative to the root, identity pose
    root_src: int
    C: np.ndarray
    scale: float


def _torso_alignment(bvh: BVH, bmap: BoneMap, q: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Root alignment turning Anny's hip-centre -> shoulder-centre line onto the source's."""
    pairs = [(f"upperleg01.{s}", f"upperarm01.{s}") for s in "LR"]
    if not all(h in bmap.bones and a in bmap.bones for h, a in pairs):
        return np.eye(3)
    p0, _ = forward_kinematics(bvh, rest=True)
    ids = {k: ANNY_BONES.index(k) for pair in pairs for k in pair}
    v_a = np.mean([q[ids[a]] - q[ids[h]] for h, a in pairs], 0)
    v_s = np.mean(
        [p0[0, bvh.index(bmap.bones[a])] - p0[0, bvh.index(bmap.bones[h])] for h, a in pairs], 0
    )
    return _min_rotation(v_a, C @ v_s)


def _plan(bvh: BVH, bmap: BoneMap, rest: AnnyRestInfo) -> _Plan:
    bmap.check(bvh)
    mapped_src = [bvh.index(s) for s in bmap.bones.values()]
    p0, _ = forward_kinematics(bvh, rest=True)
    if len(mapped_src) > 1 and not np.ptp(p0[0, mapped_src], axis=0).max() > 1e-9:
        raise RetargetError(f"{bvh.path}: the mapped joints all sit at one point in the rest pose (every OFFSET "
                            "is zero?); there is no skeleton shape to retarget from")  # fmt: skip
    C = bmap.axes()
    names = {n: i for i, n in enumerate(bvh.names)}
    src_par = np.asarray(bvh.parents)
    offs = bvh.offsets
    J = len(ANNY_BONES)
    par = np.asarray(ANNY_PARENTS)
    children: list[list[int]] = [[] for _ in range(J)]
    for c in range(1, J):
        children[par[c]].append(c)
    src_of = {ANNY_BONES.index(b): names[s] for b, s in bmap.bones.items()}
    q = rest.joints

    def first_mapped_below(b: int, s: int) -> list[int]:
        """First mapped bones on every path below b, passing through bones mapped to s."""
        out, stack = [], list(children[b])
        while stack:
            c = stack.pop()
            if c in src_of and src_of[c] != s:
                out.append(c)
            else:
                stack.extend(children[c])
        return out

    align: dict[int, np.ndarray] = {}
    reach: list[tuple[int, int, np.ndarray]] = []
    driver = np.zeros(J, dtype=np.int64)
    mapped = sorted(src_of)
    pos_in = {b: i for i, b in enumerate(mapped)}
    for b in range(J):  # parents before children
        if b not in src_of:
            driver[b] = driver[par[b]]
            continue
        driver[b] = pos_in[b]
        anc = par[b]
        while anc >= 0 and anc not in src_of:
            anc = par[anc]
        A_par = align[anc] if anc >= 0 else np.eye(3)
        mode = bmap.mode(ANNY_BONES[b])
        if b == 0 and mode in ("aim", "reach"):
            align[b] = _torso_alignment(bvh, bmap, q, C)
            continue
        if mode == "world":
            align[b] = np.eye(3)
            continue
        align[b] = A_par
        if mode == "inherit":
            continue
        s = src_of[b]
        groups: dict[int, list[int]] = {}
        for c in first_mapped_below(b, s):
            # the source segment: s -> its child k, when c's joint sits on k
            # (k itself or below it through zero offsets)
            k = src_of[c]
            while k >= 0 and src_par[k] != s and np.linalg.norm(offs[k]) < 1e-9:
                k = src_par[k]
            if k >= 0 and src_par[k] == s and np.linalg.norm(offs[k]) > 1e-9:
                groups.setdefault(k, []).append(c)
        best = None
        for k, cs in groups.items():
            v_a = A_par @ (q[cs].mean(0) - q[b])
            v_s = C @ offs[k]
            if np.linalg.norm(v_a) < 1e-9:
                continue
            cos = v_a @ v_s / (np.linalg.norm(v_a) * np.linalg.norm(v_s))
            if best is None or cos > best[0]:
                best = (cos, v_a, v_s, k, q[cs].mean(0) - q[b])
        if best is not None:
            align[b] = _min_rotation(best[1], best[2]) @ A_par
            if mode == "reach":
                reach.append((pos_in[b], best[3], best[4]))
    hip_bones = [ANNY_BONES.index(f"upperleg01.{s}") for s in "LR"]
    if all(h in src_of for h in hip_bones):
        hips_src = np.array([src_of[h] for h in hip_bones])
        hips_anny = q[hip_bones].mean(0) - q[0]
    else:
        hips_src, hips_anny = np.zeros(0, dtype=np.int64), np.zeros(3)
    return _Plan(
        mapped=np.array(mapped),
        src=np.array([src_of[b] for b in mapped]),
        align=np.stack([align[b] for b in mapped]),
        reach=reach,
        driver=driver,
        hips_src=hips_src,
        hips_anny=hips_anny,
        root_src=src_of[0],
        C=C,
        scale=float(bmap.scale),
    )


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
        bone_map: :class:`BoneMap`, JSON path, or None for
            :data:`~perennial.motion.bonemap.CMU_BONE_MAP`.
        floor: ``"contact"``, ``"lowest"`` or ``"source"`` (see the module docstring).
        frames: optional frame selection of the BVH.

    Returns:
        G (F, J, 3, 3) world deltas, translation (F, 3) metres, and an info dict
        (``floor_shift_m``: the constant vertical shift; ``lifted_frames`` and
        ``max_lift_m``: the extra root lift that kept soles above the floor).
    """
    rest = rest_info(rest)
    bmap = resolve_bone_map(bone_map)
    if floor not in FLOOR_MODES:
        raise ValueError(f"floor must be one of {FLOOR_MODES}, got {floor!r}")
    plan = _plan(bvh, bmap, rest)
    pos, rot = forward_kinematics(bvh, frames)
    C = plan.C
    # world deltas of the mapped bones: G = C R_s C^T A
    Gm = C @ rot[:, plan.src] @ C.T @ plan.align  # (F, M, 3, 3)
    G = Gm[:, plan.driver]  # (F, J, 3, 3)
    P = plan.scale * pos @ C.T  # (F, Js, 3) metres, Anny axes
    if len(plan.hips_src):
        trans = P[:, plan.hips_src].mean(1) - G[:, 0] @ plan.hips_anny
    else:
        trans = P[:, plan.root_src].copy()
    for m, k, seg in plan.reach:  # parents first
        b = plan.mapped[m]
        j_b = anny_forward_joints(G, trans, rest, upto=b)
        swing = _min_rotation_batch(Gm[:, m] @ seg, P[:, k] - j_b)
        Gm[:, m] = swing @ Gm[:, m]
        G[:, plan.driver == m] = Gm[:, m, None]
    info: dict[str, Any] = {
        "bone_map": bmap.name,
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
        bone_map: :class:`BoneMap`, a JSON bone-map path, ``"cmu"`` or None (CMU).
        floor: ``"contact"`` (default), ``"lowest"`` or ``"source"``, see the
            module docstring.

    Returns:
        A :class:`MotionClip` (``local-ref`` rotvec, root translation in metres).

    Raises:
        RetargetError: the bone map is malformed or names joints the BVH lacks.
    """
    bmap = resolve_bone_map(bone_map)
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
