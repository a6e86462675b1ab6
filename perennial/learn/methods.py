"""Avatar methods: what ``create --method`` and ``learn`` need to know of a kind of avatar.

A method bundles its presets (``create`` and the ``learn`` strategies, each a named
config tree), how a new avatar is built, how an avatar is loaded from and saved
to the store, and how a config becomes the engine's parameter groups and loss
terms. The drivers (:mod:`perennial.learn.create`, :mod:`perennial.learn.continual`)
and the engine never ask which method they run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from perennial.avatar.field.model import FieldAvatar
from perennial.avatar.field_io import load_field_avatar, replay_cameras, save_field_avatar
from perennial.avatar.store import AvatarError, AvatarStore, Version
from perennial.capture.capture import Capture, ViewPixels
from perennial.config import override
from perennial.errors import ConfigError
from perennial.learn import field_method as fm
from perennial.learn.engine import Term
from perennial.learn.meta import meta_learn_prior
from perennial.learn.texture_method import TextureMethod

__all__ = ["METHODS", "Method", "fit", "get_method", "preset"]


class Method(Protocol):
    """A kind of avatar as the training drivers see it."""

    name: str
    presets: Mapping[str, Callable[[], Any]]
    """``create`` and every ``learn`` strategy: name -> a fresh config."""

    def new(self, template, capture: Capture, config: Any) -> nn.Module:
        """A new, untrained avatar holding the capture's appearance."""
        ...

    def load(self, store: AvatarStore, template=None) -> tuple[nn.Module, Version, dict[str, dict[str, Tensor]]]:
        """The current version: (avatar, version, training poses per appearance)."""
        ...

    def save(self, store: AvatarStore, avatar: nn.Module, records: list[dict], poses: dict, entry: dict,
             metrics: dict, switch: bool) -> Version:  # fmt: skip
        """Write the avatar as a new version."""
        ...

    def prepare(self, avatar: nn.Module, name: str, capture: Capture, pixels: list[ViewPixels],
                records: list[dict], poses: dict, config: Any) -> tuple[dict, list[Term]]:  # fmt: skip
        """Add appearance ``name`` if new and return the engine's (parameter groups, terms)."""
        ...

    def finish(self, avatar: nn.Module, config: Any, progress: bool) -> dict:
        """After a create's training, before it is saved (e.g. meta-learning); returns metrics."""
        ...


class FieldMethod:
    """The MaintaAvatar-style radiance-field avatar (:mod:`perennial.avatar.field`)."""

    name = "field"
    presets = fm.PRESETS

    def new(self, template, capture: Capture, config: fm.FieldTrainConfig) -> FieldAvatar:
        if config.prior is not None:  # post-training: the shared parts start from a pretrained prior
            from perennial.learn.prior_file import apply_prior

            avatar, info = apply_prior(config.prior, template, capture.body_info.get("phenotype"), capture.appearance)
            avatar.pretrained_info = info  # recorded in the version's metrics by finish
            return avatar
        return FieldAvatar(template, capture.body_info.get("phenotype"), [capture.appearance])

    def load(self, store: AvatarStore, template=None):
        return load_field_avatar(store, template=template)

    def save(self, store, avatar, records, poses, entry, metrics, switch):
        return save_field_avatar(store, avatar, records, poses, entry, metrics, switch=switch)

    def prepare(self, avatar: FieldAvatar, name: str, capture: Capture, pixels: list[ViewPixels],
                records: list[dict], poses: dict, config: fm.FieldTrainConfig):  # fmt: skip
        past = fm.Past()
        if records:  # a learn: the teacher is the version as it was before the new appearance
            past.teacher = copy.deepcopy(avatar).eval()
            for p in past.teacher.parameters():
                p.requires_grad_(False)
            past.cameras = {r["name"]: replay_cameras(r) for r in records}
            past.poses = poses
            if config.joint is not None:
                past.sources = _joint_sources(records, config)
        if name not in avatar.appearance_names:
            app = avatar.field.add_appearance(name)
            if config.share_triplane:
                app.triplane = avatar.field.appearance(records[0].get("triplane_of", records[0]["name"])).triplane
        rays = fm.training_rays(capture, pixels, config)
        rows = [capture.frame_row(f) for f in sorted({v.view.frame for v in pixels})]
        return fm.plan(avatar, name, rays, capture.body.rotvec[rows], past, config)


    def finish(self, avatar: FieldAvatar, config: fm.FieldTrainConfig, progress: bool) -> dict:
        info = getattr(avatar, "pretrained_info", None)
        out = {"pretrained": info} if info else {}
        if config.meta is None or config.meta.iterations == 0:
            return out
        avatar.prior_info = meta_learn_prior(avatar, self, config.meta, progress)
        return {**out, "meta": avatar.prior_info}


def _joint_sources(records: list[dict], config: fm.FieldTrainConfig) -> dict:
    """Past captures for joint training: read from their recorded paths, checked by content hash."""
    from perennial.capture.format import read_capture

    out = {}
    for r in records:
        path = Path(r["capture"]["path"])
        cap = read_capture(path)
        pixels, digest = cap.read_split("train")
        if digest != r["capture"]["sha256"]:
            raise AvatarError(f"{path}: the capture of appearance {r['name']!r} changed since it was learned")
        out[r["name"]] = fm.training_rays(cap, pixels, config)
    return out


METHODS: dict[str, Method] = {"field": FieldMethod(), "texture": TextureMethod()}
"""Every avatar method by name (``create --method``)."""


def get_method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        ConfigError: no such method (the message lists those there are).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def preset(method: str | Method, name: str, **overrides: Any) -> Any:
    """A fresh config of a method's preset ``name`` (``create`` or a strategy), with overrides.

    Args:
        method: the method or its name.
        name: the preset.
        overrides: settings to change, by leaf name or dotted path (``steps=20``,
            ``rays_per_step=512``, ``**{"replay.patch": 16}``).

    Raises:
        ConfigError: no such method or preset (the message lists those there are), or a bad override.
    """
    m = get_method(method) if isinstance(method, str) else method
    if name not in m.presets:
        known = ", ".join(k for k in m.presets if k != "create")
        raise ConfigError(f"unknown strategy {name!r} for {m.name} avatars; choose one of {known}")
    config = m.presets[name]()
    return override(config, overrides) if overrides else config


def fit(avatar: nn.Module, capture: Capture, config: Any, method: str = "field", progress: bool = False):
    """Train ``avatar`` on ``capture``'s appearance in memory: no store, no checkpoint.

    For benchmarks and experiments; ``create`` and ``learn`` add the store around the
    same two calls. Returns the engine's :class:`~perennial.learn.engine.TrainResult`.
    """
    from perennial.learn.engine import train

    m = get_method(method)
    pixels, _ = capture.read_split("train", progress)
    groups, terms = m.prepare(avatar, capture.appearance, capture, pixels, [], {}, config)
    return train(avatar, groups, terms, config.loss_weights, config.engine, progress=progress)
