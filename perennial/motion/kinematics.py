"""Forward kinematics of a parsed BVH skeleton (:class:`~perennial.motion.bvh.BVH`).

Conventions (the usual ones, also Blender's):

- Rotation channels are Euler angles in degrees, composed in the order they are
  listed: ``CHANNELS 3 Zrotation Xrotation Yrotation`` gives the local rotation
  ``Rz(a) @ Rx(b) @ Ry(c)`` acting on column vectors.
- Position channels give the joint's local translation and *replace* the matching
  component of its ``OFFSET`` (the root's offset is normally zero, so for the root
  they are its position in the file's world frame).
- A joint's world rotation is its parent's world rotation times its local
  rotation; its world position is ``parent_pos + parent_rot @ local_translation``.
  At rest (all channels zero) every world rotation is the identity.

Units and axes are the file's own (CMU: Y up, about 0.056444 m per unit); nothing
here converts them. Everything is vectorised over frames (numpy, float64).
"""

from __future__ import annotations

import numpy as np

from perennial.motion.bvh import BVH

__all__ = [
    "end_site_positions",
    "euler_to_matrix",
    "forward_kinematics",
    "local_transforms",
    "matrix_to_euler",
]


def _axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices about the X, Y or Z axis by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"X": (1, 2), "Y": (2, 0), "Z": (0, 1)}[axis]
    k = 3 - i - j
    R = np.zeros(angle.shape + (3, 3))
    R[..., k, k] = 1.0
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


def euler_to_matrix(order: str, degrees: np.ndarray) -> np.ndarray:
    """Intrinsic Euler angles to rotation matrices, BVH style.

    Args:
        order: axis letters in channel order, e.g. ``"ZXY"``.
        degrees: (..., len(order)) angles in degrees, same order.

    Returns:
        (..., 3, 3) ``R_order[0](a0) @ R_order[1](a1) @ ...`` (column vectors).
    """
    rad = np.radians(np.asarray(degrees, dtype=np.float64))
    if not order:
        return np.broadcast_to(np.eye(3), rad.shape[:-1] + (3, 3)).copy()
    out = _axis_rotation(order[0], rad[..., 0])
    for k in range(1, len(order)):
        out = out @ _axis_rotation(order[k], rad[..., k])
    return out


def matrix_to_euler(order: str, R: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix` for three distinct axes.

    Args:
        order: three different axis letters, e.g. ``"ZYX"``.
        R: (..., 3, 3) rotation matrices.

    Returns:
        (..., 3) angles in degrees, in ``order``, with the middle angle in [-90, 90];
        at the middle angle's +-90 degrees (gimbal lock) the last angle is 0.
    """
    i, j, k = ("XYZ".index(a) for a in order)
    if len({i, j, k}) != 3:
        raise ValueError(f"rotation order {order!r} needs three different axes")
    sign = 1.0 if (i, j, k) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
    R = np.asarray(R, dtype=np.float64)
    b = np.arcsin(np.clip(sign * R[..., i, k], -1.0, 1.0))
    locked = np.abs(sign * R[..., i, k]) > 1 - 1e-12
    a = np.where(locked, np.arctan2(sign * R[..., k, j], R[..., j, j]), np.arctan2(-sign * R[..., j, k], R[..., k, k]))
    c = np.where(locked, 0.0, np.arctan2(-sign * R[..., i, j], R[..., i, i]))
    return np.degrees(np.stack([a, b, c], -1))


def local_transforms(
    bvh: BVH, frames: slice | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint local rotations and translations.

    Args:
        bvh: the parsed file.
        frames: optional selection of frames (slice or index array); all by default.

    Returns:
        rotations (F, J, 3, 3) and translations (F, J, 3) (file units, relative
        to the parent joint, in the parent's frame).
    """
    data = bvh.motion if frames is None else bvh.motion[frames]
    F = data.shape[0]
    J = len(bvh.joints)
    rot = np.broadcast_to(np.eye(3), (F, J, 3, 3)).copy()
    trans = np.broadcast_to(bvh.offsets, (F, J, 3)).copy()
    groups: dict[str, tuple[list[int], list[list[int]]]] = {}  # rotation order -> joints, columns
    for j, joint in enumerate(bvh.joints):
        order, cols = [], []
        for k, ch in enumerate(joint.channels):
            col = joint.channel_start + k
            if ch.endswith("position"):
                trans[:, j, "XYZ".index(ch[0])] = data[:, col]
            else:
                order.append(ch[0])
                cols.append(col)
        if order:
            js, cs = groups.setdefault("".join(order), ([], []))
            js.append(j)
            cs.append(cols)
    for order, (js, cs) in groups.items():  # all joints with one rotation order at once
        rot[:, js] = euler_to_matrix(order, data[:, np.asarray(cs)])
    return rot, trans


def forward_kinematics(
    bvh: BVH, frames: slice | np.ndarray | None = None, rest: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """World joint positions and rotations.

    Args:
        bvh: the parsed file.
        frames: optional selection of frames; all by default.
        rest: if True, ignore the motion and return the rest pose (one frame,
            all channels zero, joints at their offsets).

    Returns:
        positions (F, J, 3) in file units and world rotations (F, J, 3, 3) in the
        file's world frame (identity for every joint at rest).
    """
    if rest:
        rot = np.broadcast_to(np.eye(3), (1, len(bvh.joints), 3, 3)).copy()
        trans = bvh.offsets[None].copy()
    else:
        rot, trans = local_transforms(bvh, frames)
    pos = np.empty_like(trans)
    world = np.empty_like(rot)
    for j, joint in enumerate(bvh.joints):
        p = joint.parent
        if p < 0:
            world[:, j] = rot[:, j]
            pos[:, j] = trans[:, j]
        else:
            world[:, j] = world[:, p] @ rot[:, j]
            pos[:, j] = pos[:, p] + np.einsum("fab,fb->fa", world[:, p], trans[:, j])
    return pos, world


def end_site_positions(
    bvh: BVH, positions: np.ndarray, rotations: np.ndarray
) -> dict[int, np.ndarray]:
    """World positions of End Sites, keyed by the joint that owns them.

    Args:
        bvh: the parsed file.
        positions: (F, J, 3) from :func:`forward_kinematics`, file units.
        rotations: (F, J, 3, 3) from :func:`forward_kinematics`.

    Returns:
        joint index -> (F, K, 3) positions of its K End Sites, file units.
    """
    out = {}
    for j, joint in enumerate(bvh.joints):
        if len(joint.end_sites):
            # site[f, k, a] = pos[f, j, a] + sum_b rot[f, j, a, b] * offset[k, b]
            out[j] = positions[:, j, None] + np.einsum(
                "fab,kb->fka", rotations[:, j], joint.end_sites
            )
    return out
