"""BVH files in other skeleton conventions, made from a CMU BVH for the tests.

:func:`convert` renames the CMU joints, re-nests them (drops joints that never rotate
and sit on their parent, moves a joint under another one at the same place, adds a
root above the pelvis), rescales, turns the axes, changes the rest pose (every bone
along its local X or Y, as game-studio exports do), the channels (any rotation order,
6 channels on every joint) and adds helper bones (twist bones in the chain and beside
it, share, IK, eye and breast bones). The world motion of every kept joint is the
CMU file's (scaled and turned), so retargeting either file must give the same motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perennial.motion.bvh import BVH
from perennial.motion.kinematics import (
    end_site_positions,
    euler_to_matrix,
    forward_kinematics,
    matrix_to_euler,
)

CMU_UNIT = 0.0254 / 0.45  # metres per CMU unit


@dataclass
class Convention:
    """How to write a CMU motion in another convention (see the module docstring).

    Attributes:
        label: the convention the detector should report.
        names: CMU joint -> new name, or None to drop it (it must never rotate and sit
            on its parent; leaves may always be dropped).
        unit: metres per unit of the new file.
        axes: (3, 3) CMU axes -> new axes (a rotation).
        up, forward: the axes the detector should report.
        orient: None (world-aligned rest, the BVH norm) or "x"/"y": every joint's local
            axis along its bone in the rest pose.
        order: rotation channel order, e.g. "ZXY".
        six: 6 channels on every joint.
        root: (name, "floor" | "copy"): a new root at the origin above the pelvis, or one
            that moves like the pelvis (whose own rotation then stays zero).
        reparent: new name -> new parent's new name (joints at the same place).
        twists: (name, parent, child, amplitude deg): a twist joint half-way along a bone,
            turning about the bone.
        branches: (name, parent, offset (3,) in CMU units and axes): helper leaves beside
            the chain, moving at random.
        fingers: new hand name -> name pattern of its finger joints with ``{f}`` (Thumb,
            Index, Mid, Ring, Pinky) and ``{k}`` (1-3): five fingers of three joints
            that curl and open.
    """

    label: str
    names: dict[str, str | None]
    unit: float = CMU_UNIT
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    up: str = "+y"
    forward: str = "+z"
    orient: str | None = None
    order: str = "ZXY"
    six: bool = False
    root: tuple[str, str] | None = None
    reparent: dict[str, str] = field(default_factory=dict)
    twists: list[tuple[str, str, str, float]] = field(default_factory=list)
    branches: list[tuple[str, str, tuple[float, float, float]]] = field(default_factory=list)
    fingers: dict[str, str] = field(default_factory=dict)


def _frame_along(d: np.ndarray, axis: int, up: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose column ``axis`` is the unit direction ``d``."""
    if np.linalg.norm(d) < 1e-9:
        return np.eye(3)
    a = d / np.linalg.norm(d)
    ref = up if abs(a @ up) < 0.9 else np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 0, 1.0])
    b = ref - (ref @ a) * a
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    cols = [a, b, c] if axis == 0 else [c, a, b]  # right-handed either way
    return np.stack(cols, 1)


def _axis_angle(axis: np.ndarray, deg: np.ndarray) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(deg)[:, None, None]
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * (K @ K)


