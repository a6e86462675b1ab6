"""The per-skeleton part of retargeting: which source joint drives which Anny bone, and
the constant alignments (see :mod:`perennial.motion.retarget` for the model and
:mod:`perennial.motion.bonemap` for the modes).

A :class:`Plan` is made once per file and bone map; applying it to frames is
:func:`perennial.motion.retarget.retarget_world`. With the source's reference pose
(world rotations ``R_ref``, joint positions ``p_ref``, :mod:`perennial.motion.reference`),
a mapped Anny bone ``b`` driven by source joint ``s`` gets the world delta
``G_b = C R_s R_ref,s^T C^T A_b``: the source joint's rotation away from its reference
pose, in Anny's axes, applied to the alignment ``A_b`` of Anny's identity pose with the
source's reference pose. For a rest-pose reference ``R_ref`` is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perennial.body.rig import ANNY_BONES, ANNY_PARENTS
from perennial.motion.bonemap import BoneMap, RetargetError
from perennial.motion.bvh import BVH
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.reference import reference_pose
from perennial.motion.rest import AnnyRestInfo

__all__ = ["Plan", "body_scale", "make_plan", "min_rotation", "min_rotation_batch"]


def min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


def min_rotation_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


@dataclass
class Plan:
    """Everything per skeleton and map that retargeting frames needs.

    Attributes:
        mapped: (M,) Anny bone ids that are mapped.
        src: (M,) source joint per mapped bone.
        post: (M, 3, 3) ``R_ref,s^T C^T A_b``: the world delta is ``C R_s post``.
        driver: (J,) position in ``mapped`` of the bone that drives each Anny bone.
        reach: (mapped position, source target joint, Anny segment) per "reach" bone.
        hips_src: (K,) source joints of the hip anchors (may be empty).
        hips_anny: (3,) Anny hip midpoint relative to the root, identity pose.
        root_src: source joint of the root.
        C: (3, 3) source axes -> Anny axes.
        scale: metres per file unit times the body scale (:func:`body_scale`): source
            positions in Anny's size.
        reference_frame: the frame used as reference pose, None for the rest pose.
    """

    mapped: np.ndarray
    src: np.ndarray
    post: np.ndarray
    driver: np.ndarray
    reach: list[tuple[int, int, np.ndarray]]
    hips_src: np.ndarray
    hips_anny: np.ndarray
    root_src: int
    C: np.ndarray
    scale: float
    reference_frame: int | None


def body_scale(bvh: BVH, bmap: BoneMap, rest: AnnyRestInfo) -> float:
    """Anny's leg length over the source's (hip to knee to ankle, in metres; 1 when the
    legs are not mapped).

    Source positions are multiplied by it, so a taller or shorter performer's steps
    fit Anny's legs (no foot sliding) and figures compare postures, not sizes.
    """
    names = {n: i for i, n in enumerate(bvh.names)}
    p0, _ = forward_kinematics(bvh, rest=True)
    q, src, anny = rest.joints, 0.0, 0.0
    for s in "LR":
        chain = [f"upperleg01.{s}", f"lowerleg01.{s}", f"foot.{s}"]
        js = [names.get(bmap.evaluate.get(b, bmap.bones.get(b, "")), -1) for b in chain]
        if min(js) < 0:
            return 1.0
        a = [ANNY_BONES.index(b) for b in chain]
        src += sum(float(np.linalg.norm(p0[0, js[i + 1]] - p0[0, js[i]])) for i in range(2))
        anny += sum(float(np.linalg.norm(q[a[i + 1]] - q[a[i]])) for i in range(2))
    return anny / (src * bmap.scale) if src > 0 else 1.0


def _pair(bmap: BoneMap, names: dict[str, int], stem: str) -> tuple[int, int] | None:
    ids = [names.get(bmap.bones.get(f"{stem}.{s}", ""), -1) for s in "LR"]
    return (ids[0], ids[1]) if min(ids) >= 0 else None


def heading(bmap: BoneMap, names: dict[str, int], p_ref: np.ndarray, q: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(3, 3) turn about Anny's Z taking Anny's hips line (shoulders when the legs are
    unmapped) onto the source reference pose's, in Anny's axes (identity when neither is mapped)."""
    for stem in ("upperleg01", "upperarm01"):
        pair = _pair(bmap, names, stem)
        if pair is None:
            continue
        l_s = C @ (p_ref[pair[0]] - p_ref[pair[1]])
        l_a = q[ANNY_BONES.index(f"{stem}.L")] - q[ANNY_BONES.index(f"{stem}.R")]
        if np.hypot(*l_s[:2]) < 1e-9:
            continue
        t = np.arctan2(l_s[1], l_s[0]) - np.arctan2(l_a[1], l_a[0])
        c, s = np.cos(t), np.sin(t)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return np.eye(3)


TORSO_WEIGHTS = {"upperleg01.L": 1.0, "upperleg01.R": 1.0, "upperarm01.L": 1.0, "upperarm01.R": 1.0,
                 "neck01": 4.0, "head": 1.0}  # fmt: skip
"""Weights of the directions from the root that the root's alignment fits (the neck,
which sets the torso's lean, counts four times)."""


