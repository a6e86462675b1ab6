"""``perennial create``: a new avatar from one capture, written as version 1 of an avatar store."""

from __future__ import annotations

import dataclasses
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
    ``<path>/checkpoint`` (removed once the version is written).

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
    name = capture.appearance
    with store.lock():
        if store.exists():
            if store.current_number() is not None:
                raise AvatarError(f"{store.root}: an avatar exists already (use 'perennial learn' to add an appearance)")
            if not resume:
                raise AvatarError(f"{store.root}: an interrupted 'create' left this avatar; pass --resume to continue it")
            check_capture_for_avatar(store, capture)
            store.clean_partial()
            done = store.version_numbers()
            if done:  # killed after the version was written, before `current` moved: finish the switch
                v = store.version(done[-1])
                if [a.get("name") for a in v.state.get("appearances", [])] != [name]:
                    raise AvatarError(f"{v.path / 'state.json'}: the interrupted create was of another appearance "
                                      f"than {name!r}")  # fmt: skip
                shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
                store.switch(v.number)
                return store.version()
        else:
            store.initialise(capture.body_info, m.name, {"created_from": str(Path(capture.root).resolve())})
        if template is None:
            from perennial.body.anny import load_template

            template = load_template(capture.body_info["template"])
        avatar = m.new(template, capture, config)
        groups, terms = m.prepare(avatar, name, capture, pixels, [], {}, config)
        t0 = time.perf_counter()
        result = train(avatar, groups, terms, config.loss_weights, config.engine, store.root / "checkpoint",
                       tag={"action": "create", "appearance": name}, resume=resume, progress=progress,
                       desc=f"training {name}")  # fmt: skip
        record, poses = appearance_record(capture, digest)
        entry = {"action": "create", "appearance": name, "strategy": "create", "method": m.name,
                 "train": dataclasses.asdict(config), "seconds": time.perf_counter() - t0}  # fmt: skip
        version = m.save(store, avatar, [record], {name: poses}, entry, {"train": result.as_dict()}, switch=False)
        # the checkpoint goes before `current` moves: a kill in between is finished by --resume (above)
        shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
        store.switch(version.number)
        return store.version(version.number)