def convert(bvh: BVH, conv: Convention, seed: int = 0) -> str:
    """BVH text of ``bvh``'s motion in convention ``conv``."""
    rng = np.random.default_rng(seed)
    F = bvh.num_frames
    pos, rot = forward_kinematics(bvh)
    p0, _ = forward_kinematics(bvh, rest=True)
    sites = end_site_positions(bvh, pos, rot)
    Q, s = conv.axes, CMU_UNIT / conv.unit
    up = Q @ np.array([0.0, 1, 0])
    # kept joints in file order, with world motion in the new axes and units
    joints: dict[str, dict] = {}
    order: list[str] = []
    for j, joint in enumerate(bvh.joints):
        new = conv.names.get(joint.name, joint.name)
        if new is None:
            continue
        p = joint.parent
        while p >= 0 and conv.names.get(bvh.joints[p].name, bvh.joints[p].name) is None:
            p = bvh.joints[p].parent
        parent = None if p < 0 else conv.names.get(bvh.joints[p].name, bvh.joints[p].name)
        parent = conv.reparent.get(new, parent)
        kids = [k for k, jj in enumerate(bvh.joints) if jj.parent == j and np.linalg.norm(jj.offset) > 1e-9]
        bone = (p0[0, kids[0]] - p0[0, j]) if kids else (joint.end_sites[0] if len(joint.end_sites) else np.zeros(3))
        B = _frame_along(Q @ bone, 0 if conv.orient == "x" else 1, up) if conv.orient else np.eye(3)
        end = s * Q @ (sites[j][:, 0] - pos[:, j]).T if j in sites else None
        joints[new] = {"parent": parent, "p": s * pos[:, j] @ Q.T, "W": Q @ rot[:, j] @ Q.T @ B, "end": end}
        order.append(new)
    if conv.root is not None:
        name, kind = conv.root
        hips = order[0]
        if kind == "floor":
            joints[name] = {"parent": None, "p": np.zeros((F, 3)), "W": np.broadcast_to(np.eye(3), (F, 3, 3)).copy()}
        else:
            joints[name] = {"parent": None, "p": joints[hips]["p"].copy(), "W": joints[hips]["W"].copy()}
        joints[hips]["parent"] = name
        joints[hips]["moves"] = kind == "floor"  # position channels under a root on the floor
        order.insert(0, name)
    for name, parent, child, amp in conv.twists:
        P, Cj = joints[parent], joints[child]
        axis = np.einsum("ba,b->a", P["W"][0], Cj["p"][0] - P["p"][0])
        W = P["W"] @ _axis_angle(axis, amp * np.sin(np.linspace(0, 3, F)))
        joints[name] = {"parent": parent, "p": 0.5 * (P["p"] + Cj["p"]), "W": W}
        Cj["parent"] = name
        order.insert(order.index(child), name)
    for name, parent, off in conv.branches:
        P = joints[parent]
        o = s * Q @ np.asarray(off, dtype=np.float64)
        W = P["W"] @ euler_to_matrix("XYZ", rng.uniform(-20, 20, (F, 3)))
        joints[name] = {"parent": parent, "p": P["p"] + np.einsum("fab,b->fa", P["W"], o), "W": W,
                        "end": np.einsum("fab,b->fa", W, o).T * 0.5}  # fmt: skip
        order.append(name)
    for hand, pattern in conv.fingers.items():
        H = joints[hand]
        side = 1.0 if np.einsum("fba,fb->fa", joints[order[0]]["W"], H["p"] - joints[order[0]]["p"])[0] @ (
            Q.T @ np.array([1.0, 0, 0])) > 0 else -1.0  # fmt: skip
        curl = np.radians(25 + 25 * np.sin(np.linspace(0, 4, F)))
        for word, (base, lengths) in FINGERS.items():
            o = s * Q @ np.array([side * base[0], base[1], base[2]])
            W, p = H["W"], H["p"] + np.einsum("fab,b->fa", H["W"], o)
            for k, length in enumerate(lengths, 1):
                name = pattern.format(f=word, k=k)
                W = W @ _axis_angle(Q @ np.array([0, 0, side]), -np.degrees(curl))
                seg = s * Q @ np.array([0.0, -length, 0.0])
                joints[name] = {"parent": hand if k == 1 else pattern.format(f=word, k=k - 1), "p": p, "W": W,
                                "end": np.einsum("fab,b->fa", W, seg).T if k == 3 else None}  # fmt: skip
                order.append(name)
                p = p + np.einsum("fab,b->fa", W, seg)
    return _write(joints, order, conv, 1.0 / bvh.fps)


FINGERS = {  # base offset from the wrist (CMU units, left hand, arm hanging) and phalanx lengths
    "Thumb": ((0.05, -0.25, 0.3), (0.35, 0.25, 0.2)), "Index": ((0.0, -0.7, 0.2), (0.45, 0.25, 0.2)),
    "Mid": ((0.0, -0.75, 0.07), (0.5, 0.3, 0.2)), "Ring": ((0.0, -0.7, -0.07), (0.45, 0.27, 0.2)),
    "Pinky": ((0.0, -0.62, -0.2), (0.35, 0.2, 0.17)),
}  # fmt: skip


