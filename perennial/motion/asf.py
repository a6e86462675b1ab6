"""Acclaim ASF/AMC motion capture (CMU's own format, HDM05), read as a BVH skeleton.

An ``.asf`` file is the skeleton: ``:units`` (``length`` is a scale: the CMU and HDM05
files write ``0.45``, i.e. lengths in inches times 0.45; ``angle deg|rad``), the root's
channel ``order`` and ``axis``, and per bone its ``direction`` (unit vector in the
global frame of the rest pose), ``length``, local ``axis a b c XYZ`` (Euler angles of
the bone's frame, applied about fixed axes in the letters' order) and ``dof``
(``rx ry rz`` subset). ``:hierarchy`` lists each bone's children. An ``.amc`` file is
the motion: a frame number, then one line per bone with its dof values.

Kinematics (the common reading of the format): with ``C_b`` the bone's axis rotation
and ``M_b`` its dof rotation (applied about fixed axes in dof order), a bone's world
rotation is ``W_b = W_parent C_b M_b C_b^-1``, it starts where its parent ends and
ends ``length * W_b direction`` further. The root's world rotation is
``C_root M_root C_root^-1`` and its position the AMC's ``TX TY TZ``.

:func:`read_amc` turns this into a :class:`~perennial.motion.bvh.BVH`: one joint per
bone, placed at the bone's *start* (so ``lfemur`` sits at the hip and turns the thigh,
as in CMU's BVH conversions), ``OFFSET`` = the parent bone's vector, local rotation
``C_b M_b C_b^-1`` written as ``Zrotation Yrotation Xrotation`` channels, End Sites at
the ends of leaf bones, and ``unit_scale = 0.0254 / length`` metres per unit. Rotations
are exact; everything else (detection, retargeting) is the BVH code path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perennial.errors import PerennialError
from perennial.motion.bvh import BVH, BVHJoint
from perennial.motion.kinematics import euler_to_matrix, matrix_to_euler

__all__ = ["ASFError", "ASFSkeleton", "amc_to_bvh", "find_asf", "read_amc", "read_asf"]

DEFAULT_FPS = 120.0
"""Frame rate of AMC files, which do not record one (CMU and HDM05 capture at 120 Hz);
a name ending in ``_<rate>`` (``HDM_bd_kick_001_120.amc``) gives it."""


class ASFError(PerennialError):
    """A malformed or missing ASF/AMC file; the message names the file and the line."""


@dataclass
class ASFBone:
    """One bone of an ASF skeleton (global rest-pose frame, file units)."""

    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray  # (3, 3) C
    dof: tuple[str, ...]
    parent: str = "root"


@dataclass
class ASFSkeleton:
    """A parsed ``.asf`` file.

    Attributes:
        path: the file.
        length_unit: the ``:units length`` scale (None when absent).
        degrees: angles in degrees (else radians).
        root_order: the AMC root columns, e.g. ``("TX", "TY", "TZ", "RX", "RY", "RZ")``.
        root_axis: (3, 3) the root's ``C``.
        bones: bones with parents before children.
    """

    path: str
    length_unit: float | None = None
    degrees: bool = True
    root_order: tuple[str, ...] = ("TX", "TY", "TZ", "RX", "RY", "RZ")
    root_axis: np.ndarray = field(default_factory=lambda: np.eye(3))
    bones: list[ASFBone] = field(default_factory=list)


def _static_rotation(order: str, angles: np.ndarray, degrees: bool) -> np.ndarray:
    """(..., 3, 3) rotations applied about fixed axes in ``order`` (``"XYZ"``: X first)."""
    a = np.asarray(angles, dtype=np.float64)
    if not degrees:
        a = np.degrees(a)
    return euler_to_matrix(order[::-1], a[..., ::-1])


def _numbers(path: str, n: int, toks: list[str], what: str, count: int | None = None) -> np.ndarray:
    try:
        vals = np.array([float(t) for t in toks], dtype=np.float64)
    except ValueError:
        raise ASFError(f"{path}, line {n}: bad number in {what}: {' '.join(toks)!r}") from None
    if count is not None and len(vals) != count:
        raise ASFError(f"{path}, line {n}: {what} needs {count} numbers, got {len(vals)}")
    if not np.isfinite(vals).all():
        raise ASFError(f"{path}, line {n}: non-finite number in {what}")
    return vals


def _read_text(path: Path, kind: str) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise ASFError(f"{path}: cannot read {kind}: {e.strerror or e}") from None


def read_asf(path: str | Path) -> ASFSkeleton:
    """Parse an ``.asf`` skeleton.

    Raises:
        ASFError: unreadable or malformed file (names the file and line).
    """
    path = Path(path)
    p = str(path)
    skel = ASFSkeleton(p)
    lines = _read_text(path, "skeleton")
    section, bone, hierarchy = "", None, {}
    root_axis_order, root_orientation = "XYZ", np.zeros(3)
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        toks = line.split()
        key = toks[0].lower()
        if key.startswith(":"):
            section = key
            continue
        if section == ":units" and len(toks) >= 2:
            if key == "length":
                skel.length_unit = float(_numbers(p, n, toks[1:2], "length unit")[0])
            elif key == "angle":
                skel.degrees = toks[1].lower().startswith("deg")
        elif section == ":root":
            if key == "order":
                skel.root_order = tuple(t.upper() for t in toks[1:])
            elif key == "axis" and len(toks) == 2:
                root_axis_order = toks[1].upper()
                if sorted(root_axis_order) != ["X", "Y", "Z"]:
                    raise ASFError(f"{p}, line {n}: root axis {toks[1]!r} is not a permutation of XYZ")
            elif key == "orientation":
                root_orientation = _numbers(p, n, toks[1:], "root orientation", 3)
        elif section == ":bonedata":
            if key == "begin":
                bone = {"line": n}
            elif key == "end":
                if bone is None or "name" not in bone:
                    raise ASFError(f"{p}, line {n}: bone without a name")
                for need in ("direction", "length"):
                    if need not in bone:
                        raise ASFError(f"{p}, line {bone['line']}: bone {bone['name']!r} has no {need}")
                d = bone["direction"]
                norm = np.linalg.norm(d)
                skel.bones.append(ASFBone(bone["name"], d / norm if norm > 0 else d, bone["length"],
                                          bone.get("axis", np.eye(3)), bone.get("dof", ())))  # fmt: skip
                bone = None
            elif bone is not None:
                if key == "name":
                    bone["name"] = toks[1]
                elif key == "direction":
                    bone["direction"] = _numbers(p, n, toks[1:], "direction", 3)
                elif key == "length":
                    bone["length"] = float(_numbers(p, n, toks[1:], "length", 1)[0])
                elif key == "axis":
                    order = toks[4].upper() if len(toks) > 4 else "XYZ"
                    if sorted(order) != ["X", "Y", "Z"]:
                        raise ASFError(f"{p}, line {n}: axis order {toks[4]!r} is not a permutation of XYZ")
                    vals = _numbers(p, n, toks[1:4], "axis", 3)
                    bone["axis"] = _static_rotation(order, vals, skel.degrees)
                elif key == "dof":
                    dof = tuple(t.lower() for t in toks[1:])
                    bad = [d for d in dof if d not in ("rx", "ry", "rz")]
                    if bad:
                        raise ASFError(f"{p}, line {n}: bone {bone.get('name')!r}: dof {bad[0]!r} is not supported "
                                       "(only rx, ry, rz)")  # fmt: skip
                    bone["dof"] = dof
        elif section == ":hierarchy" and key not in ("begin", "end"):
            for child in toks[1:]:
                hierarchy[child] = toks[0]
    if not skel.bones:
        raise ASFError(f"{p}: no :bonedata bones (not an ASF skeleton?)")
    skel.root_axis = _static_rotation(root_axis_order, root_orientation, skel.degrees)
    by_name = {b.name: b for b in skel.bones}
    for b in skel.bones:
        parent = hierarchy.get(b.name)
        if parent is None:
            raise ASFError(f"{p}: bone {b.name!r} is not in :hierarchy")
        if parent != "root" and parent not in by_name:
            raise ASFError(f"{p}: :hierarchy gives bone {b.name!r} the unknown parent {parent!r}")
        b.parent = parent
    skel.bones = _parents_first(p, skel.bones)
    return skel


def _parents_first(path: str, bones: list[ASFBone]) -> list[ASFBone]:
    done, out, todo = {"root"}, [], list(bones)
    while todo:
        ready = [b for b in todo if b.parent in done]
        if not ready:
            raise ASFError(f"{path}: :hierarchy has a cycle through {todo[0].name!r}")
        for b in ready:
            out.append(b)
            done.add(b.name)
        todo = [b for b in todo if b.name not in done]
    return out


def find_asf(amc: str | Path) -> Path:
    """The skeleton of an ``.amc`` file: the ``.asf`` beside it whose name starts its name
    (the actor: ``HDM_bd.asf`` for ``HDM_bd_kick_001_120.amc``, ``01.asf`` for
    ``01_02.amc``), or the only ``.asf`` there.

    Raises:
        ASFError: none or several candidates (the message says to pass the skeleton).
    """
    amc = Path(amc)
    folder = amc.parent
    try:
        found = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".asf" and f.is_file())
    except OSError:
        found = []
    stem = amc.stem.lower()
    prefixed = [f for f in found if stem.startswith(f.stem.lower())]
    if prefixed:
        return max(prefixed, key=lambda f: len(f.stem))
    if len(found) == 1:
        return found[0]
    what = "no .asf skeleton" if not found else f"{len(found)} .asf skeletons, none named like it"
    raise ASFError(f"{amc}: {what} in {folder} (its actor's skeleton is expected beside it, e.g. "
                   f"{amc.stem.split('_')[0]}.asf); pass the skeleton with --asf")  # fmt: skip


def _amc_fps(amc: Path) -> float:
    m = re.search(r"_(\d+)$", amc.stem)
    if m and 10 <= int(m.group(1)) <= 1000:
        return float(m.group(1))
    return DEFAULT_FPS


def read_amc(path: str | Path, asf: str | Path | ASFSkeleton | None = None, fps: float | None = None) -> BVH:
    """Read an ``.amc`` motion with its skeleton, as a BVH (see the module docstring).

    Args:
        path: the ``.amc`` file.
        asf: its ``.asf`` skeleton (a path or a parsed one); found beside it when None
            (:func:`find_asf`).
        fps: frames per second; from the name (``..._120.amc``) or 120 when None.

    Raises:
        ASFError: missing skeleton, malformed file, or bones the skeleton lacks
            (names the file and line).
    """
    path = Path(path)
    skel = asf if isinstance(asf, ASFSkeleton) else read_asf(asf if asf is not None else find_asf(path))
    p = str(path)
    lines = _read_text(path, "motion")
    dofs = {b.name: len(b.dof) for b in skel.bones} | {"root": len(skel.root_order)}
    values: dict[str, list[list[str]]] = {}
    where: dict[str, list[int]] = {}
    frames = 0
    degrees = skel.degrees
    for n, raw in enumerate(lines, 1):
        toks = raw.split()
        if not toks or toks[0].startswith("#"):
            continue
        if toks[0].startswith(":"):
            if toks[0].upper() == ":RADIANS":
                degrees = False
            elif toks[0].upper() == ":DEGREES":
                degrees = True
            continue
        if len(toks) == 1 and toks[0].isdigit():
            frames += 1
            continue
        if frames == 0:
            raise ASFError(f"{p}, line {n}: bone values before the first frame number")
        name = toks[0]
        if name not in dofs:
            raise ASFError(f"{p}, line {n}: bone {name!r} is not in the skeleton {skel.path}")
        if len(toks) - 1 != dofs[name]:
            raise ASFError(f"{p}, line {n}: bone {name!r} needs {dofs[name]} values, got {len(toks) - 1}")
        rows = values.setdefault(name, [])
        if len(rows) != frames - 1:
            raise ASFError(f"{p}, line {n}: bone {name!r} given twice in frame {frames}")
        rows.append(toks[1:])
        where.setdefault(name, []).append(n)
    if frames == 0:
        raise ASFError(f"{p}: no frames (not an AMC motion?)")
    arrays: dict[str, np.ndarray] = {}
    for name, k in dofs.items():
        if k == 0:
            continue
        rows = values.get(name, [])
        if len(rows) != frames:
            raise ASFError(f"{p}: bone {name!r} is missing from frame {len(rows) + 1} of {frames}")
        try:
            arr = np.array(rows, dtype=np.float64)
        except ValueError:
            bad = next(i for i, r in enumerate(rows) if not all(_is_float(t) for t in r))
            raise ASFError(f"{p}, line {where[name][bad]}: bad number for bone {name!r}") from None
        if not np.isfinite(arr).all():
            bad = int(np.nonzero(~np.isfinite(arr).all(1))[0][0])
            raise ASFError(f"{p}, line {where[name][bad]}: non-finite value for bone {name!r}")
        arrays[name] = arr
    return amc_to_bvh(skel, arrays, frames, fps or _amc_fps(path), p, degrees)


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def amc_to_bvh(skel: ASFSkeleton, values: dict[str, np.ndarray], frames: int, fps: float, path: str,
               degrees: bool = True) -> BVH:  # fmt: skip
    """A BVH with the skeleton's bones as joints and the AMC values as channels.

    Args:
        skel: the skeleton.
        values: bone -> (F, dof) values (``"root"`` in ``skel.root_order``).
        frames: F.
        fps: frames per second.
        path: for messages.
        degrees: angles in degrees (else radians).
    """
    zyx = ("Zrotation", "Yrotation", "Xrotation")
    joints = [BVHJoint("root", -1, np.zeros(3), ("Xposition", "Yposition", "Zposition", *zyx), 0)]
    index = {"root": 0}
    cols = [np.zeros((frames, 6))]
    root = values.get("root", np.zeros((frames, len(skel.root_order))))
    for k, c in enumerate(skel.root_order):
        if c[0] == "T":
            cols[0][:, "XYZ".index(c[1])] = root[:, k]
    r_order = "".join(c[1] for c in skel.root_order if c[0] == "R")
    r_vals = np.stack([root[:, k] for k, c in enumerate(skel.root_order) if c[0] == "R"], -1) if r_order else None
    if r_order:
        M = _static_rotation(r_order, r_vals, degrees)
        cols[0][:, 3:] = matrix_to_euler("ZYX", skel.root_axis @ M @ skel.root_axis.T)
    vec = {b.name: b.direction * b.length for b in skel.bones}
    has_child = {b.parent for b in skel.bones}
    for b in skel.bones:
        offset = np.zeros(3) if b.parent == "root" else vec[b.parent]
        local = np.zeros((frames, 3))
        if b.dof:
            M = _static_rotation("".join(d[1].upper() for d in b.dof), values[b.name], degrees)
            local = matrix_to_euler("ZYX", b.axis @ M @ b.axis.T)
        ends = np.zeros((0, 3)) if b.name in has_child else vec[b.name][None]
        joints.append(BVHJoint(b.name, index[b.parent], offset, zyx, 3 * len(joints) + 3, ends))
        index[b.name] = len(joints) - 1
        cols.append(local)
    motion = np.concatenate(cols, 1)
    scale = 0.0254 / skel.length_unit if skel.length_unit else None
    return BVH(joints, 1.0 / fps, motion, path, unit_scale=scale)
