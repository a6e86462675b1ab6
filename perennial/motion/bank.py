"""Motion banks on disk: retargeted clips at one frame rate, and their index.

A bank is written by :func:`perennial.motion.bank_import.import_bank`; this module
holds its format, opens it (:func:`load_bank`) and exports all its frames
(:func:`save_bank_npz`).

On disk (``perennial-motion-bank``, version 1)::

    <bank>/
      bank.json          index: format, version, fps, clips, skipped files, report
      clips/<name>.npz   one perennial-motion clip per imported file

``bank.json``::

    {"format": "perennial-motion-bank", "version": 1, "fps": 30.0, "complete": true,
     "clips": [{"name": "131_01", "file": "clips/131_01.npz", "source": ".../131_01.bvh",
                "frames": 249, "duration_s": 8.3}],
     "skipped": [{"source": ".../bad.bvh", "reason": "...: line 12: ..."}],
     "report": {...}}

``"complete": false`` marks a bank whose import was interrupted (the index lists
the clips completed so far).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES
from perennial.errors import PerennialError
from perennial.motion.clip import MotionClip, MotionFormatError

__all__ = [
    "BANK_FORMAT",
    "MotionBank",
    "clip_file",
    "load_bank",
    "save_bank_npz",
    "write_index",
]

BANK_FORMAT = "perennial-motion-bank"
BANK_VERSION = 1
INDEX_NAME = "bank.json"
"""The index file inside a bank directory."""
CLIPS_DIR = "clips"
"""The folder of clips inside a bank directory."""


def clip_file(name: str) -> str:
    """Where clip ``name`` lives, relative to the bank directory (``clips/<name>.npz``)."""
    return f"{CLIPS_DIR}/{name}.npz"


def write_index(
    root: Path,
    fps: float,
    clips: list[tuple[str, str, int]],
    skipped: list[tuple[str, str]],
    complete: bool,
    report: dict[str, Any],
) -> Path:
    """Write a bank's ``bank.json`` atomically (temp file + rename).

    Args:
        root: the bank directory (created if needed).
        fps: the bank's frame rate.
        clips: ``(name, source, frames)`` of every clip in ``clips/<name>.npz``.
        skipped: ``(source, reason)`` of every file that was not imported.
        complete: False when the import writing the bank was interrupted.
        report: the import report, stored as is.

    Returns:
        the index path.
    """
    data = {
        "format": BANK_FORMAT,
        "version": BANK_VERSION,
        "fps": fps,
        "complete": complete,
        "clips": [
            {
                "name": name,
                "file": clip_file(name),
                "source": source,
                "frames": frames,
                "duration_s": frames / fps,
            }
            for name, source, frames in clips
        ],
        "skipped": [{"source": source, "reason": reason} for source, reason in skipped],
        "report": report,
    }
    index = Path(root) / INDEX_NAME
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, index)
    return index


@dataclass
class MotionBank:
    """A bank opened from disk (clips are loaded on demand).

    Attributes:
        root: the bank directory.
        fps: frame rate of every clip.
        clips: index entries (``name``, ``file``, ``source``, ``frames``, ``duration_s``).
        complete: False if the import that wrote it was interrupted.
    """

    root: Path
    fps: float
    clips: list[dict[str, Any]]
    complete: bool = True

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.clips]

    @property
    def num_frames(self) -> int:
        return sum(int(c["frames"]) for c in self.clips)

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, name: str) -> MotionClip:
        """One clip by name."""
        for c in self.clips:
            if c["name"] == name:
                return MotionClip.load(self.root / c["file"])
        raise PerennialError(f"{self.root}: no clip {name!r} in the bank")

    def __iter__(self) -> Iterator[MotionClip]:
        for c in self.clips:
            yield MotionClip.load(self.root / c["file"])

    def poses(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All frames concatenated: rotvec (N, J, 3), translation (N, 3), clip id (N,) int64."""
        rv, tr, ids = [], [], []
        for i, clip in enumerate(self):
            rv.append(clip.rotvec)
            tr.append(clip.translation)
            ids.append(torch.full((clip.num_frames,), i, dtype=torch.int64))
        if not rv:
            return (
                torch.zeros(0, len(ANNY_BONES), 3),
                torch.zeros(0, 3),
                torch.zeros(0, dtype=torch.int64),
            )
        return torch.cat(rv), torch.cat(tr), torch.cat(ids)


def load_bank(path: str | Path) -> MotionBank:
    """Open a bank written by :func:`~perennial.motion.bank_import.import_bank`.

    Raises:
        MotionFormatError: missing or malformed ``bank.json`` (names the file and field).
    """
    root = Path(path)
    index = root / INDEX_NAME
    if not index.is_file():
        raise MotionFormatError(f"{index}: no such file (not a motion bank)")
    try:
        data = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise MotionFormatError(f"{index}, line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        raise MotionFormatError(f"{index}: field 'format' must be {BANK_FORMAT!r}")
    if data.get("version") != BANK_VERSION:
        raise MotionFormatError(
            f"{index}: field 'version' {data.get('version')!r} is not supported"
        )
    for key in ("fps", "clips"):
        if key not in data:
            raise MotionFormatError(f"{index}: missing field {key!r}")
    clips = data["clips"]
    if not isinstance(clips, list) or not all(
        isinstance(c, dict) and {"name", "file", "frames"} <= set(c) for c in clips
    ):
        raise MotionFormatError(
            f"{index}: field 'clips' must be a list of {{name, file, frames, ...}}"
        )
    return MotionBank(root, float(data["fps"]), clips, bool(data.get("complete", True)))


def save_bank_npz(bank: MotionBank, path: str | Path) -> Path:
    """Write every frame of a bank to one ``.npz`` (no pickles).

    Keys: ``format`` ("perennial-motion-bank-npz"), ``version`` (1), ``fps``, ``bones`` (J,),
    ``rotvec`` (N, J, 3) float32 local-ref radians, ``translation`` (N, 3) metres,
    ``clip`` (N,) int64 clip id, ``clip_names`` (C,), ``clip_sources`` (C,).
    """
    rv, tr, ids = bank.poses()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp, format=np.array("perennial-motion-bank-npz"), version=np.array(1), fps=np.array(bank.fps),
        bones=np.array(ANNY_BONES), rotvec=rv.numpy(), translation=tr.numpy(), clip=ids.numpy(),
        clip_names=np.array(bank.names), clip_sources=np.array([str(c.get("source", "")) for c in bank.clips]),
    )  # fmt: skip
    os.replace(tmp, path)
    return path
