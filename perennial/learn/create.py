"""``perennial create``: a new avatar from one capture, written as version 1 of an avatar store."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

from perennial.avatar.field.model import FieldAvatar, FieldConfig
from perennial.avatar.field_io import appearance_record, save_field_avatar
from perennial.avatar.maintenance import check_capture_for_avatar, check_capture_images
from perennial.avatar.store import AvatarError, AvatarStore, Version
from perennial.capture.capture import Capture
from perennial.learn.trainer import TrainConfig, train_field


def create_avatar(
    path: str | Path,
    capture: Capture,
    config: TrainConfig | None = None,
    field_config: FieldConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    template=None,
) -> Version:
    """Train a field avatar on ``capture`` and store it at ``path`` (version 1).

    Holds the avatar's writer lock throughout. Checkpoints go to
    ``<path>/checkpoint`` (removed once the version is written); ``resume``
    continues from there after an interruption.

    Raises:
        AvatarError: an avatar with a version already exists at ``path``, or the
            folder is busy or not empty.
    """
    config = config or TrainConfig()
    store = AvatarStore(path)
    if store.exists() and store.current_number() is not None:
        raise AvatarError(f"{store.root}: an avatar exists already (use 'perennial learn' to add an appearance)")
    check_capture_images(capture)  # before anything is written: a bad PNG must not leave a half avatar
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
                if [a.get("name") for a in v.state.get("appearances", [])] != [capture.appearance]:
                    raise AvatarError(f"{v.path / 'state.json'}: the interrupted create was of another appearance "
                                      f"than {capture.appearance!r}")  # fmt: skip
                shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
                store.switch(v.number)
                return store.version()
        else:
            store.initialise(capture.body_info, "field", {"created_from": str(Path(capture.root).resolve())})
        if template is None:
            from perennial.body.anny import load_template

            template = load_template(capture.body_info["template"])
        avatar = FieldAvatar(template, capture.body_info.get("phenotype"), [capture.appearance], field_config)
        t0 = time.perf_counter()
        summary = train_field(avatar, capture, config, store.root / "checkpoint", resume=resume, progress=progress)
        record, replay = appearance_record(capture)
        entry = {"action": "create", "appearance": capture.appearance, "strategy": "single",
                 "train": asdict(config), "seconds": time.perf_counter() - t0}  # fmt: skip
        version = save_field_avatar(store, avatar, [record], {capture.appearance: replay}, entry, {"train": summary},
                                    switch=False)  # fmt: skip
        # the checkpoint goes before `current` moves: a kill in between is finished by --resume (above)
        shutil.rmtree(store.root / "checkpoint", ignore_errors=True)
        store.switch(version.number)
        return store.version(version.number)
