"""The motions a viewer offers: built-ins, the avatar's own training poses, a clip or a bank, uploads.

Every motion is a :class:`~perennial.motion.clip.MotionClip` at the viewer's frame rate,
placed where the avatar stands: built-in motions are offsets added to the standing
root position of the avatar's training poses; a clip from a file is shifted
horizontally so that its first root position is there (its height is kept: the
retargeting put its feet on the floor, z = 0).

An uploaded BVH is refused above the size limit, must be UTF-8 text, and is parsed by
the strict reader (:func:`perennial.motion.bvh.parse_bvh`) and retargeted like
``perennial motion import`` does; every failure is an :class:`UploadError` or another
:class:`~perennial.errors.PerennialError` whose message the page shows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perennial.body.rig import ANNY_BONES
from perennial.errors import PerennialError
from perennial.motion.clip import MotionClip, MotionFormatError

__all__ = ["BUILTINS", "REST", "TRAINING", "MotionLibrary", "UploadError", "parse_uploaded_bvh", "safe_name"]

REST = "rest (no motion)"
TRAINING = "training poses"
BUILTINS: dict[str, float] = {"walk": 2.0, "wave": 2.0, "squat": 1.0, "turn": 1.0}
"""Built-in motion -> cycles in its 2-second loop."""
BUILTIN_SECONDS = 2.0
BANK_NPZ_FORMAT = "perennial-motion-bank-npz"


class UploadError(PerennialError):
    """An uploaded motion file that is refused (too large, not text, not a BVH)."""


def safe_name(name: str) -> str:
    """A browser-given file name fit to show: its last path part, letters, digits and ``._-`` kept,
    other characters as ``_``, at most 64 characters."""
    base = Path(str(name).replace("\\", "/")).name
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in base)[:64] or "upload"


def standing_root(poses: dict[str, dict[str, Tensor]]) -> Tensor:
    """(3,) world metres: the median root position of the first appearance's training poses
    (the origin at Anny's standing height, 0.87 m, when the avatar keeps none)."""
    for p in poses.values():
        tr = p.get("translation")
        if tr is not None and tr.ndim == 2 and tr.shape[0] > 0:
            return tr.float().median(dim=0).values.clone()
    return torch.tensor([0.0, 0.0, 0.87])


def placed(clip: MotionClip, base: Tensor) -> MotionClip:
    """``clip`` moved horizontally so that its first root position is above ``base`` (x, y)."""
    shift = torch.zeros(3)
    shift[:2] = base[:2] - clip.translation[0, :2]
    return MotionClip(clip.rotvec, clip.translation + shift, clip.fps, clip.source, clip.bones)


def parse_uploaded_bvh(name: str, content: bytes, max_bytes: int, fps: float) -> MotionClip:
    """An uploaded BVH file as a clip at ``fps``, parsed strictly and retargeted to Anny.

    Args:
        name: the file name the browser gave (used in messages only; nothing is written).
        content: the file's bytes.
        max_bytes: refuse larger files.
        fps: frame rate of the result, frames/s.

    Raises:
        UploadError: too large, empty, not a ``.bvh`` name, or not UTF-8 text.
        BVHError, RetargetError: malformed BVH or a skeleton that cannot be retargeted.
    """
    shown = safe_name(name)
    if len(content) > max_bytes:
        raise UploadError(f"{shown}: {len(content):,} bytes is over the limit of {max_bytes:,} bytes "
                          f"({max_bytes / 2**20:.3g} MB)")  # fmt: skip
    if not content:
        raise UploadError(f"{shown}: the file is empty")
    if not shown.lower().endswith(".bvh"):
        raise UploadError(f"{shown}: only .bvh files can be uploaded")
    try:
        text = content.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise UploadError(f"{shown}: not a text file ({e.reason} at byte {e.start})") from None
    from perennial.motion.bvh import parse_bvh
    from perennial.motion.retarget import retarget

    clip = retarget(parse_bvh(text, shown), fps=fps)
    return MotionClip(clip.rotvec, clip.translation, clip.fps, f"upload {shown}", clip.bones)


def _bank_npz(path: Path) -> dict[str, Callable[[], MotionClip]] | None:
    """The clips of a bank written as one ``.npz`` (``motion import --out bank.npz``), or None
    when ``path`` is an ordinary clip file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != BANK_NPZ_FORMAT:
                return None
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise MotionFormatError(f"{path}: not a readable .npz file ({e})") from None
    for key in ("fps", "bones", "rotvec", "translation", "clip", "clip_names"):
        if key not in data:
            raise MotionFormatError(f"{path}: missing field {key!r}")
    if tuple(str(b) for b in data["bones"]) != ANNY_BONES:
        raise MotionFormatError(f"{path}: field 'bones' does not match the anny rig")
    rv, tr, ids, names = data["rotvec"], data["translation"], data["clip"], data["clip_names"]
    if rv.ndim != 3 or tr.shape != (rv.shape[0], 3) or ids.shape != (rv.shape[0],):
        raise MotionFormatError(f"{path}: fields 'rotvec', 'translation', 'clip' disagree in shape")
    fps = float(data["fps"])
    out: dict[str, Callable[[], MotionClip]] = {}
    for i, clip_name in enumerate(names):
        rows = np.nonzero(ids == i)[0]
        if len(rows):
            out[str(clip_name)] = lambda rows=rows, n=str(clip_name): MotionClip(
                torch.from_numpy(rv[rows].astype(np.float32)), torch.from_numpy(tr[rows].astype(np.float32)),
                fps, f"{path}:{n}")  # fmt: skip
    if not out:
        raise MotionFormatError(f"{path}: the bank holds no clips")
    return out


class MotionLibrary:
    """The named motions of a viewer, loaded on first use and kept (thread-safe).

    Args:
        base: (3,) standing root position, world metres (:func:`standing_root`).
        fps: frame rate of every motion, frames/s.
        training: the avatar's training poses of one appearance (``rotvec`` (F, J, 3),
            ``translation`` (F, 3)), offered as a motion when given.
        motion: a ``.bvh`` / ``.amc`` / ``.npz`` clip, a bank folder (``bank.json``) or a
            bank ``.npz``; its clips come first in :attr:`names`.

    Raises:
        PerennialError: ``motion`` cannot be read (a bank's clips are read when chosen).
    """

    def __init__(self, base: Tensor, fps: float, training: dict[str, Tensor] | None = None,
                 motion: str | Path | None = None) -> None:  # fmt: skip
        self.base = base.float()
        self.fps = float(fps)
        self._lock = threading.Lock()
        self._clips: dict[str, MotionClip] = {}
        self._loaders: dict[str, Callable[[], MotionClip]] = {}
        if motion is not None:
            self._add_file(Path(motion))
        for name, cycles in BUILTINS.items():
            self._loaders[name] = lambda n=name, c=cycles: self._builtin(n, c)
        if training is not None and training["rotvec"].shape[0] > 0:
            self._loaders[TRAINING] = lambda: MotionClip(training["rotvec"], training["translation"], self.fps,
                                                         "the avatar's training poses")  # fmt: skip
        self._loaders[REST] = lambda: self._builtin(REST, 0.0)

    @property
    def names(self) -> list[str]:
        """Motion names in the order the page lists them."""
        return list(self._loaders)

    def get(self, name: str) -> MotionClip:
        """The motion ``name`` (loaded on first use).

        Raises:
            PerennialError: unknown name, or a bank clip that cannot be read.
        """
        with self._lock:
            if name not in self._clips:
                if name not in self._loaders:
                    raise PerennialError(f"no motion {name!r}")
                clip = self._loaders[name]()
                if abs(clip.fps - self.fps) > 1e-9:
                    clip = clip.resample(self.fps)
                self._clips[name] = clip
            return self._clips[name]

    def _builtin(self, name: str, cycles: float) -> MotionClip:
        from perennial.motion.procedural import procedural_motion

        frames = max(1, round(BUILTIN_SECONDS * self.fps))
        if name == REST:
            rv, off = torch.zeros(1, len(ANNY_BONES), 3), torch.zeros(1, 3)
        else:
            rv, off = procedural_motion(name, frames, cycles=cycles)
        return MotionClip(rv, off + self.base, self.fps, f"built-in {name}")

    def _add_file(self, path: Path) -> None:
        if path.is_dir():
            from perennial.motion.bank import load_bank

            bank = load_bank(path)
            if not bank.names:
                raise MotionFormatError(f"{path}: the bank holds no clips")
            for n in bank.names:
                self._loaders[n] = lambda n=n: placed(bank.load(n), self.base)
            return
        if not path.is_file():
            raise MotionFormatError(f"{path}: no such file or folder")
        if path.suffix.lower() == ".npz":
            clips = _bank_npz(path)
            if clips is not None:
                for n, load in clips.items():
                    self._loaders[n] = lambda load=load: placed(load(), self.base)
                return
        from perennial.motion.load import load_motion

        clip = placed(load_motion(path, fps=self.fps), self.base)
        self._clips[path.name] = clip
        self._loaders[path.name] = lambda: clip
