"""Importing many motion files into a bank of retargeted clips at one frame rate.

:func:`import_bank` reads ``.bvh`` files and ``.amc`` motions with their ``.asf``
skeletons (retargeted onto Anny; without a bone map each file's skeleton is
recognised, :mod:`perennial.motion.skeleton_detect`) and ``.npz`` clips, resamples each
to the bank's rate and writes the bank (:mod:`perennial.motion.bank` has the format).

A file that cannot be imported (malformed BVH, unknown type, a bone map that
does not fit, ...) is skipped and listed with its reason; nothing is skipped
silently. The bank is written beside its destination and moved into place when
complete: an import that is interrupted, fails, or imports nothing leaves the
destination as it was.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perennial.errors import OutputExistsError, PerennialError
from perennial.motion.bank import CLIPS_DIR, INDEX_NAME, clip_file, write_index
from perennial.motion.bonemap import BoneMap, resolve_bone_map
from perennial.motion.clip import MotionClip, MotionFormatError
from perennial.motion.load import MOTION_SUFFIXES, read_skeleton_motion
from perennial.motion.rest import rest_info
from perennial.motion.retarget import retarget
from perennial.motion.skeleton_detect import detect_skeleton
from perennial.progress import progress as progress_bar

__all__ = ["BankEntry", "BankReport", "import_bank"]


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
        skeleton: for BVH/AMC files, the skeleton as recognised (convention, unit,
            axes) or the bone map's name.
    """

    source: str
    status: str
    name: str = ""
    frames_in: int = 0
    frames_out: int = 0
    seconds: float = 0.0
    reason: str = ""
    skeleton: str = ""


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
        skeletons: dict[str, list[str]] = {}
        for e in self.imported:
            if e.skeleton:
                skeletons.setdefault(e.skeleton, []).append(Path(e.source).name)
        for text, names in skeletons.items():
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            lines.append(f"  skeleton of {names[0]}{more}: {text}")
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
    """Files to import: directories are searched recursively for .bvh/.amc/.npz files;
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
    asf: str | Path | None = None,
) -> BankReport:
    """Import many motion files into a bank of retargeted clips.

    Args:
        paths: files and/or directories (searched recursively for ``.bvh``, ``.amc``
            and ``.npz``).
        out: the bank directory (created).
        fps: frame rate of every clip in the bank.
        progress: show progress (files, with the frame rate achieved).
        bone_map: for BVH/AMC files: :class:`BoneMap`, JSON bone-map path, ``"cmu"``, or
            None to recognise each file's skeleton.
        rest: Anny rest information or template (cached default when None).
        floor: floor placement, see :mod:`perennial.motion.retarget`.
        overwrite: replace an existing bank at ``out``.
        asf: the ``.asf`` skeleton of every ``.amc`` file (else each is found beside its
            motion, :func:`~perennial.motion.asf.find_asf`).

    Returns:
        A :class:`BankReport` (also stored in ``bank.json``).

    Raises:
        OutputExistsError: (a FileExistsError) ``out`` already holds a bank and ``overwrite`` is False,
            or is something else.
        PerennialError: no file could be imported (nothing is written).
        RetargetError: the bone map itself is malformed.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = Path(out)
    if (out / INDEX_NAME).exists() and not overwrite:
        raise OutputExistsError(f"{out}: a motion bank exists already (pass --overwrite to replace it)")
    if out.exists() and not (out / INDEX_NAME).exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: exists and is not a motion bank; choose another --out")
    t0 = time.perf_counter()
    bmap = None if bone_map is None or bone_map == "auto" else resolve_bone_map(bone_map)
    rest = rest_info(rest)
    files = _collect(list(paths))
    # written beside the bank and moved into place at the end: an import that fails or is
    # interrupted leaves the old bank (or nothing) as it was
    work = out.parent / f".{out.name}.importing-{uuid.uuid4().hex[:8]}"
    (work / CLIPS_DIR).mkdir(parents=True)
    report = BankReport(out=str(out), fps=float(fps), setup_seconds=time.perf_counter() - t0)
    used: set[str] = set()
    bar = progress_bar(files, desc="importing motion", unit="file", enabled=progress)
    t_files = time.perf_counter()
    try:
        for f in bar:
            t1 = time.perf_counter()
            entry = _import_one(f, work, fps, bmap, rest, floor, used, asf)
            entry.seconds = time.perf_counter() - t1
            report.entries.append(entry)
            report.seconds = time.perf_counter() - t_files
            bar.set_postfix(frames=report.frames_in, rate=f"{report.frames_per_second:.0f} frames/s", refresh=False)
        bar.close()
        report.seconds = time.perf_counter() - t_files
        if not report.imported:
            why = "; ".join(f"{e.source}: {e.reason}" for e in report.skipped[:3]) or "no .bvh, .amc or .npz file found"
            raise PerennialError(f"{out}: nothing imported, no bank written ({why})")
        _write_index(work, report)
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            os.rename(out, old)
        os.rename(work, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    return report


def _import_one(
    f: Path, out: Path, fps: float, bmap: BoneMap | None, rest, floor: str, used: set[str], asf=None
) -> BankEntry:
    src = str(f)
    if not f.exists():
        return BankEntry(src, "skipped", reason="no such file or directory")
    suffix = f.suffix.lower()
    if suffix not in MOTION_SUFFIXES:
        what = " (a skeleton: import its .amc motions)" if suffix == ".asf" else " (expected .bvh, .amc or .npz)"
        return BankEntry(src, "skipped", reason=f"unsupported file type {f.suffix!r}{what}")
    frames_in, skeleton = 0, ""
    try:
        if suffix in (".bvh", ".amc"):
            bvh = read_skeleton_motion(f, asf)
            frames_in = bvh.num_frames
            use = bmap
            if use is None:
                det = detect_skeleton(bvh, rest)
                use, skeleton = det.bone_map, det.summary(reference=False)
            else:
                skeleton = f"bone map {use.name!r}"
            clip = retarget(bvh, rest, fps=fps, bone_map=use, floor=floor)
        else:
            clip = MotionClip.load(f)
            frames_in = clip.num_frames
            if frames_in == 0:
                return BankEntry(src, "skipped", reason="the clip has no frames")
            clip = clip.resample(fps)
        name = _unique(f.stem, used)
        clip.source = src
        clip.save(out / clip_file(name))
    except (
        ValueError,
        OSError,
        MotionFormatError,
    ) as e:  # BVHError and RetargetError are ValueErrors
        return BankEntry(src, "skipped", frames_in=frames_in, reason=str(e))
    except Exception as e:
        return BankEntry(src, "skipped", frames_in=frames_in, reason=f"{type(e).__name__}: {e}")
    return BankEntry(src, "ok", name=name, frames_in=frames_in, frames_out=clip.num_frames, skeleton=skeleton)


def _write_index(out: Path, report: BankReport) -> None:
    write_index(
        out,
        report.fps,
        clips=[(e.name, e.source, e.frames_out) for e in report.imported],
        skipped=[(e.source, e.reason) for e in report.skipped],
        complete=report.complete,
        report=report.to_dict(),
    )
