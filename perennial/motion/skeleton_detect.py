"""Recognising a motion file's skeleton: the bone map made from the file itself.

:func:`detect_skeleton` finds, in any common convention (CMU, Mixamo, Daz/Poser/Genesis,
Character Creator, Unity/Unreal humanoids, Rokoko, Perception Neuron, MotionBuilder,
3ds Max Biped, CMU/HDM05 ASF), which joint is the pelvis, the spine, neck and head,
and the clavicle, upper arm, forearm, hand, fingers, thigh, shin, foot and toes of
each side, and returns a :class:`~perennial.motion.bonemap.BoneMap` so retargeting
has one code path whether a map was written by hand or found.

- **Names** (:mod:`perennial.motion.names`) give each joint a side and a role;
  twist, share, roll, IK, end and face joints are ignored.
- **Topology** settles the rest. The pelvis is the lowest common ancestor (LCA) of the two
  thighs, the chest the LCA of the two hands; each limb is the tree path from its
  branch point to its hand or foot, and on it the *deepest* joint of a role wins
  (``LHipJoint -> LeftHip`` maps ``LeftHip``; ``LeftWrist -> lhand`` drives the hand
  with ``lhand`` and measures the wrist at ``LeftWrist``); ``shoulder`` is the upper
  arm when a collar/clavicle comes before it, else the clavicle. The torso path from
  the pelvis to the head is split at the chest into spine and neck joints, spread
  over Anny's ``spine05..spine01`` and ``neck01..neck03``.
- **Fingers** with at least two joints each drive Anny's finger bones (the thumb's
  first joint is Anny's ``finger1-1``; metacarpal/carpal joints drive Anny's
  metacarpals); other hands keep Anny's neutral hand.
- **Units**: the legs (hip to ankle) plus the torso (pelvis to head) are compared
  with Anny's; the common unit (m, cm, mm, inch, CMU's inch/0.45, dm, foot) that
  makes the skeleton closest to Anny's size is taken (a file's own unit, as an
  ASF's, when it gives a plausible size).
- **Axes**: up is the ankles-to-head direction of the reference pose and the body's
  left the right-to-left hip line; both are snapped to the nearest file axes
  (``forward = left x up``). Toes pointing backwards are reported (a mirrored file).
- **Reference pose**: the rest pose (every channel zero) when it is a person
  standing; else (every bone along one local axis, as game-studio exports write it)
  the frame that looks most like one (:mod:`perennial.motion.reference`).

Modes are those of the CMU map: the root fits its torso (heading and lean), spine,
neck, clavicles, hands and toes inherit, legs and arms reach, fingers aim, head and
feet keep their world orientation.
"""

from __future__ import annotations

import numpy as np

from perennial.body.rig import ANNY_BONES
from perennial.motion.bonemap import BoneMap, resolve_bone_map
from perennial.motion.bvh import BVH
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.names import guess_convention, joint_name
from perennial.motion.reference import choose_reference_frame, is_standing, motion_up
from perennial.motion.skeleton_roles import Roles, SkeletonError, Tree, find_roles

__all__ = ["UNITS", "Detection", "SkeletonError", "bone_map_for", "describe", "detect_skeleton"]

UNITS: tuple[tuple[str, float], ...] = (
    ("m", 1.0), ("cm", 0.01), ("mm", 0.001), ("inch", 0.0254), ("CMU unit (inch/0.45)", 0.0254 / 0.45),
    ("dm", 0.1), ("foot", 0.3048),
)  # fmt: skip
"""Common units of motion files, metres per unit."""
SIZE_RANGE = (0.6, 1.6)
"""A unit is taken when it makes the skeleton this many times Anny's size; outside,
the skeleton is scaled to Anny's size."""


