"""Saving and loading field avatars in the avatar store (safetensors + JSON, no pickle).

A version's tensors are the avatar's ``state_dict()`` plus, per appearance, the
poses replay needs (``replay.<name>.rotvec`` (F, J, 3), ``replay.<name>.translation``
(F, 3)). Its ``state.json`` holds the configs as plain data, and per appearance
its capture (path + content hash) and the training cameras, so that a past
appearance can be re-rendered without any of its images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from perennial.avatar.field.model import FieldAvatar, FieldConfig
from perennial.avatar.field.render import RenderConfig
from perennial.avatar.store import AvatarError, AvatarStore, Version
from perennial.capture.capture import Capture
from perennial.render.camera import Camera

METHOD = "field"


def appearance_record(capture: Capture, sha256: str, name: str | None = None) -> tuple[dict, dict[str, Tensor]]:
    """What an appearance keeps of its capture: provenance, cameras, training poses.

    Args:
        capture: the capture it was learned from.
        sha256: the capture's content hash (:meth:`Capture.read_split` computes it
            while decoding the training views).
        name: the appearance's name (default: the capture's).

    Returns:
        (JSON-able record, tensors ``{"rotvec": (F, J, 3), "translation": (F, 3)}`` and, when the
        capture has them, ``"facial_actions": (F, 52)``).
    """
    train = capture.views_of("train")
    frames = sorted({v.frame for v in train})
    cams = sorted({v.camera for v in train})
    rows = [capture.frame_row(f) for f in frames]
    record = {
        "name": name or capture.appearance,
        "capture": {"path": str(Path(capture.root).resolve()), "sha256": sha256},
        "cameras": {c: capture.cameras[c].to_dict() for c in cams},
        "frames": frames,
        "train_views": len(train),
    }
    poses = {"rotvec": capture.body.rotvec[rows], "translation": capture.body.translation[rows]}
    if capture.body.facial_actions is not None:
        poses["facial_actions"] = capture.body.facial_actions[rows]
    return record, poses


def replay_cameras(record: dict) -> dict[str, Camera]:
    """Cameras of an appearance record."""
    return {n: Camera(c["K"], c["R"], c["t"], c["width"], c["height"]) for n, c in record["cameras"].items()}


def save_field_avatar(
    store: AvatarStore,
    avatar: FieldAvatar,
    appearances: list[dict],
    replay: dict[str, dict[str, Tensor]],
    history_entry: dict,
    metrics: dict,
    switch: bool = True,
) -> Version:
    """Write the avatar as a new version and make it current unless ``switch`` is False (call inside ``store.lock()``)."""
    field = avatar.field
    owners: dict[int, str] = {}
    appearances = [dict(a) for a in appearances]
    for a in appearances:  # a tri-plane read by several appearances (shared-local) is stored once per reader
        a["key"] = field.keys[a["name"]]
        owner = owners.setdefault(id(field.appearance(a["name"]).triplane), a["name"])
        a.pop("triplane_of", None)
        if owner != a["name"]:
            a["triplane_of"] = owner
    tensors = dict(avatar.state_dict())
    for name, t in replay.items():
        for k in ("rotvec", "translation"):  # the field models the body only: no facial actions
            tensors[f"replay.{field.keys[name]}.{k}"] = t[k].float()
    state = {
        **({"prior": avatar.prior_info or {}} if field.prior is not None else {}),
        "method": METHOD,
        "field_config": dataclasses.asdict(avatar.config),
        "render_config": dataclasses.asdict(avatar.render_config),
        "phenotype": avatar.deformer.phenotype,
        "appearances": appearances,
        "history_entry": history_entry,
    }
    return store.write_version(tensors, state, metrics, switch=switch)


def load_field_avatar(
    store: AvatarStore, number: int | None = None, template=None
) -> tuple[FieldAvatar, Version, dict[str, dict[str, Tensor]]]:
    """Load a version (the current one by default) strictly: names, shapes and dtypes.

    Returns:
        (avatar, version, replay tensors per appearance).
    """
    meta = store.meta()
    if meta["method"] != METHOD:
        raise AvatarError(f"{store.meta_path}: method {meta['method']!r} is not {METHOD!r}")
    version = store.version(number)
    st = version.state
    where = version.path / "state.json"
    for key in ("field_config", "render_config"):
        if not isinstance(st.get(key), dict):
            raise AvatarError(f"{where}: {key}: missing or not an object")
    if template is None:
        from perennial.body.anny import load_template

        template = load_template(meta["body"]["template"])
    records = st["appearances"]
    names = [a["name"] for a in records]
    keys = [a.get("key", a["name"]) for a in records]  # state.json schema 1: the name was the key
    if any(not k or "." in k for k in keys):
        raise AvatarError(f"{where}: appearances: keys {keys} must be non-empty and without '.'")
    try:
        fcfg = FieldConfig(**st["field_config"])
        rcfg = RenderConfig(**{**st["render_config"], "background": tuple(st["render_config"].get("background", (0, 0, 0)))})
        avatar = FieldAvatar(template, st.get("phenotype") or meta["body"].get("phenotype"), names, fcfg, rcfg, keys)
    except (TypeError, ValueError) as e:  # a config of the wrong shape or type; ConfigError is a ValueError
        raise AvatarError(f"{where}: field_config / render_config / phenotype: {e}") from None
    if "prior" in st:  # a meta-learned starting point of new appearances (perennial.learn.meta)
        avatar.field.ensure_prior()
        avatar.prior_info = st["prior"]
    for a in records:  # shared-local avatars: one tri-plane read by several appearances
        if "triplane_of" in a:
            avatar.field.appearance(a["name"]).triplane = avatar.field.appearance(a["triplane_of"]).triplane
    expected = {k: (tuple(v.shape), v.dtype) for k, v in avatar.state_dict().items()}
    J = template.num_bones
    for a, key in zip(records, keys):
        F = len(a["frames"])
        expected[f"replay.{key}.rotvec"] = ((F, J, 3), torch.float32)
        expected[f"replay.{key}.translation"] = ((F, 3), torch.float32)
    tensors = store.load_weights(version, expected)
    avatar.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("replay.")}, strict=True)
    replay = {a["name"]: {k: tensors[f"replay.{key}.{k}"] for k in ("rotvec", "translation")}
              for a, key in zip(records, keys)}  # fmt: skip
    avatar.eval()
    return avatar, version, replay
