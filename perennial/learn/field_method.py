"""The field avatar as a method of the training engine: its config, its presets, its plan.

One config class, :class:`FieldTrainConfig`, describes every way a field avatar
learns an appearance; ``create`` and each ``learn`` strategy are presets of it
(:data:`PRESETS`), named config trees that differ only in data:

- ``create``: a new avatar; the appearance and the shared MLP at 5e-3, the pose
  corrector at 1e-4; photometric + tri-plane TV losses.
- ``replay`` (MaintaAvatar): the new appearance at 5e-3, the shared MLP and past
  appearances at 5e-4, the pose corrector at 1e-5; generative replay of past
  appearances from a frozen teacher every 2nd step; pose distillation after 30 %
  of the steps.
- ``finetune``: like replay without replay or distillation, everything at 5e-3
  (forgets: the lower bound).
- ``joint``: the past appearances' real images instead of the teacher's (the
  upper bound; needs the past captures at their recorded paths).
- ``shared-local``: replay, but every appearance reads the first one's tri-plane
  (ablation of the global-local split).

:func:`plan` turns a config into the engine's parameter groups and loss terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from perennial.avatar.field.model import FieldAvatar
from perennial.capture.capture import Capture, ViewPixels
from perennial.errors import ConfigError
from perennial.learn.engine import EngineConfig, Term
from perennial.learn.field_terms import (
    JointReplay,
    Photometric,
    PoseDistill,
    Replay,
    TrainingRays,
    TriplaneTV,
)
from perennial.learn.fisher import FisherConfig, FisherPhotometric
from perennial.learn.meta import MetaConfig
from perennial.learn.replay import PastViews
from perennial.learn.retrieval import RetrievalConfig, attach
from perennial.render.camera import Camera

__all__ = ["PRESETS", "DistillConfig", "FieldTrainConfig", "JointConfig", "Past", "ReplayConfig", "plan", "training_rays"]

GROUPS = ("appearance", "shared", "pose")
"""Parameter groups of a field avatar: the learned appearance's codes and tri-plane; the shared
MLP and every other appearance; the pose corrector."""


def _at_least(config, **minimum: int) -> None:
    for k, lo in minimum.items():
        v = getattr(config, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{k} must be an integer >= {lo}, got {v!r}")


@dataclass(kw_only=True)
class ReplayConfig:
    """Generative replay of past appearances from a frozen copy of the previous version."""

    every: int = 2
    """Replay a patch every n steps."""
    patch: int = 64
    """Side of a replayed patch, pixels."""

    def __post_init__(self) -> None:
        _at_least(self, every=1, patch=8)


@dataclass(kw_only=True)
class JointConfig:
    """Joint training on the past appearances' real images."""

    every: int = 2
    """Use a batch of past images every n steps."""

    def __post_init__(self) -> None:
        _at_least(self, every=1)


@dataclass(kw_only=True)
class DistillConfig:
    """Pose distillation: the pose corrector stays close to the frozen one's."""

    start: float = 0.3
    """Fraction of the steps after which distillation starts, in [0, 1]."""
    batch: int = 8
    """Poses per step: batch - 1 from past appearances, 1 from the new capture."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= 1.0:
            raise ConfigError(f"distill start must be a fraction in [0, 1], got {self.start!r}")
        if self.batch < 2:
            raise ConfigError(f"distill batch must be >= 2, got {self.batch!r}")


@dataclass(kw_only=True)
class FieldTrainConfig:
    """How a field avatar learns an appearance (``create`` and every ``learn`` strategy)."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    """Steps, learning-rate decay, checkpoints, seed."""
    lr: dict[str, float] = field(default_factory=lambda: {"appearance": 5e-3, "shared": 5e-3, "pose": 1e-4})
    """Adam learning rate at the start of each parameter group (``appearance``, ``shared``,
    ``pose``); 0 freezes a group."""
    rays_per_step: int = 2048
    """Training rays per step, drawn from one frame's training views."""
    samples: int = 16
    """Jittered samples per ray while training (rendering uses the avatar's ``RenderConfig``)."""
    box_dilation: int = 4
    """Pixels added around each view's person box when drawing rays."""
    replay: ReplayConfig | None = None
    """Generative replay of past appearances (None: off)."""
    joint: JointConfig | None = None
    """Joint training on past images (None: off)."""
    distill: DistillConfig | None = None
    """Pose distillation (None: off)."""
    meta: MetaConfig | None = None
    """After ``create``: meta-learn the starting point of future appearances (:mod:`perennial.learn.meta`;
    None or 0 iterations: none)."""
    fisher: FisherConfig | None = None
    """Fisher-weighted loss and ray sampling of the new appearance (:mod:`perennial.learn.fisher`; None: off)."""
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    """Retrieval-augmented training of the pose corrector's input (:mod:`perennial.learn.retrieval`)."""
    share_triplane: bool = False
    """The new appearance reads the first appearance's tri-plane (the shared-local ablation)."""
    prior: str | None = None
    """``create`` only: folder of a pretrained prior (``perennial pretrain``), or ``default`` (the one shipped);
    the pose corrector and the shared MLP start from it and the appearance from its identities' mean
    (None: from scratch)."""
    loss_weights: dict[str, float] = field(default_factory=lambda: {"rgb": 1.0, "mask": 0.1, "tv": 1e-3})
    """Weight of each loss; the names must be exactly the losses of the enabled terms."""

    def __post_init__(self) -> None:
        if set(self.lr) != set(GROUPS):
            raise ConfigError(f"lr must name the groups {list(GROUPS)}, got {sorted(self.lr)}")
        _at_least(self, rays_per_step=1, samples=1, box_dilation=0)
        if self.replay is not None and self.joint is not None:
            raise ConfigError("replay and joint are alternatives: enable one")