def _torso_alignment(bmap: BoneMap, names: dict[str, int], p_ref: np.ndarray, q: np.ndarray, C: np.ndarray,
                     H: np.ndarray) -> np.ndarray:  # fmt: skip
    """Root alignment: the rotation that best turns the directions from Anny's root to
    its hips, shoulders, neck base and head onto the source reference pose's
    (weighted least squares, Wahba's problem solved by SVD; :data:`TORSO_WEIGHTS`).

    This takes the heading and tilts the torso so that its lean matches the source's
    whatever the source's rest looks like; with fewer than three such joints mapped,
    the heading ``H`` alone.
    """
    pts = [b for b in TORSO_WEIGHTS if names.get(bmap.bones.get(b, ""), -1) >= 0]
    if len(pts) < 3:
        return H
    root = p_ref[names[bmap.bones["root"]]]
    v_a = np.stack([q[ANNY_BONES.index(b)] - q[0] for b in pts])
    v_s = np.stack([C @ (p_ref[names[bmap.bones[b]]] - root) for b in pts])
    n_a, n_s = np.linalg.norm(v_a, axis=1), np.linalg.norm(v_s, axis=1)
    keep = (n_a > 1e-9) & (n_s > 1e-9)
    if keep.sum() < 3:
        return H
    w = np.array([TORSO_WEIGHTS[b] for b in pts])[keep]
    # B = sum_k w_k s_k a_k^T; the best rotation R (R a_k ~ s_k) is U diag(1, 1, det) V^T
    B = np.einsum("k,ki,kj->ij", w, v_s[keep] / n_s[keep, None], v_a[keep] / n_a[keep, None])
    U, _, Vt = np.linalg.svd(B)
    return U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt


def make_plan(bvh: BVH, bmap: BoneMap, rest: AnnyRestInfo) -> Plan:
    """The :class:`Plan` of a file under a bone map.

    Raises:
        RetargetError: the map names joints the file lacks, or the skeleton has no shape.
    """
    bmap.check(bvh)
    mapped_src = [bvh.index(s) for s in bmap.bones.values()]
    p0, _ = forward_kinematics(bvh, rest=True)
    if len(mapped_src) > 1 and not np.ptp(p0[0, mapped_src], axis=0).max() > 1e-9:
        raise RetargetError(f"{bvh.path}: the mapped joints all sit at one point in the rest pose (every OFFSET "
                            "is zero?); there is no skeleton shape to retarget from")  # fmt: skip
    frame, p_ref, R_ref = reference_pose(bvh, bmap)
    C = bmap.axes()
    names = {n: i for i, n in enumerate(bvh.names)}
    src_par = np.asarray(bvh.parents)
    J = len(ANNY_BONES)
    par = np.asarray(ANNY_PARENTS)
    children: list[list[int]] = [[] for _ in range(J)]
    for c in range(1, J):
        children[par[c]].append(c)
    src_of = {ANNY_BONES.index(b): names[s] for b, s in bmap.bones.items()}
    q = rest.joints
    H = heading(bmap, names, p_ref, q, C)
    eps = 1e-9 * max(1.0, float(np.abs(p_ref).max()))

    def below(k: int, s: int) -> bool:
        """Source joint k is a strict descendant of s."""
        while k >= 0:
            k = src_par[k]
            if k == s:
                return True
        return False

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
        A_par = align[anc] if anc >= 0 else H
        mode = bmap.mode(ANNY_BONES[b])
        if b == 0 and mode in ("aim", "reach"):
            align[b] = _torso_alignment(bmap, names, p_ref, q, C, H)
            continue
        if mode == "world":
            align[b] = H
            continue
        align[b] = A_par
        if mode == "inherit":
            continue
        s = src_of[b]
        groups: dict[int, list[int]] = {}
        for c in first_mapped_below(b, s):
            k = src_of[c]  # the source segment s -> k, when k hangs below s
            if below(k, s) and np.linalg.norm(p_ref[k] - p_ref[s]) > eps:
                groups.setdefault(k, []).append(c)
        best = None
        for k, cs in groups.items():
            v_a = A_par @ (q[cs].mean(0) - q[b])
            v_s = C @ (p_ref[k] - p_ref[s])
            if np.linalg.norm(v_a) < 1e-9:
                continue
            cos = v_a @ v_s / (np.linalg.norm(v_a) * np.linalg.norm(v_s))
            if best is None or cos > best[0]:
                best = (cos, v_a, v_s, k, q[cs].mean(0) - q[b])
        if best is not None:
            align[b] = min_rotation(best[1], best[2]) @ A_par
            if mode == "reach":
                reach.append((pos_in[b], best[3], best[4]))
    hip_bones = [ANNY_BONES.index(f"upperleg01.{s}") for s in "LR"]
    if all(h in src_of for h in hip_bones):
        hips_src = np.array([src_of[h] for h in hip_bones])
        hips_anny = q[hip_bones].mean(0) - q[0]
    else:
        hips_src, hips_anny = np.zeros(0, dtype=np.int64), np.zeros(3)
    src = np.array([src_of[b] for b in mapped])
    A = np.stack([align[b] for b in mapped])
    return Plan(
        mapped=np.array(mapped),
        src=src,
        post=R_ref[src].transpose(0, 2, 1) @ C.T @ A,
        reach=reach,
        driver=driver,
        hips_src=hips_src,
        hips_anny=hips_anny,
        root_src=src_of[0],
        C=C,
        scale=float(bmap.scale) * body_scale(bvh, bmap, rest),
        reference_frame=frame,
    )
