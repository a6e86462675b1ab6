"""Motion banks: many motion files imported into retargeted clips at one frame rate.

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

A file that cannot be imported (malformed BVH, unknown type, a bone map that
does not fit, ...) is skipped and listed with its reason; nothing is skipped
silently. An interrupted import (Ctrl-C) still writes the index of the clips
completed so far, with ``"complete": false``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from perennial.motion.bvh import read_bvh
from perennial.motion.clip import MotionClip, MotionFormatError
from perennial.motion.retarget import BoneMap, _resolve_map, rest_info, retarget

__all__ = ["BANK_FORMAT", "BankEntry", "BankReport", "MotionBank", "import_bank", "load_bank"]

BANK_FORMAT = "perennial-motion-bank"
BANK_VERSION = 1
MOTION_SUFFIXES = (".bvh", ".npz")


@dataclass
class BankEntry:
    """The outcome of importing one file.

    Attributes:
        source: the input file.
        status: ``"ok"`` or ``"skipped"``.
        name: clip name in the bank (``""`` when skipped).
        frames_in: frames read from the file (0 when unreadable).
        frames_out: frames written at the bank's rate.
        seconds: wall time spent on this file.
        reason: why it was skipped (``""`` when imported).
    """

    source: str
    status: str
    name: str = ""
    frames_in: int = 0
    frames_out: int = 0
    seconds: float = 0.0
    reason: str = ""


@dataclass
class BankReport:
    """Per-file report of :func:`import_bank`.

    Attributes:
        out: the bank directory.
        fps: the bank's frame rate.
        entries: one :class:`BankEntry` per input file, in input order.
        setup_seconds: one-time preparation (Anny rest information, bone map).
        seconds: time spent on the files (reading, retargeting, resampling, writing).
        complete: False when the import was interrupted.
    """

    out: str
    fps: float
    entries: list[BankEntry] = field(default_factory=list)
    setup_seconds: float = 0.0
    seconds: float = 0.0
    complete: bool = True

    @property
    def imported(self) -> list[BankEntry]:
        return [e for e in self.entries if e.status == "ok"]

    @property
    def skipped(self) -> list[BankEntry]:
        return [e for e in self.entries if e.status != "ok"]

    @property
    def frames_in(self) -> int:
        """Source frames of the imported files."""
        return sum(e.frames_in for e in self.imported)

    @property
    def frames_out(self) -> int:
        return sum(e.frames_out for e in self.imported)

    @property
    def frames_per_second(self) -> float:
        """Import speed: source frames imported per second of file work (setup excluded)."""
        return self.frames_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "fps": self.fps,
            "complete": self.complete,
            "files": len(self.entries),
            "imported": len(self.imported),
            "skipped": len(self.skipped),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "setup_seconds": self.setup_seconds,
            "seconds": self.seconds,
            "frames_per_second": self.frames_per_second,
            "entries": [asdict(e) for e in self.entries],
        }

    def summary(self) -> str:
        """A human-readable table: one line per file, then totals."""
        lines = []
        for e in self.entries:
            if e.status == "ok":
                lines.append(
                    f"  ok       {e.name:<24} {e.frames_in:>7} -> {e.frames_out:>6} frames  {e.source}"
                )
            else:
                lines.append(f"  skipped  {e.source}: {e.reason}")
        lines.append(
            f"{len(self.imported)} imported, {len(self.skipped)} skipped; {self.frames_in} source frames -> "
            f"{self.frames_out} frames at {self.fps:g} fps in {self.seconds:.2f} s "
            f"({self.frames_per_second:.0f} frames/s; setup {self.setup_seconds:.2f} s)"
            + ("" if self.complete else "; INTERRUPTED")
        )
        return "\n".join(lines)


def _collect(paths: list[str | Path]) -> list[Path]:
    """Files to import: directories are searched recursively for .bvh/.npz files;
    explicitly named files are kept whatever their type (and skipped later if unsupported)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MOTION_SUFFIXES]
            files.extend(sorted(found))
        else:
            files.append(p)
    return files