def _write(joints: dict[str, dict], order: list[str], conv: Convention, frame_time: float) -> str:
    children: dict[str | None, list[str]] = {}
    for n in order:
        children.setdefault(joints[n]["parent"], []).append(n)
    lines, cols = ["HIERARCHY"], []
    rot_ch = " ".join(f"{a}rotation" for a in conv.order)
    pos_ch = "Xposition Yposition Zposition"

    def emit(n: str, depth: int) -> None:
        J, pad = joints[n], "  " * depth
        parent = J["parent"]
        if parent is None:
            off, local = np.zeros(3), J["W"]
        else:
            P = joints[parent]
            rel = np.einsum("fba,fb->fa", P["W"], J["p"] - P["p"])  # W_P^T (p - p_P)
            if not J.get("moves"):
                assert np.abs(rel - rel[0]).max() < 1e-6 * max(1.0, np.abs(rel).max()), f"{n} is not rigid on {parent}"
            off, local = rel[0], P["W"].transpose(0, 2, 1) @ J["W"]
        lines.append(f"{pad}{'ROOT' if parent is None else 'JOINT'} {n}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        six = parent is None or conv.six or J.get("moves")
        lines.append(f"{pad}  CHANNELS {6 if six else 3} {pos_ch + ' ' if six else ''}{rot_ch}")
        if six:
            cols.append(J["p"] if parent is None else rel if J.get("moves") else np.broadcast_to(off, rel.shape))
        cols.append(matrix_to_euler(conv.order, local))
        kids = children.get(n, [])
        for k in kids:
            emit(k, depth + 1)
        if not kids:
            e = J.get("end")
            e = np.zeros(3) if e is None else np.einsum("fba,bf->fa", J["W"], e)[0]
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}",
                          f"{pad}  }}"])  # fmt: skip
        lines.append(f"{pad}}}")

    (root,) = children[None]
    emit(root, 0)
    data = np.concatenate(cols, 1)
    lines += ["MOTION", f"Frames: {data.shape[0]}", f"Frame Time: {frame_time:.8f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in data]
    return "\n".join(lines) + "\n"


def _sided(table: dict[str, str], left: str, right: str) -> dict[str, str]:
    """CMU names of both sides from a table written for the left side with ``{s}``."""
    out = {}
    for cmu, new in table.items():
        out[cmu.format(s="Left", c="L", l="l")] = new.format(s=left, S=left)
        out[cmu.format(s="Right", c="R", l="r")] = new.format(s=right, S=right)
    return out


_LIMBS = ["{s}Hip", "{s}Knee", "{s}Ankle", "{s}Toe", "{s}Collar", "{s}Shoulder", "{s}Elbow", "{s}Wrist"]
_DROP = {n: None for n in ("LHipJoint", "RHipJoint", "lhand", "rhand", "LFingers", "RFingers", "LThumb", "RThumb")}
Y_UP_Z_FWD_TO_Z_UP_X_FWD = np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])
"""CMU (Y up, facing +Z, left +X) -> Z up, facing +X, left +Y."""
TO_ANNY = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
"""CMU -> Z up, facing -Y (3ds Max, Anny)."""
TURN_Y = np.diag([-1.0, 1.0, -1.0])
"""CMU -> Y up, facing -Z."""