class Detection:
    """A recognised skeleton: its bone map and what was inferred, for people to read.

    Attributes:
        bone_map: the map (``name`` is the convention).
        convention: the convention the names look like (a label), or ``"bone map"``
            when a map was given.
        drives: source joint -> Anny bones it drives.
        evaluated: source joints used only to measure (e.g. the wrist of ``LeftWrist -> lhand``).
        ignored: source joints that drive no Anny bone (a joint between two mapped ones
            still moves the joints below it: world rotations are used).
        scale_note: how the unit was chosen.
        leg_m, torso_m: hip-to-ankle and pelvis-to-head lengths in metres.
        reference_frame: the frame taken as reference pose, None for the rest pose.
        notes: anything a user should know (fingers, mirrored toes, ...).
        path: the file.
    """

    def __init__(self, bone_map: BoneMap, convention: str, joint_names: list[str], scale_note: str,
                 leg_m: float, torso_m: float, reference_frame: int | None, notes: list[str], path: str) -> None:  # fmt: skip
        self.bone_map, self.convention, self.path = bone_map, convention, path
        self.scale_note, self.leg_m, self.torso_m = scale_note, leg_m, torso_m
        self.reference_frame, self.notes = reference_frame, notes
        self.drives: dict[str, list[str]] = {}
        for b, s in bone_map.bones.items():
            self.drives.setdefault(s, []).append(b)
        used = set(self.drives)
        self.evaluated = [n for n in dict.fromkeys(bone_map.evaluate.values()) if n not in used]
        self.ignored = [n for n in joint_names if n not in used and n not in self.evaluated]
        self.joints = len(joint_names)

    def summary(self, reference: bool = True) -> str:
        """One line: convention, joints used, unit, axes (and the reference pose)."""
        m = self.bone_map
        if self.reference_frame is None:
            ref = "; reference: rest pose"
        else:
            ref = f"; reference: frame {self.reference_frame}" if reference else "; reference: a standing frame"
        return (f"{self.convention}, {self.joints} joints ({len(self.drives)} drive Anny), scale {m.scale:.6g} m/unit "
                f"({self.scale_note}; legs {self.leg_m:.2f} m, pelvis to head {self.torso_m:.2f} m), "
                f"up {m.up}, forward {m.forward}{ref}")  # fmt: skip

    def report(self) -> str:
        """Several lines for ``perennial motion inspect``: summary, joint table, ignored joints."""
        lines = [f"{self.path}", f"  convention  {self.convention}", f"  scale       {self.bone_map.scale:.6g} m per "
                 f"file unit ({self.scale_note}); legs {self.leg_m:.2f} m, pelvis to head {self.torso_m:.2f} m",
                 f"  up          {self.bone_map.up}", f"  forward     {self.bone_map.forward}",
                 "  reference   " + ("the rest pose (all channels zero)" if self.reference_frame is None
                                     else f"frame {self.reference_frame} (the rest pose is not a person standing)"),
                 f"  joints      {self.joints}: {len(self.drives)} drive Anny, {len(self.evaluated)} measured only, "
                 f"{len(self.ignored)} ignored", "  source joint -> Anny bones (mode)"]  # fmt: skip
        for s, bones in self.drives.items():
            shown = ", ".join(f"{b} ({self.bone_map.mode(b)})" for b in bones)
            lines.append(f"    {s:<28} -> {shown}")
        for s in self.evaluated:
            ev = [b for b, j in self.bone_map.evaluate.items() if j == s]
            lines.append(f"    {s:<28} -> measured as {', '.join(ev)}")
        lines.append("  ignored (drive no Anny bone; their rotation still moves the joints below them): "
                     + (", ".join(self.ignored) or "none"))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _anny_lengths(rest) -> tuple[float, float]:
    q, par = rest.joints, rest.parents

    def length(a: str, b: str) -> float:
        i, j, total = ANNY_BONES.index(a), ANNY_BONES.index(b), 0.0
        while j != i:
            total += float(np.linalg.norm(q[j] - q[par[j]]))
            j = par[j]
        return total

    leg = 0.5 * (length("upperleg01.L", "foot.L") + length("upperleg01.R", "foot.R"))
    return leg, length("root", "head")


def _choose_scale(leg: float, torso: float, rest, hint: float | None) -> tuple[float, str]:
    a_leg, a_torso = _anny_lengths(rest)
    size = (a_leg + a_torso) / (leg + torso)  # metres per unit at Anny's size
    if not size > 0:
        raise ValueError("skeleton without size")
    if hint is not None and SIZE_RANGE[0] <= hint / size <= SIZE_RANGE[1]:
        return hint, "the file's unit"
    name, unit = min(UNITS, key=lambda u: abs(np.log(u[1] / size)))
    ratio = unit / size
    if SIZE_RANGE[0] <= ratio <= SIZE_RANGE[1]:
        return unit, f"inferred: {name}"
    return 1.0 / size, "no common unit fits: scaled to Anny's size"


