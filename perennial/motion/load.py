"""Reading a motion clip from a file of either kind: a BVH (retargeted) or a clip ``.npz``.

It sits above both :mod:`perennial.motion.clip` and :mod:`perennial.motion.retarget`
(which builds clips), so the imports between them run one way.
"""

from __future__ import annotations

from pathlib import Path

from perennial.motion.bvh import read_bvh
from perennial.motion.clip import MotionClip, MotionFormatError
from perennial.motion.retarget import retarget

__all__ = ["load_motion"]


def load_motion(
    path: str | Path,
    fps: float | None = None,
    bone_map=None,
    rest=None,
) -> MotionClip:
    """A motion clip from a ``.bvh`` (parsed and retargeted) or a ``.npz`` clip.

    Args:
        path: ``.bvh`` or ``.npz`` file.
        fps: resample to this frame rate; keep the file's rate when None.
        bone_map: for BVH files: a :class:`~perennial.motion.bonemap.BoneMap`, a
            path to a JSON bone map, or None for the built-in CMU map.
        rest: for BVH files: an :class:`~perennial.motion.rest.AnnyRestInfo`
            or an Anny template; cached rest information when None.

    Raises:
        BVHError: malformed BVH. MotionFormatError: malformed .npz.
        RetargetError: the bone map does not fit the BVH skeleton.
        ValueError: another file type.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        return retarget(read_bvh(path), rest, fps=fps, bone_map=bone_map)
    if suffix == ".npz":
        clip = MotionClip.load(path)
        return clip if fps is None else clip.resample(fps)
    raise MotionFormatError(f"{path}: unsupported motion file type {path.suffix!r}; expected .bvh or .npz")
