"""A small, dependency-free BVH (Biovision Hierarchy) reader.

Supported: any single-root hierarchy; joint names (the rest of the ``ROOT``/``JOINT``
line, so names with spaces survive); ``OFFSET``; ``CHANNELS`` with any number and
order of ``X/Y/Zposition`` and ``X/Y/Zrotation`` channels (3- and 6-channel joints
are the usual cases, 0 channels is allowed); ``End Site`` blocks; the ``MOTION``
section with ``Frames:`` and ``Frame Time:`` and one line of numbers per frame.

The reader keeps the channel values as they are written (rotations in degrees,
positions in file units); what they mean, and the joints' world positions and
rotations, is :mod:`perennial.motion.kinematics`. Units and axes are the file's
own (CMU: Y up, about 0.056444 m per unit); the reader does not convert them.
Malformed files raise :class:`BVHError` naming the file and line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perennial.errors import PerennialError

__all__ = ["FRAME_TIME_RANGE", "MAX_JOINTS", "BVH", "BVHError", "BVHJoint", "parse_bvh", "read_bvh"]

_CHANNELS = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")


class BVHError(PerennialError):
    """A malformed BVH file; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.reason = message


@dataclass
class BVHJoint:
    """One joint of a BVH hierarchy.

    Attributes:
        name: joint name as written in the file.
        parent: index of the parent joint, -1 for the root.
        offset: (3,) rest offset from the parent joint, file units.
        channels: channel names in file order (e.g. ``("Zrotation", "Xrotation", "Yrotation")``).
        channel_start: column of the first channel of this joint in the motion data.
        end_sites: (K, 3) offsets of this joint's ``End Site`` blocks (K is 0 or 1 in
            practice), file units.
    """

    name: str
    parent: int
    offset: np.ndarray
    channels: tuple[str, ...]
    channel_start: int
    end_sites: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


@dataclass
class BVH:
    """A parsed BVH file (posed by :func:`perennial.motion.kinematics.forward_kinematics`).

    Attributes:
        joints: joints in file order (parents before children).
        frame_time: seconds per frame.
        motion: (F, C) float64 channel values, C = total channel count; rotations in
            degrees, positions in file units.
        path: file the data came from (for messages), or a label.
        unit_scale: metres per file unit when the file says (an ASF's ``:units``),
            else None (BVH has no unit; the skeleton's size tells).
    """

    joints: list[BVHJoint]
    frame_time: float
    motion: np.ndarray
    path: str = "<bvh>"
    unit_scale: float | None = None

    @property
    def names(self) -> list[str]:
        """Joint names in file order."""
        return [j.name for j in self.joints]

    @property
    def parents(self) -> list[int]:
        """Parent index per joint (-1 for the root)."""
        return [j.parent for j in self.joints]

    @property
    def offsets(self) -> np.ndarray:
        """(J, 3) rest offsets from the parent, file units."""
        return np.stack([j.offset for j in self.joints])

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def fps(self) -> float:
        """Frames per second, ``1 / frame_time``."""
        return 1.0 / self.frame_time

    def subset(self, frames: slice | np.ndarray) -> BVH:
        """The same hierarchy with a selection of frames (e.g. ``slice(0, 60)``)."""
        return BVH(self.joints, self.frame_time, self.motion[frames].copy(), self.path, self.unit_scale)

    def index(self, name: str) -> int:
        """Index of the joint called ``name``.

        Raises:
            KeyError: no such joint (the message lists the joints).
        """
        for i, j in enumerate(self.joints):
            if j.name == name:
                return i
        raise KeyError(f"{self.path}: no joint {name!r}; joints: {', '.join(self.names)}")


# ---------------------------------------------------------------------------
# parsing