_REPLAY_WEIGHTS = {"rgb": 1.0, "mask": 0.1, "tv": 1e-3, "replay_rgb": 1.0, "replay_mask": 0.1}
_LEARN_LR = {"appearance": 5e-3, "shared": 5e-4, "pose": 1e-5}


def _learn(**kw) -> FieldTrainConfig:
    return FieldTrainConfig(engine=EngineConfig(steps=1500, checkpoint_every=250), **kw)


PRESETS = {
    "create": lambda: FieldTrainConfig(engine=EngineConfig(steps=6000, checkpoint_every=500),
                                       meta=MetaConfig(task={"rays_per_step": 1024})),
    # the default learn: only the new appearance's own parameters move, from the meta-learned prior, for
    # at most a minute; the shared networks are frozen, so no past appearance can change (no replay needed)
    "fast": lambda: FieldTrainConfig(engine=EngineConfig(steps=1500, seconds=60.0, checkpoint_every=250),
                                     lr={"appearance": 1e-2, "shared": 0.0, "pose": 0.0}),
    "replay": lambda: _learn(lr=dict(_LEARN_LR), replay=ReplayConfig(), distill=DistillConfig(),
                             loss_weights={**_REPLAY_WEIGHTS, "distill": 10.0}),
    "finetune": lambda: _learn(lr={"appearance": 5e-3, "shared": 5e-3, "pose": 1e-5}),
    "joint": lambda: _learn(lr=dict(_LEARN_LR), joint=JointConfig(), loss_weights=dict(_REPLAY_WEIGHTS)),
    "shared-local": lambda: _learn(lr=dict(_LEARN_LR), replay=ReplayConfig(), distill=DistillConfig(),
                                   share_triplane=True, loss_weights={**_REPLAY_WEIGHTS, "distill": 10.0}),
}
"""Named config trees: ``create`` and the ``learn`` strategies."""


@dataclass
class Past:
    """What a learn knows of the appearances learned before.

    Attributes:
        teacher: frozen copy of the previous version (None for create).
        cameras: appearance -> its training cameras.
        poses: appearance -> ``{"rotvec": (F, J, 3), "translation": (F, 3)}`` training poses.
        sources: appearance -> its real training rays (joint only, else empty).
    """

    teacher: FieldAvatar | None = None
    cameras: dict[str, dict[str, Camera]] = field(default_factory=dict)
    poses: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    sources: dict[str, TrainingRays] = field(default_factory=dict)


def training_rays(capture: Capture, pixels: list[ViewPixels], config: FieldTrainConfig) -> TrainingRays:
    """The capture's training pixels as rays grouped by frame."""
    rays = TrainingRays(pixels, capture.cameras, lambda f: capture.body_params(f)[:2], config.box_dilation)
    if len(rays) == 0:
        raise ConfigError(f"{capture.root}: no training view shows the person (every mask is empty)")
    return rays


def plan(avatar: FieldAvatar, appearance: str, rays: TrainingRays, new_poses: torch.Tensor,
         past: Past, config: FieldTrainConfig) -> tuple[dict, list[Term]]:  # fmt: skip
    """The engine's parameter groups and terms for learning ``appearance`` (already in ``avatar``).

    Args:
        avatar: the avatar being trained.
        appearance: the appearance learned.
        rays: its training rays.
        new_poses: (F, J, 3) its training poses (for distillation).
        past: the appearances learned before (empty for create).
        config: the preset, possibly changed by the user.
    """
    own = list(avatar.field.appearance(appearance).parameters())
    own_ids = {id(p) for p in own}
    groups = {
        "appearance": (own, config.lr["appearance"]),
        "shared": ([p for p in avatar.field.parameters() if id(p) not in own_ids], config.lr["shared"]),
        "pose": (list(avatar.corrector.parameters()), config.lr["pose"]),
    }
    if config.fisher is not None:
        photometric = FisherPhotometric(avatar, rays, appearance, config.rays_per_step, config.samples, config.fisher)
    else:
        photometric = Photometric(avatar, rays, appearance, config.rays_per_step, config.samples)
    attach(photometric, config.retrieval, {f: (rays.body_params(f)[0], None) for f in rays.order})
    terms: list[Term] = [photometric, TriplaneTV(avatar, appearance)]
    needs_teacher = config.replay is not None or config.distill is not None
    if needs_teacher and (past.teacher is None or not past.poses):
        raise ConfigError("replay and pose distillation need past appearances: use them with 'learn', not 'create'")
    if config.joint is not None and not past.sources:
        raise ConfigError("joint training needs the past appearances' captures: use it with 'learn'")
    if config.replay is not None:
        r = config.replay
        terms.append(Replay(avatar, past.teacher, PastViews(past.cameras, past.poses), r.patch, config.samples,
                            r.every))  # fmt: skip
    if config.joint is not None:
        terms.append(JointReplay(avatar, past.sources, config.rays_per_step, config.samples, config.joint.every))
    if config.distill is not None:
        old = torch.cat([p["rotvec"] for p in past.poses.values()])
        start = int(config.distill.start * config.engine.steps)
        terms.append(PoseDistill(avatar, past.teacher, old, new_poses, start, config.distill.batch))
    return groups, terms
