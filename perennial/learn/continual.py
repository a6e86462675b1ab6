"""``perennial learn``: add an appearance to an avatar without forgetting the others.

The strategy is a preset of the avatar's method (for field avatars see
:mod:`perennial.learn.field_method`: ``replay``, ``finetune``, ``joint``,
``shared-local``); every strategy writes a new avatar version and runs in the
one training engine.
"""

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
from perennial.naming import check_name


def learn_appearance(
    path: str | Path,
    capture: Capture,
    strategy: str = "fast",
    config: Any = None,
    name: str | None = None,
    progress: bool = True,
    template=None,
    resume: bool = False,
) -> Version:
    """Add ``capture``'s appearance (as ``name``) to the avatar at ``path``; returns the new version.

    Args:
        path: the avatar folder.
        capture: the new appearance's capture (as few as 5 training images).
        strategy: a preset of the avatar's method (the name is recorded in the history).
        config: the training config (default: the strategy's preset).
        name: the appearance's name (default: the capture's).
        progress: show progress.
        template: the body template (loaded from the avatar's body when omitted).
        resume: continue an interrupted learn of the same appearance and strategy.

    Checkpoints go to ``<path>/checkpoint`` every ``config.engine.checkpoint_every``
    steps and are removed once the version is written; the teacher of a resumed
    learn is the current version, which an unfinished learn never changes. A
    resumed learn that finds the version it was writing complete (killed before
    the switch) makes it current instead of training again.
    """
    store = AvatarStore(path)
    m = get_method(store.meta()["method"])  # a clear error for a missing or unknown avatar first
    config = config if config is not None else preset(m, strategy)
    pixels, digest = capture.read_split("train", progress)  # a corrupt PNG fails now, not half-way
    with store.lock():
        store.clean_partial()  # leftovers of an update that was killed
        check_capture_for_avatar(store, capture)
        name = check_name(name or capture.appearance, where="--name" if name else str(capture.root / "capture.json"))
        done = store.orphan({"action": "learn", "appearance": name, "strategy": strategy}) if resume else None
        if done is not None:  # killed after the version was written, before `current` moved: finish the switch
            shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
            store.switch(done.number)
            return store.version(done.number)
        avatar, version, poses = m.load(store, template=template)
        records = version.state["appearances"]
        if name in {r["name"] for r in records}:
            raise AvatarError(f"{store.root}: appearance {name!r} exists already (choose another --name)")
        groups, terms = m.prepare(avatar, name, capture, pixels, records, poses, config)
        ckpt = store.root / "checkpoint"
        if ckpt.exists() and not resume:
            shutil.rmtree(ckpt)  # an abandoned update's checkpoint; this is a fresh start
        t0 = time.perf_counter()
        tag = {"action": "learn", "appearance": name, "strategy": strategy}
        result = train(avatar, groups, terms, config.loss_weights, config.engine, ckpt, tag=tag, resume=resume,
                       progress=progress, desc=f"learning {name} ({strategy})")  # fmt: skip
        record, new_poses = appearance_record(capture, digest, name)
        entry = {"action": "learn", "appearance": name, "strategy": strategy, "method": m.name,
                 "train": dataclasses.asdict(config), "seconds": time.perf_counter() - t0}  # fmt: skip
        v = m.save(store, avatar, [*records, record], {**poses, name: new_poses}, entry,
                   {"train": result.as_dict()}, switch=False)  # fmt: skip
        shutil.rmtree(ckpt, ignore_errors=True)
        store.switch(v.number)
        return store.version(v.number)