def conventions() -> dict[str, Convention]:
    """Eight conventions made from the CMU samples."""

    def limbs(*new: str, left: str, right: str) -> dict[str, str]:
        return _sided(dict(zip(_LIMBS, new)), left, right)

    out = {}
    out["mixamo"] = Convention(
        "mixamo", _DROP | {"Hips": "mixamorig:Hips", "lowerback": "mixamorig:Spine", "Chest": "mixamorig:Spine1",
        "Chest2": "mixamorig:Spine2", "lowerneck": "mixamorig:Neck", "Neck": "mixamorig:Neck1",
        "Head": "mixamorig:Head"} | limbs(*(f"mixamorig:{{s}}{n}" for n in
        ("UpLeg", "Leg", "Foot", "ToeBase", "Shoulder", "Arm", "ForeArm", "Hand")), left="Left", right="Right"),
        unit=0.01, order="ZXY", branches=[("mixamorig:HeadTop_End", "mixamorig:Head", (0, 1.6, 0))])  # fmt: skip
    out["unreal"] = Convention(
        "unreal", _DROP | {"Hips": "pelvis", "lowerback": "spine_01", "Chest": "spine_02", "Chest2": "spine_03",
        "lowerneck": "neck_01", "Neck": "neck_02", "Head": "head"} | limbs("thigh_{s}", "calf_{s}", "foot_{s}",
        "ball_{s}", "clavicle_{s}", "upperarm_{s}", "lowerarm_{s}", "hand_{s}", left="l", right="r"),
        unit=0.01, axes=Y_UP_Z_FWD_TO_Z_UP_X_FWD, up="+z", forward="+x", orient="x", order="XYZ", six=True,
        root=("root", "floor"), branches=[("upperarm_twist_01_l", "upperarm_l", (0, -2, 0)),
        ("calf_twist_01_r", "calf_r", (1, -3, 0)), ("ik_foot_root", "root", (0, 0, 0)),
        ("ik_hand_gun", "root", (1, 1, 0))])  # fmt: skip
    out["daz"] = Convention(
        "daz-poser", _DROP | {"Hips": "hip", "lowerback": "abdomenLower", "Chest": "abdomenUpper",
        "Chest2": "chestUpper", "lowerneck": "neckLower", "Neck": "neckUpper", "Head": "head"}
        | limbs("{s}ThighBend", "{s}Shin", "{s}Foot", "{s}Toe", "{s}Collar", "{s}ShldrBend", "{s}ForearmBend",
                "{s}Hand", left="l", right="r"),
        unit=0.01, order="YZX", twists=[("lThighTwist", "lThighBend", "lShin", 25.0),
        ("rShldrTwist", "rShldrBend", "rForearmBend", 40.0), ("lForearmTwist", "lForearmBend", "lHand", 30.0)],
        branches=[("lEye", "head", (0.5, 1, 1)), ("rEye", "head", (-0.5, 1, 1)),
        ("lPectoral", "chestUpper", (1, -0.5, 1))])  # fmt: skip
    out["biped"] = Convention(
        "3dsmax-biped", _DROP | {"Hips": "Bip01 Pelvis", "lowerback": "Bip01 Spine", "Chest": "Bip01 Spine1",
        "Chest2": "Bip01 Spine2", "lowerneck": "Bip01 Neck", "Neck": "Bip01 Neck1", "Head": "Bip01 Head"}
        | limbs(*(f"Bip01 {{s}} {n}" for n in ("Thigh", "Calf", "Foot", "Toe0", "Clavicle", "UpperArm",
                                                "Forearm", "Hand")), left="L", right="R"),
        unit=0.0254, axes=TO_ANNY, up="+z", forward="-y", order="YXZ", root=("Bip01", "copy"),
        reparent={"Bip01 L Clavicle": "Bip01 Neck", "Bip01 R Clavicle": "Bip01 Neck"},
        branches=[("Bip01 HeadNub", "Bip01 Head", (0, 1.6, 0)), ("Bip01 L Toe0Nub", "Bip01 L Toe0", (0, 0, 1))])  # fmt: skip
    out["cc"] = Convention(
        "character-creator", _DROP | {"Hips": "CC_Base_Pelvis", "lowerback": "CC_Base_Waist",
        "Chest": "CC_Base_Spine01", "Chest2": "CC_Base_Spine02", "lowerneck": "CC_Base_NeckTwist01",
        "Neck": "CC_Base_NeckTwist02", "Head": "CC_Base_Head"} | limbs(*(f"CC_Base_{{S}}_{n}" for n in
        ("Thigh", "Calf", "Foot", "ToeBase", "Clavicle", "Upperarm", "Forearm", "Hand")), left="L", right="R"),
        unit=0.01, orient="y", order="ZYX", root=("CC_Base_Hip", "copy"), reparent={"CC_Base_Waist": "CC_Base_Hip"},
        branches=[("CC_Base_L_UpperarmTwist01", "CC_Base_L_Upperarm", (0, -1, 0)),
        ("CC_Base_R_KneeShareBone", "CC_Base_R_Calf", (0, 0, 0.2)), ("CC_Base_L_Breast", "CC_Base_Spine02", (1, 0, 1)),
        ("CC_Base_FacialBone", "CC_Base_Head", (0, 0.5, 0)), ("CC_Base_L_Eye", "CC_Base_Head", (0.5, 1, 1))])  # fmt: skip
    out["unity"] = Convention(
        "unity-humanoid", _DROP | {"Hips": "Hips", "lowerback": "Spine", "Chest": "Chest", "Chest2": "UpperChest",
        "lowerneck": "Neck", "Neck": "Neck Upper", "Head": "Head"} | limbs(*(f"{{s}}{n}" for n in
        ("UpperLeg", "LowerLeg", "Foot", "Toes", "Shoulder", "UpperArm", "LowerArm", "Hand")), left="Left",
        right="Right"), unit=1.0, axes=TURN_Y, up="+y", forward="-z", order="YXZ")  # fmt: skip
    out["rokoko"] = Convention(
        "rokoko", _DROP | {"lowerback": "Spine1", "Chest": "Spine2", "Chest2": "Spine3", "lowerneck": "Neck",
        "Neck": "Neck2"} | limbs(*(f"{{s}}{n}" for n in ("Thigh", "Shin", "Foot", "Toe", "Shoulder", "Arm", "ForeArm",
        "Hand")), left="Left", right="Right"), unit=0.001, order="XZY",
        branches=[("LeftToe_end", "LeftToe", (0, 0, 1)), ("head_end", "Head", (0, 1.6, 0))])  # fmt: skip
    out["motionbuilder"] = Convention(
        "motionbuilder", _DROP | {"lowerback": "Spine", "Chest": "Spine1", "Chest2": "Spine2", "lowerneck": "Neck",
        "Neck": "Neck1"} | limbs(*(f"{{s}}{n}" for n in ("UpLeg", "Leg", "Foot", "ToeBase", "Shoulder", "Arm",
        "ForeArm", "Hand")), left="Left", right="Right"), unit=0.01, order="ZYX", root=("Reference", "floor"),
        twists=[("LeftUpLegRoll", "LeftUpLeg", "LeftLeg", 20.0), ("RightForeArmRoll", "RightForeArm", "RightHand", 50.0)])  # fmt: skip
    return out


