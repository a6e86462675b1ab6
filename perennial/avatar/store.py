"""The avatar on disk: immutable versions, one atomic ``current`` switch, one writer.

Layout::

    <avatar>/
      avatar.json                  identity: schema, body template + phenotype, method
      versions/<n>/weights.safetensors, state.json, metrics.json
      current -> versions/<n>      symlink, replaced atomically
      switches                     every version ever made current, one number a line
      lock                         flock'ed by the one writer (released by the OS if it dies)

``avatar.json`` never changes after creation; everything that changes with an
update (appearances, history entry, checksums) lives in the version's
``state.json``. A version directory is written under a temporary name, fsync'ed,
renamed into place, and only then does ``current`` move, so an update that dies
at any moment leaves the previous version current and loadable. Weights are
safetensors (no pickle: opening an avatar runs no code), checked against the
SHA-256 recorded in ``state.json`` (a missing checksum is an error) and against
the shapes and dtypes the caller expects. The JSON files are checked field by
field (:mod:`perennial.avatar.schema`), and nothing under the avatar folder is
followed outside it (a ``versions/<n>`` that is a link to elsewhere is refused).

A version written but never made current (the writer was killed in between) is an
*orphan*: ``--resume`` adopts it (:meth:`AvatarStore.orphan`), ``prune`` removes it;
``switches`` tells it from a version a rollback left behind (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from perennial.avatar.schema import STATE_SCHEMA, AvatarError, check_meta, check_state
from perennial.util import sha256_file

SCHEMA = "perennial-avatar"
SCHEMA_VERSION = 1


class AvatarBusy(AvatarError):
    """Another process is writing this avatar."""


class AvatarWriteError(AvatarError, OSError):
    """Writing failed (disk full, read-only, ...); nothing visible in the avatar changed."""


def _write_failed(what: Path, e: OSError) -> AvatarWriteError:
    err = AvatarWriteError(f"{what}: cannot write ({e.strerror or e}); the avatar is unchanged")
    err.errno = e.errno
    return err


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise AvatarError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AvatarError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise AvatarError(f"{path}: expected a JSON object")
    return doc


@dataclass
class Version:
    """One complete version of an avatar.

    Attributes:
        number: version number n (``versions/<n>``).
        path: its directory.
        state: the parsed ``state.json`` (appearances, history entry, checksums).
        metrics: the parsed ``metrics.json``.
    """

    number: int
    path: Path
    state: dict
    metrics: dict


class AvatarStore:
    """An avatar folder.

    Args:
        root: the avatar folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ identity
    @property
    def meta_path(self) -> Path:
        return self.root / "avatar.json"

    def exists(self) -> bool:
        return self.meta_path.exists()

    def meta(self) -> dict:
        """The parsed, checked ``avatar.json``."""
        if not self.root.is_dir():
            raise AvatarError(f"{self.root}: no such avatar folder")
        doc = _read_json(self.meta_path)
        if doc.get("schema") != SCHEMA:
            raise AvatarError(f"{self.meta_path}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
        if doc.get("version") != SCHEMA_VERSION:
            raise AvatarError(
                f"{self.meta_path}: version {doc.get('version')!r} is not supported "
                f"(this perennial reads version {SCHEMA_VERSION})"
            )
        return check_meta(doc, self.meta_path)

    def initialise(self, body: dict, method: str, extra: dict | None = None) -> None:
        """Create the folder and its ``avatar.json`` (refuses an existing avatar)."""
        if self.exists():
            raise AvatarError(f"{self.root}: an avatar already exists here")
        if self.root.exists():
            # what an initialise killed half-way leaves: the lock, an empty versions/, a temporary avatar.json
            for p in self.root.glob(".avatar.json.*"):
                p.unlink()
            left = [p.name for p in self.root.iterdir() if p.name not in ("lock", "switches")]
            if left and not (left == ["versions"] and not any((self.root / "versions").iterdir())):
                raise AvatarError(f"{self.root}: folder exists and is not empty")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "versions").mkdir(exist_ok=True)
        doc = {"schema": SCHEMA, "version": SCHEMA_VERSION, "body": body, "method": method,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}  # fmt: skip
        tmp = self.root / f".avatar.json.{uuid.uuid4().hex[:8]}"
        try:
            _write_file(self.root / "switches", b"")  # no version has been current yet
            _write_file(tmp, (json.dumps(doc, indent=1) + "\n").encode())
            os.replace(tmp, self.meta_path)
            _fsync_dir(self.root)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_failed(self.meta_path, e) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ writer lock
    @contextlib.contextmanager
    def lock(self):
        """Exclusive writer lock; a second writer fails at once with :class:`AvatarBusy`.

        The lock is an ``flock`` on ``<avatar>/lock``: the kernel drops it when the
        holder exits or is killed, so a crash never leaves the avatar locked.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                raise AvatarBusy(f"{self.root}: busy, being updated by {holder}; try again when it ends") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ versions
    def _inside(self, path: Path) -> Path:
        """``path`` itself, after checking that it resolves inside the avatar folder."""
        real, root = os.path.realpath(path), os.path.realpath(self.root)
        if real != root and not real.startswith(root + os.sep):
            raise AvatarError(f"{path}: leads outside the avatar folder (to {real}); refused")
        return path

    def version_numbers(self) -> list[int]:
        vdir = self.root / "versions"
        if not vdir.is_dir():
            return []
        self._inside(vdir)
        return sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit() and (p.is_dir() or p.is_symlink()))

    def current_number(self) -> int | None:
        """The current version number, or None for an avatar with no version yet."""
        link = self.root / "current"
        if not link.is_symlink():
            if link.exists():
                raise AvatarError(f"{link}: expected a symlink to versions/<n>")
            return None
        target = os.readlink(link)
        name = Path(target).name
        if Path(target).parent.name != "versions" or not name.isdigit():
            raise AvatarError(f"{link}: points to {target!r}, expected versions/<n>")
        if not (self.root / "versions" / name).is_dir():
            raise AvatarError(f"{link}: points to {target!r}, which does not exist")
        return int(name)

    def version(self, number: int | None = None) -> Version:
        """A version (the current one by default), with its JSON files parsed."""
        self.meta()
        n = self.current_number() if number is None else number
        if n is None:
            raise AvatarError(f"{self.root}: the avatar has no complete version yet")
        path = self.root / "versions" / str(n)
        if path.is_symlink():
            raise AvatarError(f"{path}: is a link; a version is always a folder of its own (refused)")
        if not path.is_dir():
            raise AvatarError(f"{path}: no such version (have {self.version_numbers()})")
        self._inside(path)
        files = {name: self._inside(path / name) for name in ("state.json", "metrics.json")}
        return Version(n, path, check_state(_read_json(files["state.json"]), files["state.json"]),
                       _read_json(files["metrics.json"]))  # fmt: skip

    def write_version(self, tensors: dict[str, Tensor], state: dict, metrics: dict, switch: bool = True) -> Version:
        """Write a complete new version and (by default) make it current.

        Call inside :meth:`lock`. The version directory is written under a
        temporary name and renamed, then ``current`` is replaced atomically.
        """
        vdir = self.root / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        n = max(self.version_numbers(), default=0) + 1
        tmp = vdir / f".tmp-{n}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            from safetensors.torch import save

            # clone: safetensors refuses tensors that share memory (shared tri-planes do)
            blob = save({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()})
            _write_file(tmp / "weights.safetensors", blob)
            state = {**state, "schema": STATE_SCHEMA, "weights_sha256": hashlib.sha256(blob).hexdigest(),
                     "version": n, "parent": self.current_number(),
                     "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
            _write_file(tmp / "state.json", (json.dumps(state, indent=1) + "\n").encode())
            _write_file(tmp / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
            _fsync_dir(tmp)
            os.rename(tmp, vdir / str(n))
            _fsync_dir(vdir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_failed(vdir / str(n), e) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if switch:
            self.switch(n)
        return self.version(n)

    def been_current(self) -> set[int]:
        """Every version that was ever made current (all of them for an avatar older than the
        ``switches`` file: nothing is taken for an orphan that might not be one)."""
        path = self.root / "switches"
        if not path.exists():
            return set(self.version_numbers())
        return {int(w) for w in self._inside(path).read_text().split() if w.isdigit()}

    def orphan(self, entry: dict) -> Version | None:
        """The version a killed update wrote but did not make current, if it matches ``entry``.

        It is the newest version, newer than the current one, written on top of the
        current one (its ``parent``), and its history entry has the ``entry``'s items
        (action, appearance, strategy). (A version that a rollback left behind can
        match too: adopting it gives exactly what was asked for.)
        """
        nums, cur = self.version_numbers(), self.current_number()
        if not nums or (cur is not None and nums[-1] <= cur):
            return None
        v = self.version(nums[-1])
        made = v.state.get("history_entry", {})
        if v.state.get("parent") != cur or any(made.get(k) != val for k, val in entry.items()):
            return None
        return v

    def switch(self, number: int) -> None:
        """Make version ``number`` current (atomic symlink replacement).

        The number is first appended to ``switches`` (fsync'ed), so a version that
        was ever current is never taken for an orphan.
        """
        if not (self.root / "versions" / str(number)).is_dir():
            raise AvatarError(f"{self.root}: no version {number} (have {self.version_numbers()})")
        tmp = self.root / f".current-{uuid.uuid4().hex[:8]}"
        log = self.root / "switches"
        try:
            seen = sorted(self.been_current() | {number})  # the first switch records the older versions too
            with open(log, "a") as fh:
                fh.write("".join(f"{n}\n" for n in seen) if fh.tell() == 0 else f"{number}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.symlink(f"versions/{number}", tmp)
            os.replace(tmp, self.root / "current")
            _fsync_dir(self.root)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_failed(self.root / "current", e) from None

    def clean_partial(self) -> list[Path]:
        """Remove leftovers of interrupted writes (call inside :meth:`lock`).

        Temporary version dirs (also half-deleted ones of an interrupted prune),
        ``current`` links and ``avatar.json`` files, and temporary checkpoints; a
        checkpoint that was being replaced when the writer died is restored.
        """
        removed = []
        ckpt, olds = self.root / "checkpoint", sorted(self.root.glob(".checkpoint.old-*"), key=os.path.getmtime)
        if olds and not ckpt.exists():
            os.rename(olds.pop(), ckpt)  # died between the two renames of save_checkpoint
        for p in (list((self.root / "versions").glob(".tmp-*")) + list(self.root.glob(".current-*"))
                  + list(self.root.glob(".avatar.json.*")) + list(self.root.glob(".checkpoint.tmp-*")) + olds):  # fmt: skip
            if p.is_symlink() or p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        return removed

    def prune(self, keep: int) -> tuple[list[int], list[int]]:
        """Delete the versions that never became current, then all but the newest ``keep`` of the
        others; the current one is always kept.

        Returns:
            (old versions deleted, orphans deleted).
        """
        if keep < 1:
            raise AvatarError(f"{self.root}: --keep must be at least 1")
        nums, cur, seen = self.version_numbers(), self.current_number(), self.been_current()
        orphans = [n for n in nums if n != cur and n not in seen]
        kept = [n for n in nums if n not in orphans]
        doomed = [n for n in kept[:-keep] if n != cur]
        for n in orphans + doomed:
            # renamed first (atomic), so that a prune killed half-way never leaves a half version
            gone = self.root / "versions" / f".tmp-del-{n}-{uuid.uuid4().hex[:8]}"
            os.rename(self.root / "versions" / str(n), gone)
            if gone.is_symlink():  # a link planted in versions/: removed, never followed
                gone.unlink()
            else:
                shutil.rmtree(gone)
        return doomed, orphans

    # ------------------------------------------------------------------ weights
    def verify_weights(self, version: Version) -> Path:
        """The version's weights file, after checking it against its SHA-256 in ``state.json``.

        Raises:
            AvatarError: the file is missing, outside the avatar, truncated or edited.
        """
        path = self._inside(version.path / "weights.safetensors")
        if not path.is_file():
            raise AvatarError(f"{path}: missing")
        if sha256_file(path) != version.state["weights_sha256"]:
            raise AvatarError(f"{path}: checksum differs from state.json (the file was truncated or edited)")
        return path

    def load_weights(self, version: Version, expected: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None) -> dict[str, Tensor]:
        """Load a version's tensors, strictly.

        Args:
            version: which version.
            expected: optional name -> (shape, dtype); every name must be present
                with that shape and dtype, and no other name may be.

        Raises:
            AvatarError: missing, truncated or edited file (checksum), or a tensor
                whose name, shape or dtype differs from ``expected``.
        """
        path = self.verify_weights(version)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise AvatarError(f"{path}: not a readable safetensors file ({e})") from None
        if expected is not None:
            missing = sorted(set(expected) - set(tensors))
            extra = sorted(set(tensors) - set(expected))
            if missing or extra:
                raise AvatarError(f"{path}: tensor names differ (missing {missing[:5]}, unexpected {extra[:5]})")
            for name, (shape, dtype) in expected.items():
                t = tensors[name]
                if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                    raise AvatarError(
                        f"{path}: tensor {name!r} is {tuple(t.shape)} {t.dtype}, expected {tuple(shape)} {dtype}"
                    )
        return tensors
