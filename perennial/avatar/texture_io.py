"""Saving and loading texture avatars in the avatar store (safetensors + JSON, no pickle).

A version's tensors are the avatar's ``state_dict()`` (per appearance its texture
and latent under its internal key, the shared generator and face encoder) plus,
per appearance, the poses replay needs: ``replay.<key>.rotvec`` (F, J, 3),
``replay.<key>.translation`` (F, 3) and ``replay.<key>.facial_actions`` (F, 52).
``state.json`` holds the config as plain data and the appearance records
(:func:`perennial.avatar.field_io.appearance_record`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from perennial.avatar.store import AvatarError, AvatarStore, Version

METHOD = "texture"
REPLAY = ("rotvec", "translation", "facial_actions")


def save_texture_avatar(store: AvatarStore, avatar, appearances: list[dict], replay: dict[str, dict[str, Tensor]],
                        history_entry: dict, metrics: dict, switch: bool = True) -> Version:  # fmt: skip
    """Write the avatar as a new version and make it current unless ``switch`` is False (inside ``store.lock()``)."""
    appearances = [{**a, "key": avatar.keys[a["name"]]} for a in appearances]
    tensors = dict(avatar.state_dict())
    J = len(avatar.template.bone_names)
    for name, t in replay.items():
        F = t["rotvec"].shape[0]
        facial = t.get("facial_actions")
        t = {**t, "facial_actions": torch.zeros(F, 52) if facial is None else facial}
        for k in REPLAY:
            tensors[f"replay.{avatar.keys[name]}.{k}"] = t[k].float().reshape((F, J, 3) if k == "rotvec" else (F, -1))
    config = dataclasses.asdict(avatar.config)
    state = {"method": METHOD, "texture_config": config, "phenotype": avatar.phenotype,
             "appearances": appearances, "history_entry": history_entry}  # fmt: skip
    if avatar.prior is not None:  # a meta-learned starting point of new appearances (perennial.learn.meta)
        state["prior"] = avatar.prior_info or {}
    return store.write_version(tensors, state, metrics, switch=switch)


def load_texture_avatar(store: AvatarStore, number: int | None = None, template=None):
    """Load a version (the current one by default) strictly: names, shapes and dtypes.

    Returns:
        (avatar, version, training poses per appearance: rotvec, translation, facial_actions).
    """
    from perennial.avatar.texture.model import TextureAvatar, TextureConfig

    meta = store.meta()
    if meta["method"] != METHOD:
        raise AvatarError(f"{store.meta_path}: method {meta['method']!r} is not {METHOD!r}")
    version = store.version(number)
    st, where = version.state, version.path / "state.json"
    if not isinstance(st.get("texture_config"), dict):
        raise AvatarError(f"{where}: texture_config: missing or not an object")
    if template is None:
        from perennial.body.anny import load_template

        template = load_template(meta["body"]["template"])
    records = st["appearances"]
    names = [a["name"] for a in records]
    keys = [a.get("key", a["name"]) for a in records]
    try:
        config = TextureConfig(**st["texture_config"])
        avatar = TextureAvatar(template, st.get("phenotype") or meta["body"].get("phenotype"), names, config, keys)
    except (TypeError, ValueError) as e:  # a config of the wrong shape or type; ConfigError is a ValueError
        raise AvatarError(f"{where}: texture_config / phenotype: {e}") from None
    if "prior" in st:
        avatar.ensure_prior()
        avatar.prior_info = st["prior"]
    expected = {k: (tuple(v.shape), v.dtype) for k, v in avatar.state_dict().items()}
    J = template.num_bones
    shapes = {"rotvec": lambda F: (F, J, 3), "translation": lambda F: (F, 3), "facial_actions": lambda F: (F, 52)}
    for a, key in zip(records, keys):
        for k in REPLAY:
            expected[f"replay.{key}.{k}"] = (shapes[k](len(a["frames"])), torch.float32)
    tensors = store.load_weights(version, expected)
    avatar.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("replay.")}, strict=True)
    poses = {a["name"]: {k: tensors[f"replay.{key}.{k}"] for k in REPLAY} for a, key in zip(records, keys)}
    avatar.eval()
    return avatar, version, poses
