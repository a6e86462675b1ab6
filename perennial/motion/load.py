"""Reading a motion clip from a file of any kind: BVH or ASF/AMC (retargeted) or a clip ``.npz``.

It sits above :mod:`perennial.motion.clip`, :mod:`perennial.motion.asf` and
:mod:`perennial.motion.retarget` (which builds clips), so the imports between them
run one way.
"""

from __future__ import annotations

from pathlib import Path

from perennial.motion.asf import read_amc
from perennial.motion.bvh import BVH, read_bvh
from perennial.motion.clip import MotionClip, MotionFormatError
from perennial.motion.retarget import retarget

__all__ = ["MOTION_SUFFIXES", "load_motion", "read_skeleton_motion"]

MOTION_SUFFIXES = (".bvh", ".amc", ".npz")
"""File types a motion can be read from."""


def read_skeleton_motion(path: str | Path, asf: str | Path | None = None) -> BVH:
    """A ``.bvh`` file, or an ``.amc`` with its ``.asf`` (found beside it when ``asf`` is
    None), as a :class:`~perennial.motion.bvh.BVH`.

    Raises:
        BVHError, ASFError: malformed file. MotionFormatError: another file type.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        return read_bvh(path)
    if suffix == ".amc":
        return read_amc(path, asf)
    raise MotionFormatError(f"{path}: not a skeleton motion file ({path.suffix!r}); expected .bvh or .amc")


def load_motion(
    path: str | Path,
    fps: float | None = None,
    bone_map=None,
    rest=None,
    asf: str | Path | None = None,
) -> MotionClip:
    """A motion clip from a ``.bvh`` or ``.amc`` (parsed and retargeted) or a ``.npz`` clip.

    Args:
        path: ``.bvh``, ``.amc`` or ``.npz`` file.
        fps: resample to this frame rate; keep the file's rate when None.
        bone_map: for BVH/AMC files: a :class:`~perennial.motion.bonemap.BoneMap`, a
            path to a JSON bone map, ``"cmu"``, or None to recognise the skeleton.
        rest: for BVH/AMC files: an :class:`~perennial.motion.rest.AnnyRestInfo`
            or an Anny template; cached rest information when None.
        asf: for ``.amc`` files: the ``.asf`` skeleton (found beside it when None).

    Raises:
        BVHError, ASFError: malformed file. MotionFormatError: malformed .npz or another
        file type. RetargetError: the bone map does not fit, or the skeleton cannot be
        recognised.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".bvh", ".amc"):
        return retarget(read_skeleton_motion(path, asf), rest, fps=fps, bone_map=bone_map)
    if suffix == ".npz":
        clip = MotionClip.load(path)
        return clip if fps is None else clip.resample(fps)
    raise MotionFormatError(
        f"{path}: unsupported motion file type {path.suffix!r}; expected .bvh, .amc or .npz"
    )