def _axis_name(v: np.ndarray, exclude: int | None = None) -> tuple[str, int]:
    w = np.abs(v).copy()
    if exclude is not None:
        w[exclude] = -1
    k = int(np.argmax(w))
    return ("+" if v[k] >= 0 else "-") + "xyz"[k], k


def _keys(r: Roles) -> dict[str, int]:
    keys = {"root": r.root, "head": r.head, "neck": r.neck[0] if r.neck else r.chest}
    for s in "LR":
        keys |= {f"thigh.{s}": r.limb[s]["thigh"], f"knee.{s}": r.limb[s]["knee"], f"ankle.{s}": r.limb[s]["ankle"]}
        if r.limb[s].get("toe", -1) >= 0:
            keys[f"toe.{s}"] = r.limb[s]["toe"]
    return keys


def _map(r: Roles, names: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    bones: dict[str, str] = {"root": names[r.root]}
    modes: dict[str, str] = {"root": "aim", "head": "world"}
    for b, j in r.spine_bones.items():
        bones[b], modes[b] = names[j], "inherit"
    for b, j in r.neck_bones.items():
        bones[b], modes[b] = names[j], "inherit"
    bones["head"] = names[r.head]
    evaluate = {"head": names[r.head]}
    for s in "LR":
        L = r.limb[s]
        if L.get("clavicle", -1) >= 0:
            bones[f"clavicle.{s}"], modes[f"clavicle.{s}"] = names[L["clavicle"]], "inherit"
        bones |= {f"upperarm01.{s}": names[L["upperarm"]], f"lowerarm01.{s}": names[L["forearm"]],
                  f"wrist.{s}": names[L["hand"]], f"upperleg01.{s}": names[L["thigh"]],
                  f"lowerleg01.{s}": names[L["knee"]], f"foot.{s}": names[L["foot"]]}  # fmt: skip
        modes |= {f"wrist.{s}": "inherit", f"foot.{s}": "world"}
        modes |= {f"{b}.{s}": "reach" for b in ("upperleg01", "lowerleg01", "upperarm01", "lowerarm01")}
        if L.get("toe", -1) >= 0:
            for k in range(1, 6):
                bones[f"toe{k}-1.{s}"], modes[f"toe{k}-1.{s}"] = names[L["toe"]], "inherit"
        for k, (meta, phalanges) in r.fingers[s].items():
            if meta is not None and k > 1:
                bones[f"metacarpal{k - 1}.{s}"] = names[meta]
            for i, j in enumerate(phalanges):
                bones[f"finger{k}-{i + 1}.{s}"] = names[j]
        evaluate |= {f"upperleg01.{s}": names[L["thigh"]], f"lowerleg01.{s}": names[L["knee"]],
                     f"foot.{s}": names[L["ankle"]], f"upperarm01.{s}": names[L["upperarm"]],
                     f"lowerarm01.{s}": names[L["forearm"]], f"wrist.{s}": names[L["wrist"]]}  # fmt: skip

    def ordered(d: dict[str, str]) -> dict[str, str]:
        return dict(sorted(d.items(), key=lambda kv: ANNY_BONES.index(kv[0])))

    return ordered(bones), ordered(modes), ordered(evaluate)


def detect_skeleton(bvh: BVH, rest=None) -> Detection:
    """Recognise the skeleton of a parsed file and make its bone map (module docstring).

    Args:
        bvh: the parsed file (an ASF/AMC pair converted by :mod:`perennial.motion.asf`
            carries its unit in ``bvh.unit_scale``).
        rest: Anny rest information (cached default when None), for Anny's size.

    Raises:
        SkeletonError: what is missing (no left leg, no head, ...), naming the file and
            listing its joints.
    """
    from perennial.motion.rest import rest_info

    rest = rest_info(rest)
    jn = [joint_name(n) for n in bvh.names]
    tree = Tree(bvh)
    p0, _ = forward_kinematics(bvh, rest=True)
    p0 = p0[0]
    if not np.ptp(p0, axis=0).max() > 1e-9:
        raise SkeletonError(f"{bvh.path}: the mapped joints all sit at one point in the rest pose (every OFFSET "
                            "is zero?); there is no skeleton shape to retarget from")  # fmt: skip
    r = find_roles(bvh, jn, tree, p0)
    leg = float(np.mean([tree.length(r.limb[s]["thigh"], r.limb[s]["ankle"]) for s in "LR"]))
    torso = tree.length(r.root, r.head)
    try:
        scale, scale_note = _choose_scale(leg, torso, rest, getattr(bvh, "unit_scale", None))
    except ValueError:
        raise SkeletonError(f"{bvh.path}: the legs and torso have no length; there is no skeleton shape "
                            "to retarget from") from None  # fmt: skip
    keys = _keys(r)
    notes = list(r.notes)
    up0 = _unit(p0[r.head] - 0.5 * (p0[keys["ankle.L"]] + p0[keys["ankle.R"]]))
    frame = None
    if not is_standing(p0, keys, up0):
        up0 = motion_up(bvh, keys)
        frame = choose_reference_frame(bvh, keys, up0)
        P, _ = forward_kinematics(bvh, np.array([frame]))
        P = P[0]
    else:
        P = p0
    up_vec = _unit(P[r.head] - 0.5 * (P[keys["ankle.L"]] + P[keys["ankle.R"]]))
    up, k_up = _axis_name(up_vec)
    left = P[keys["thigh.L"]] - P[keys["thigh.R"]]
    if np.linalg.norm(left - (left @ up_vec) * up_vec) < 1e-6 * (leg + torso):
        left = P[r.limb["L"]["upperarm"]] - P[r.limb["R"]["upperarm"]]
    fwd_vec = np.cross(left, up_vec)
    toes = [P[keys[f"toe.{s}"]] - P[keys[f"ankle.{s}"]] for s in "LR" if f"toe.{s}" in keys]
    if toes and np.mean(toes, 0) @ fwd_vec < 0:
        notes.append("the toes point backwards for the left/right the names give: the file may be mirrored")
    forward, _ = _axis_name(fwd_vec, exclude=k_up)
    bones, modes, evaluate = _map(r, bvh.names)
    convention = guess_convention(bvh.names)
    bmap = BoneMap(bones, modes, evaluate, up=up, forward=forward, scale=float(scale), name=convention,
                   reference="rest" if frame is None else "auto")  # fmt: skip
    return Detection(bmap, convention, bvh.names, scale_note, leg * scale, torso * scale, frame, notes, bvh.path)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def bone_map_for(bvh: BVH, bone_map=None, rest=None) -> BoneMap:
    """The bone map to retarget a file with: the given one (a :class:`BoneMap`, plain
    data, ``"cmu"`` or a JSON path), or the detected one when None or ``"auto"``."""
    if bone_map is None or (isinstance(bone_map, str) and bone_map == "auto"):
        return detect_skeleton(bvh, rest).bone_map
    return resolve_bone_map(bone_map)


def describe(bvh: BVH, bone_map=None, rest=None) -> Detection:
    """A :class:`Detection` for ``perennial motion inspect``: detected, or describing a given map."""
    if bone_map is None or bone_map == "auto":
        return detect_skeleton(bvh, rest)
    bmap = resolve_bone_map(bone_map)
    bmap.check(bvh)
    frame = None
    if bmap.reference != "rest":
        from perennial.motion.reference import reference_pose

        frame = reference_pose(bvh, bmap)[0]
    tree = Tree(bvh)
    idx = {n: i for i, n in enumerate(bvh.names)}

    def length(a: str, b: str) -> float:
        ja, jb = idx.get(bmap.evaluate.get(a, bmap.bones.get(a, "")), -1), idx.get(bmap.bones.get(b, ""), -1)
        return tree.length(ja, jb) * bmap.scale if ja >= 0 and jb >= 0 else float("nan")

    return Detection(bmap, "bone map", bvh.names, "from the bone map", length("upperleg01.L", "foot.L"),
                     length("root", "head"), frame, [], bvh.path)  # fmt: skip

