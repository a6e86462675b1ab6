"""``perennial create``: a new avatar from one capture, written as version 1 of an avatar store."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

from perennial.avatar.field_io import appearance_record
from perennial.avatar.maintenance import check_capture_for_avatar
from perennial.avatar.store import AvatarError, AvatarStore, Version
from perennial.capture.capture import Capture
from perennial.learn.engine import train
from perennial.learn.methods import get_method, preset


def create_avatar(
    path: str | Path,
    capture: Capture,
    config: Any = None,
    method: str = "field",
    resume: bool = False,
    progress: bool = True,
    template=None,
) -> Version:
    """Train a new avatar on ``capture`` and store it at ``path`` (version 1).

    Args:
        path: the avatar folder (must not hold an avatar).
        capture: its first appearance.
        config: the training config (default: the method's ``create`` preset).
        method: the avatar method (``perennial.learn.methods.METHODS``).
        resume: continue an interrupted create from its checkpoint.
        progress: show progress.
        template: the body template (loaded from the capture's body when omitted).

    Holds the avatar's writer lock throughout. Checkpoints go to
    ``<path>/checkpoint`` (removed once the version is written). A create that
    fails leaves the folder as it was before (none, if there was none); one that
    is interrupted (Ctrl-C, a kill) keeps its checkpoint for ``resume``.

    Raises:
        AvatarError: an avatar with a version already exists at ``path``, or the
            folder is busy or not empty.
        CaptureError: a training image or mask cannot be decoded (nothing is written).
    """
    m = get_method(method)
    config = config if config is not None else preset(m, "create")
    store = AvatarStore(path)
    if store.exists() and store.current_number() is not None:
        raise AvatarError(f"{store.root}: an avatar exists already (use 'perennial learn' to add an appearance)")
    # every training PNG is decoded (and the capture hashed) before anything is written
    pixels, digest = capture.read_split("train", progress)
    before = set(os.listdir(store.root)) if store.root.is_dir() else None
    with store.lock():
        if store.exists():
            return _resume(store, capture, config, m, pixels, digest, resume, progress, template)
        try:
            store.initialise(capture.body_info, m.name, {"created_from": str(Path(capture.root).resolve())})
            return _train_and_write(store, capture, config, m, pixels, digest, False, progress, template)
        except KeyboardInterrupt:
            raise  # the checkpoint is kept for --resume
        except BaseException:
            _remove_what_was_made(store.root, before)  # a failed create leaves what was there before
            raise


def _resume(store, capture, config, m, pixels, digest, resume, progress, template) -> Version:
    """Continue a create that was interrupted (Ctrl-C or a kill) from its checkpoint."""
    name = capture.appearance
    if store.current_number() is not None:
        raise AvatarError(f"{store.root}: an avatar exists already (use 'perennial learn' to add an appearance)")
    if not resume:
        raise AvatarError(f"{store.root}: an interrupted 'create' left this avatar; pass --resume to continue it")
    check_capture_for_avatar(store, capture)
    store.clean_partial()
    done = store.orphan({"action": "create", "appearance": name})
    if done is not None:  # killed after the version was written, before `current` moved: finish the switch
        shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
        store.switch(done.number)
        return store.version()
    if store.version_numbers():
        raise AvatarError(f"{store.root / 'versions'}: the interrupted create wrote a version of another "
                          f"appearance than {name!r}")  # fmt: skip
    return _train_and_write(store, capture, config, m, pixels, digest, True, progress, template)


def _train_and_write(store, capture, config, m, pixels, digest, resume, progress, template) -> Version:
    name = capture.appearance
    if template is None:
        from perennial.body.anny import load_template

        template = load_template(capture.body_info["template"])
    avatar = m.new(template, capture, config)
    groups, terms = m.prepare(avatar, name, capture, pixels, [], {}, config)
    t0 = time.perf_counter()
    result = train(avatar, groups, terms, config.loss_weights, config.engine, store.root / "checkpoint",
                   tag={"action": "create", "appearance": name}, resume=resume, progress=progress,
                   desc=f"training {name}")  # fmt: skip
    finished = m.finish(avatar, config, progress)
    record, poses = appearance_record(capture, digest)
    entry = {"action": "create", "appearance": name, "strategy": "create", "method": m.name,
             "train": dataclasses.asdict(config), "seconds": time.perf_counter() - t0}  # fmt: skip
    version = m.save(store, avatar, [record], {name: poses}, entry, {"train": result.as_dict(), **finished},
                     switch=False)  # fmt: skip
    # the checkpoint goes before `current` moves: a kill in between is finished by --resume (above)
    shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
    store.switch(version.number)
    return store.version(version.number)


def _remove_what_was_made(root: Path, before: set[str] | None) -> None:
    """Remove the avatar folder if this create made it, else the entries it added."""
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for name in set(os.listdir(root)) - before:
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