def write_asf_amc(bvh: BVH, asf_path, amc_path, drop: tuple[str, ...] = ("LThumb", "RThumb"), seed: int = 0) -> None:
    """Write a BVH (whose joints' children share one offset, as CMU's) as an ASF/AMC pair.

    Every bone gets random local axes (``axis a b c XYZ``) and three dofs; the AMC values
    are the BVH's rotations expressed in those axes, so reading the pair back must give
    the BVH's joint positions.
    """
    rng = np.random.default_rng(seed)
    kept = [j for j in bvh.joints if j.name not in drop]
    names = [j.name for j in bvh.joints]
    lines = [":version 1.10", ":name test", ":units", "  mass 1.0", "  length 0.45", "  angle deg",
             ":root", "   order TX TY TZ RX RY RZ", "   axis XYZ", "   position 0 0 0", "   orientation 0 0 0",
             ":bonedata"]  # fmt: skip
    axes = {}
    for i, j in enumerate(kept[1:], 1):
        kids = [k for k in kept if k.parent == names.index(j.name)]
        offs = {tuple(np.round(k.offset, 9)) for k in kids}
        assert len(offs) <= 1, f"{j.name}: children at different offsets"
        v = np.array(next(iter(offs))) if offs else (j.end_sites[0] if len(j.end_sites) else np.zeros(3))
        n = np.linalg.norm(v)
        d = v / n if n > 0 else np.array([0.0, 1, 0])
        ang = rng.uniform(-90, 90, 3)
        axes[j.name] = euler_to_matrix("ZYX", ang[::-1])  # about fixed X, then Y, then Z
        lines += ["  begin", f"     id {i}", f"     name {j.name}", f"     direction {d[0]:.9f} {d[1]:.9f} {d[2]:.9f}",
                  f"     length {n:.9f}", f"     axis {ang[0]:.9f} {ang[1]:.9f} {ang[2]:.9f} XYZ", "    dof rx ry rz",
                  "    limits (-180 180)", "           (-180 180)", "           (-180 180)", "  end"]  # fmt: skip
    lines += [":hierarchy", "  begin"]
    for j in kept:
        kids = [k.name for k in kept if k.parent == names.index(j.name)]
        if kids:
            lines.append(f"    {'root' if j.parent < 0 else j.name} {' '.join(kids)}")
    lines.append("  end")
    Path(asf_path).write_text("\n".join(lines) + "\n")
    out = ["# written by the tests", ":FULLY-SPECIFIED", ":DEGREES"]
    local = {}
    for j in kept:
        rot = [k for k, c in enumerate(j.channels) if c.endswith("rotation")]
        order = "".join(j.channels[k][0] for k in rot)
        vals = bvh.motion[:, [j.channel_start + k for k in rot]]
        local[j.name] = euler_to_matrix(order, vals)
    for f in range(bvh.num_frames):
        out.append(str(f + 1))
        root = kept[0]
        pos = bvh.motion[f, [root.channel_start + k for k, c in enumerate(root.channels) if c.endswith("position")]]
        zyx = matrix_to_euler("ZYX", local[root.name][f])
        out.append("root " + " ".join(f"{v:.9f}" for v in [*pos, *zyx[::-1]]))
        for j in kept[1:]:
            C = axes[j.name]
            zyx = matrix_to_euler("ZYX", C.T @ local[j.name][f] @ C)
            out.append(f"{j.name} " + " ".join(f"{v:.9f}" for v in zyx[::-1]))
    Path(amc_path).write_text("\n".join(out) + "\n")