class _Lines:
    """Non-empty lines of the hierarchy with their 1-based line numbers."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.i = 0

    def error(self, message: str, line: int | None = None) -> BVHError:
        if line is None:
            line = min(self.i + 1, len(self.lines)) if self.lines else None
        return BVHError(self.path, line, message)

    def next(self, what: str) -> tuple[int, list[str]]:
        """Next non-blank line split into tokens, with braces split off."""
        while self.i < len(self.lines):
            self.i += 1
            text = self.lines[self.i - 1].replace("{", " { ").replace("}", " } ")
            toks = text.split()
            if toks:
                return self.i, toks
        raise BVHError(self.path, len(self.lines), f"unexpected end of file, expected {what}")


def _floats(src: _Lines, line: int, toks: list[str], n: int, what: str) -> np.ndarray:
    if len(toks) != n:
        raise src.error(f"{what} needs {n} numbers, got {len(toks)}", line)
    try:
        vals = np.array([float(t) for t in toks])
    except ValueError:
        bad = next(t for t in toks if not _is_float(t))
        raise src.error(f"bad number {bad!r} in {what}", line) from None
    if not np.isfinite(vals).all():
        raise src.error(f"non-finite number in {what}", line)
    return vals


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def _expect_open(src: _Lines, toks: list[str], line: int, owner: str) -> None:
    """The opening brace is either the rest of the header line or the next line."""
    if toks and toks[0] == "{" and len(toks) == 1:
        return
    if toks:
        raise src.error(f"unexpected {' '.join(toks)!r} after {owner}, expected '{{'", line)
    line, toks = src.next(f"'{{' after {owner}")
    if toks != ["{"]:
        raise src.error(f"expected '{{' after {owner}, got {' '.join(toks)!r}", line)


MAX_JOINTS = 10_000
"""Joints a BVH may have; real skeletons have up to a few hundred."""
FRAME_TIME_RANGE = (1e-4, 10.0)
"""Accepted seconds per frame (10 kHz down to one frame per 10 s)."""


def _read_joint_header(src: _Lines, toks: list[str], line: int, what: str) -> str:
    name = " ".join(t for t in toks[1:] if t != "{")
    if not name:
        raise src.error(f"{what} without a name", line)
    _expect_open(src, [t for t in toks[1:] if t == "{"], line, f"joint {name!r}")
    return name


def _parse_channels(src: _Lines, toks: list[str], line: int, owner: str) -> tuple[str, ...]:
    if len(toks) < 2 or not toks[1].isdigit():
        raise src.error(f"CHANNELS of {owner} must start with a channel count", line)
    n = int(toks[1])
    names = tuple(toks[2:])
    if len(names) != n:
        raise src.error(f"CHANNELS of {owner} declares {n} channels but lists {len(names)}", line)
    for ch in names:
        if ch not in _CHANNELS:
            raise src.error(f"unknown channel {ch!r} in {owner}; known: {', '.join(_CHANNELS)}", line)
    if len(set(names)) != len(names):
        raise src.error(f"repeated channel in {owner}", line)
    return names


def _parse_end_site(src: _Lines, toks: list[str], line: int, owner: str) -> np.ndarray:
    _expect_open(src, toks[2:], line, "End Site")
    line, toks = src.next("OFFSET of End Site")
    if toks[0] != "OFFSET":
        raise src.error(f"expected OFFSET in End Site of {owner}, got {toks[0]!r}", line)
    offset = _floats(src, line, toks[1:], 3, f"End Site OFFSET of {owner}")
    line, toks = src.next("'}' closing End Site")
    if toks != ["}"]:
        raise src.error(f"expected '}}' closing End Site of {owner}, got {' '.join(toks)!r}", line)
    return offset


def _parse_hierarchy(src: _Lines, root: str, root_line: int) -> tuple[list[BVHJoint], int]:
    """The joints of the ROOT block whose header was read, in file order, and the channel count.

    Iterative (a stack of open joints) and linear in the file: any nesting depth
    and joint count up to :data:`MAX_JOINTS`.
    """
    joints: list[BVHJoint] = []
    names: set[str] = set()
    ends: dict[int, list[np.ndarray]] = {}
    seen: dict[int, set[str]] = {}
    heads: dict[int, int] = {}
    ncols = 0

    def open_joint(name: str, parent: int, line: int) -> int:
        if name in names:
            raise src.error(f"duplicate joint name {name!r}", line)
        if len(joints) >= MAX_JOINTS:
            raise src.error(f"more than {MAX_JOINTS} joints; not a skeleton this reader accepts", line)
        names.add(name)
        joints.append(BVHJoint(name, parent, np.zeros(3), (), ncols))
        index = len(joints) - 1
        ends[index], seen[index], heads[index] = [], set(), line
        return index

    stack = [open_joint(root, -1, root_line)]
    while stack:
        index = stack[-1]
        joint = joints[index]
        owner = f"joint {joint.name!r}"
        line, toks = src.next(f"'}}' closing {owner}")
        key = toks[0]
        if key == "}":
            if len(toks) > 1:
                raise src.error(f"unexpected {' '.join(toks[1:])!r} after '}}'", line)
            if "OFFSET" not in seen[index]:
                raise src.error(f"{owner} has no OFFSET", heads[index])
            joint.end_sites = np.stack(ends[index]) if ends[index] else np.zeros((0, 3))
            stack.pop()
        elif key in ("OFFSET", "CHANNELS"):
            if key in seen[index]:
                raise src.error(f"second {key} in {owner}", line)
            seen[index].add(key)
            if key == "OFFSET":
                joint.offset = _floats(src, line, toks[1:], 3, f"OFFSET of {owner}")
            else:
                joint.channels = _parse_channels(src, toks, line, owner)
                joint.channel_start = ncols
                ncols += len(joint.channels)
        elif key == "JOINT":
            stack.append(open_joint(_read_joint_header(src, toks, line, "JOINT"), index, line))
        elif key == "End" and len(toks) >= 2 and toks[1] == "Site":
            ends[index].append(_parse_end_site(src, toks, line, owner))
        else:
            raise src.error(f"unexpected {key!r} in {owner}", line)
    return joints, ncols


def parse_bvh(text: str, path: str | Path = "<string>") -> BVH:
    """Parse BVH text.

    Args:
        text: the whole file.
        path: name used in error messages.

    Raises:
        BVHError: malformed content, naming ``path`` and the line.
    """
    path = str(path)
    lines = text.splitlines()
    # split at the MOTION keyword (first line whose first token is MOTION)
    motion_at = None
    for i, ln in enumerate(lines):
        s = ln.split()
        if s and s[0] == "MOTION":
            motion_at = i
            break
    head = _Lines(path, lines if motion_at is None else lines[:motion_at])
    line, toks = head.next("HIERARCHY")
    if toks != ["HIERARCHY"]:
        raise head.error(f"expected HIERARCHY, got {' '.join(toks)!r}", line)
    line, toks = head.next("ROOT")
    if toks[0] != "ROOT":
        raise head.error(f"expected ROOT, got {toks[0]!r}", line)
    joints, ncols = _parse_hierarchy(head, _read_joint_header(head, toks, line, "ROOT"), line)
    while head.i < len(head.lines):
        head.i += 1
        rest = head.lines[head.i - 1].split()
        if rest:
            if rest[0] == "ROOT":
                raise head.error("more than one ROOT is not supported", head.i)
            raise head.error(f"unexpected {rest[0]!r} after the hierarchy", head.i)
    if motion_at is None:
        raise BVHError(path, len(lines), "no MOTION section")
    return BVH(joints, *_parse_motion(path, lines, motion_at, ncols), path=path)


def _parse_motion(path: str, lines: list[str], at: int, ncols: int) -> tuple[float, np.ndarray]:
    if lines[at].split() != ["MOTION"]:
        raise BVHError(path, at + 1, "expected 'MOTION' alone on its line")
    i = at + 1

    def header(label: str) -> tuple[int, str]:
        nonlocal i
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            raise BVHError(path, len(lines), f"unexpected end of file, expected '{label}'")
        text = lines[i].strip()
        i += 1
        if not text.startswith(label):
            raise BVHError(path, i, f"expected '{label}', got {text!r}")
        return i, text[len(label) :].strip()

    ln, val = header("Frames:")
    try:
        frames = int(val)
    except ValueError:
        raise BVHError(path, ln, f"bad frame count {val!r}") from None
    if frames < 1:
        raise BVHError(path, ln, f"'Frames: {frames}': a motion needs at least one frame")
    ln, val = header("Frame Time:")
    try:
        frame_time = float(val)
    except ValueError:
        raise BVHError(path, ln, f"bad frame time {val!r}") from None
    lo, hi = FRAME_TIME_RANGE
    if not (math.isfinite(frame_time) and lo <= frame_time <= hi):
        raise BVHError(path, ln, f"frame time must be between {lo:g} and {hi:g} seconds, got {val!r}")
    rows: list[list[str]] = []
    numbers: list[int] = []
    for k in range(i, len(lines)):
        toks = lines[k].split()
        if not toks:
            continue
        if len(rows) == frames:
            raise BVHError(path, k + 1, f"more frame lines than the {frames} declared in 'Frames:'")
        if len(toks) != ncols:
            raise BVHError(
                path,
                k + 1,
                f"frame {len(rows)} has {len(toks)} values, the hierarchy declares {ncols} channels",
            )
        rows.append(toks)
        numbers.append(k + 1)
    if len(rows) < frames:
        raise BVHError(
            path,
            len(lines),
            f"file ends after {len(rows)} of the {frames} frames declared in 'Frames:'",
        )
    try:
        motion = np.array(rows, dtype=np.float64).reshape(frames, ncols)
    except ValueError:
        for toks, n in zip(rows, numbers):
            for t in toks:
                if not _is_float(t):
                    raise BVHError(path, n, f"bad number {t!r}") from None
        raise
    if not np.isfinite(motion).all():
        r = int(np.nonzero(~np.isfinite(motion).all(1))[0][0])
        raise BVHError(path, numbers[r], "non-finite value in frame data")
    return frame_time, motion


def read_bvh(path: str | Path) -> BVH:
    """Read and parse a BVH file.

    Raises:
        BVHError: unreadable or malformed file (message names the file and line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise BVHError(path, None, f"not a text file ({e.reason})") from None
    except OSError as e:
        raise BVHError(path, None, f"cannot read: {e.strerror or e}") from None
    return parse_bvh(text, path)