def _unique(name: str, used: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "clip"
    cand, k = base, 2
    while cand in used:
        cand, k = f"{base}_{k}", k + 1
    used.add(cand)
    return cand


def import_bank(
    paths: list[str | Path] | str | Path,
    out: str | Path,
    fps: float = 30.0,
    progress: bool = True,
    bone_map: BoneMap | str | Path | None = None,
    rest=None,
    floor: str = "contact",
    overwrite: bool = False,
) -> BankReport:
    """Import many motion files into a bank of retargeted clips.

    Args:
        paths: files and/or directories (searched recursively for ``.bvh`` and
            ``.npz``).
        out: the bank directory (created).
        fps: frame rate of every clip in the bank.
        progress: show a tqdm progress bar (files, with the frame rate achieved).
        bone_map: for BVH files: :class:`BoneMap`, JSON bone-map path, or None (CMU).
        rest: Anny rest information or template (cached default when None).
        floor: floor placement, see :func:`perennial.motion.retarget.retarget`.
        overwrite: replace an existing bank at ``out``.

    Returns:
        A :class:`BankReport` (also stored in ``bank.json``).

    Raises:
        FileExistsError: ``out`` already holds a bank and ``overwrite`` is False.
        RetargetError: the bone map itself is malformed.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = Path(out)
    index = out / "bank.json"
    if index.exists() and not overwrite:
        raise FileExistsError(
            f"{out}: a motion bank exists already (pass overwrite=True to replace it)"
        )
    t0 = time.perf_counter()
    bmap = _resolve_map(bone_map)
    rest = rest_info(rest)
    files = _collect(list(paths))
    clips_dir = out / "clips"
    if overwrite and clips_dir.exists():
        shutil.rmtree(clips_dir)
    clips_dir.mkdir(parents=True, exist_ok=True)
    report = BankReport(out=str(out), fps=float(fps), setup_seconds=time.perf_counter() - t0)
    used: set[str] = set()
    bar = tqdm(files, desc="importing motion", unit="file", disable=not progress)
    t_files = time.perf_counter()
    try:
        for f in bar:
            t1 = time.perf_counter()
            entry = _import_one(f, clips_dir, fps, bmap, rest, floor, used)
            entry.seconds = time.perf_counter() - t1
            report.entries.append(entry)
            report.seconds = time.perf_counter() - t_files
            bar.set_postfix(
                frames=report.frames_in,
                rate=f"{report.frames_per_second:.0f} frames/s",
                refresh=False,
            )
    except KeyboardInterrupt:
        report.complete = False
        raise
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t_files
        _write_index(index, report)
    return report


def _import_one(
    f: Path, clips_dir: Path, fps: float, bmap: BoneMap, rest, floor: str, used: set[str]
) -> BankEntry:
    src = str(f)
    if not f.exists():
        return BankEntry(src, "skipped", reason="no such file or directory")
    suffix = f.suffix.lower()
    if suffix not in MOTION_SUFFIXES:
        return BankEntry(
            src, "skipped", reason=f"unsupported file type {f.suffix!r} (expected .bvh or .npz)"
        )
    frames_in = 0
    try:
        if suffix == ".bvh":
            bvh = read_bvh(f)
            frames_in = bvh.num_frames
            if frames_in == 0:
                return BankEntry(src, "skipped", reason="the file has no frames")
            clip = retarget(bvh, rest, fps=fps, bone_map=bmap, floor=floor)
        else:
            clip = MotionClip.load(f)
            frames_in = clip.num_frames
            if frames_in == 0:
                return BankEntry(src, "skipped", reason="the clip has no frames")
            clip = clip.resample(fps)
        name = _unique(f.stem, used)
        clip.source = src
        clip.save(clips_dir / f"{name}.npz")
    except (
        ValueError,
        OSError,
        MotionFormatError,
    ) as e:  # BVHError and RetargetError are ValueErrors
        return BankEntry(src, "skipped", frames_in=frames_in, reason=str(e))
    except Exception as e:  # noqa: BLE001 - a bank import reports every failure and goes on
        return BankEntry(src, "skipped", frames_in=frames_in, reason=f"{type(e).__name__}: {e}")
    return BankEntry(src, "ok", name=name, frames_in=frames_in, frames_out=clip.num_frames)


def _write_index(index: Path, report: BankReport) -> None:
    data = {
        "format": BANK_FORMAT,
        "version": BANK_VERSION,
        "fps": report.fps,
        "complete": report.complete,
        "clips": [
            {
                "name": e.name,
                "file": f"clips/{e.name}.npz",
                "source": e.source,
                "frames": e.frames_out,
                "duration_s": e.frames_out / report.fps,
            }
            for e in report.imported
        ],
        "skipped": [{"source": e.source, "reason": e.reason} for e in report.skipped],
        "report": report.to_dict(),
    }
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, index)


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
        raise KeyError(f"{self.root}: no clip {name!r} in the bank")

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
            from perennial.body.rig import ANNY_BONES

            return (
                torch.zeros(0, len(ANNY_BONES), 3),
                torch.zeros(0, 3),
                torch.zeros(0, dtype=torch.int64),
            )
        return torch.cat(rv), torch.cat(tr), torch.cat(ids)


def load_bank(path: str | Path) -> MotionBank:
    """Open a bank written by :func:`import_bank`.

    Raises:
        MotionFormatError: missing or malformed ``bank.json`` (names the file and field).
    """
    root = Path(path)
    index = root / "bank.json"
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
    import numpy as np

    from perennial.body.rig import ANNY_BONES

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
