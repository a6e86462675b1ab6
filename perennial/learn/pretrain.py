"""``perennial pretrain``: the shared parts of field or texture avatars trained across many identities.

Large-scale Codec Avatars pre-trains one model on many people and post-trains it on one. Here the
parts of an avatar that are not an appearance are trained on many identities at once (synthetic
people with phenotypes drawn from Anny's shape distribution, each in its own outfit and motion, plus
any real captures), each identity with an appearance of its own:

- field avatars (``--method field``): the pose corrector and the shared MLP, with one appearance
  (codes and tri-plane) per identity in one :class:`~perennial.avatar.field.model.CanonicalField`;
  every identity has its own body (a :class:`FieldAvatar` whose corrector and field are the shared
  modules, so only the deformer, i.e. the phenotype, is its own);
- texture avatars (``--method texture``, :mod:`perennial.learn.pretrain_texture`): the generator
  (StyleUNet), the face encoder and the dual attention when enabled, with one neural texture and
  latent per identity; every identity is a :class:`TextureAvatar` of its own body whose networks
  are the shared modules.

The loop is the training engine's (:func:`perennial.learn.engine.train`). One term,
:class:`IdentityBatch`, computes the losses of each identity of this rank's share of the step
(:func:`perennial.learn.distributed.identities_for`) and returns their mean. Its random draws are a
function of (seed, step, identity) only, so the losses of an identity are the same on whichever
rank it lands; in a distributed run the term goes through
:class:`~torch.nn.parallel.DistributedDataParallel`, whose backward averages the gradients over
the ranks, and the engine's Adam step is then the same on every rank and equal to one process's
with the same global batch. Rank 0 alone writes checkpoints (``OUT/checkpoint``, resumable) and
the prior (:mod:`perennial.learn.prior_file`).
"""

from __future__ import annotations

import datetime
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from perennial.avatar.field.deformer import PoseCorrector
from perennial.avatar.field.model import CanonicalField, FieldAvatar, FieldConfig
from perennial.errors import ConfigError, PerennialError
from perennial.learn.distributed import Dist, barrier, identities_for
from perennial.learn.engine import EngineConfig, TrainResult, generator_state, train
from perennial.learn.field_terms import Photometric, TrainingRays, TriplaneTV
from perennial.learn.identities import Identity, Pretraining, read_people
from perennial.learn.prior_file import shared_tensors, write_prior
from perennial.learn.texture_method import CropConfig

__all__ = ["PretrainConfig", "SyntheticPeople", "draw_phenotypes", "pretrain", "synthetic_people"]

MOTIONS = ("walk", "wave", "squat", "turn", "mix")
LR = {"field": {"appearance": 5e-3, "shared": 5e-3, "pose": 0.0}, "texture": {"appearance": 5e-3, "shared": 5e-3}}
"""Each method's learning rates by parameter group, when ``PretrainConfig.lr`` is not given."""
WEIGHTS = {"field": {"rgb": 1.0, "mask": 0.1, "tv": 1e-3},
           "texture": {"l1": 1.0, "rgb": 0.0, "mask": 0.5, "perceptual": 0.2, "face": 0.2, "hands": 0.2}}  # fmt: skip
"""Each method's loss weights (its ``create`` preset's), when ``PretrainConfig.loss_weights`` is not given."""


@dataclass(kw_only=True)
class SyntheticPeople:
    """Synthetic identities rendered into ``OUT/cache`` (reused when already there)."""

    count: int = 8
    """Synthetic identities (phenotype from Anny's shape distribution, own outfit, one of five motions)."""
    cameras: int = 6
    """Cameras of each synthetic capture."""
    frames: int = 12
    """Frames of each synthetic capture."""
    size: int = 128
    """Image side of each synthetic capture, pixels."""
    min_age: float = 15.0
    """Youngest morphological age drawn, years (the cameras frame an adult-sized person)."""
    max_age: float = 80.0
    """Oldest morphological age drawn, years."""

    def __post_init__(self) -> None:
        for k, lo in (("count", 0), ("cameras", 1), ("frames", 1), ("size", 8)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{k} must be an integer >= {lo}, got {v!r}")
        if not 0 <= self.min_age < self.max_age <= 90:
            raise ConfigError(f"ages must satisfy 0 <= min_age < max_age <= 90, got {self.min_age}, {self.max_age}")


@dataclass(kw_only=True)
class PretrainConfig:
    """Pretraining of the shared parts of field or texture avatars across identities."""

    method: Literal["field", "texture"] = "field"
    """The avatar method whose shared parts are pretrained."""
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=3000, checkpoint_every=250))
    """Steps, learning-rate decay, checkpoints, seed."""
    lr: dict[str, float] | None = None
    """Adam learning rate at the start of each group (None: the method's :data:`LR`). Field:
    ``appearance`` (every identity's codes and tri-plane), ``shared`` (the shared MLP), ``pose`` (the
    pose corrector). The corrector is frozen (identity) by default: trained at 1e-4 across 8 synthetic
    people (exact poses) it learned residuals of 1.1 deg per bone on average (3.6 max) that cost an
    unseen person 2.1-2.8 dB (``bench prior``; see docs/ARCHITECTURE.md). Texture: ``appearance``
    (every identity's texture and latent), ``shared`` (generator, face encoder, attention)."""
    batch: int = 2
    """Identities per step over all processes (the global batch; a multiple of the process count)."""
    rays_per_step: int = 1024
    """Field: training rays per identity and step, drawn from one frame's training views."""
    samples: int = 16
    """Field: jittered samples per ray."""
    box_dilation: int = 4
    """Field: pixels added around each view's person box when drawing rays."""
    crop: CropConfig = field(default_factory=CropConfig)
    """Texture: the window of a training view each identity's step sees, and its perceptual terms."""
    loss_weights: dict[str, float] | None = None
    """Weight of each loss, each the mean over the step's identities (None: the method's :data:`WEIGHTS`)."""
    synthetic: SyntheticPeople = field(default_factory=SyntheticPeople)
    """The synthetic identities."""

    def __post_init__(self) -> None:
        if self.method not in LR:
            raise ConfigError(f"method must be one of {sorted(LR)}, got {self.method!r}")
        if self.lr is not None and set(self.lr) != set(LR[self.method]):
            raise ConfigError(f"lr must name the groups {sorted(LR[self.method])}, got {sorted(self.lr)}")
        if self.loss_weights is not None and set(self.loss_weights) != set(WEIGHTS[self.method]):
            raise ConfigError(f"loss_weights must name {sorted(WEIGHTS[self.method])}, got {sorted(self.loss_weights)}")
        for k in ("batch", "rays_per_step", "samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be an integer >= 1, got {v!r}")

    @property
    def learning_rates(self) -> dict[str, float]:
        """``lr``, or the method's defaults."""
        return dict(self.lr if self.lr is not None else LR[self.method])

    @property
    def weights(self) -> dict[str, float]:
        """``loss_weights``, or the method's defaults."""
        return dict(self.loss_weights if self.loss_weights is not None else WEIGHTS[self.method])


def draw_phenotypes(count: int, cfg: SyntheticPeople, seed: int) -> list[dict[str, float]]:
    """``count`` phenotypes drawn from Anny's ``SimpleShapeDistribution`` (ages clipped); person ``i``
    is drawn with the seed ``seed * 1000 + i``, so it is the same person whatever ``count`` is."""
    import types

    from anny.shape_distribution import SimpleShapeDistribution

    from perennial.body.rig import PHENOTYPE_LABELS

    model = types.SimpleNamespace(dtype=torch.float32, device=torch.device("cpu"), phenotype_labels=list(PHENOTYPE_LABELS))
    ages = torch.distributions.Uniform(torch.tensor(cfg.min_age), torch.tensor(cfg.max_age))
    dist = SimpleShapeDistribution(model, morphological_age_distribution=ages)
    out = []
    with torch.random.fork_rng(devices=[]):
        for i in range(count):
            torch.manual_seed(seed * 1000 + i)
            _, values = dist.sample(1)
            out.append({k: round(float(values[k][0].clamp(0, 1)), 4) for k in PHENOTYPE_LABELS})
    return out


def synthetic_people(root: Path, cfg: SyntheticPeople, seed: int, dist: Dist, progress: bool) -> list[Path]:
    """Render (or reuse) the synthetic captures ``root/person-<i>``; rank r renders every world-th one."""
    from perennial.capture.synth import SynthConfig, synthesize

    phenotypes = draw_phenotypes(cfg.count, cfg, seed)
    paths = []
    for i, ph in enumerate(phenotypes):
        name = f"person-{i:03d}"
        path = root / name
        paths.append(path)
        if i % dist.world != dist.rank or (path / "capture.json").is_file():
            continue
        sc = SynthConfig(appearance=name, seed=seed * 1000 + i, motion=MOTIONS[i % len(MOTIONS)], phenotype=ph,
                         cameras=cfg.cameras, frames=cfg.frames, size=cfg.size)  # fmt: skip
        synthesize(path, sc, overwrite=True, progress=progress)
    barrier(dist)
    return paths


class Shared(nn.Module):
    """What a field pretraining run learns: the pose corrector and the field with one appearance per identity."""

    def __init__(self, corrector: PoseCorrector, field_: CanonicalField) -> None:
        super().__init__()
        self.corrector, self.field = corrector, field_


class IdentityBatch(nn.Module):
    """The mean losses of this rank's identities at a step (the module DDP wraps)."""

    def __init__(self, shared: Shared, people: list[Identity], batch: int, dist: Dist, seed: int) -> None:
        super().__init__()
        self.shared, self.batch, self.dist, self.seed = shared, batch, dist, seed
        self.people = people  # a plain list: their modules are the shared ones

    def forward(self, step: int) -> dict[str, Tensor]:
        ids = identities_for(step, len(self.people), self.batch, self.dist.rank, self.dist.world, self.seed)
        total: dict[str, Tensor] = {}
        for i in ids:
            person = self.people[i]
            s = (self.seed * 1_000_003 + step) * 10_007 + i
            devices = [torch.device(self.dist.device).index or 0] if self.dist.device.startswith("cuda") else []
            with torch.random.fork_rng(devices=devices):  # the jitter of the samples: same on any rank
                torch.manual_seed(s)
                out = person.losses(step, s)
            for k, v in out.items():
                total[k] = total.get(k, 0) + v / len(ids)
        for k in ("rgb", "mask"):  # no ray hit a body: a zero loss that still reaches every parameter
            if k not in total:
                total[k] = sum(p.sum() for p in self.shared.parameters()) * 0.0
        return total


class IdentityTerm:
    """The engine's one term: the batch's losses, through DDP when the run has several processes."""

    name = "identities"

    def __init__(self, batch: IdentityBatch, losses: tuple[str, ...]) -> None:
        self.batch, self.module, self.losses = batch, None, losses

    def init_state(self, seed: int) -> dict[str, Tensor]:
        return {}

    def __call__(self, step: int, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if self.module is None:  # built at the first step, after the engine froze groups at lr 0
            self.module = self.batch
            if self.batch.dist.distributed:
                self.module = nn.parallel.DistributedDataParallel(self.batch, find_unused_parameters=True)
        return self.module(step), state


def field_people(paths: list[Path], config: PretrainConfig, progress: bool) -> Pretraining:
    """Field avatars: one pose corrector and shared MLP, one appearance per identity."""
    captures, template = read_people(paths)
    field_config = FieldConfig()
    corrector = PoseCorrector(template.bone_names, width=field_config.pose_width)
    field_ = CanonicalField(field_config, [f"id-{i:04d}" for i in range(len(captures))])
    people = []
    for i, cap in enumerate(captures):
        pixels, digest = cap.read_split("train", progress)
        avatar = FieldAvatar(template, cap.body_info.get("phenotype"), (), field_config)
        avatar.corrector, avatar.field = corrector, field_  # only the body (phenotype) is this person's
        rays = TrainingRays(pixels, cap.cameras, lambda f, c=cap: c.body_params(f)[:2], config.box_dilation)
        if len(rays) == 0:
            raise ConfigError(f"{cap.root}: no training view shows the person (every mask is empty)")
        key = f"id-{i:04d}"
        photometric = Photometric(avatar, rays, key, config.rays_per_step, config.samples)
        tv = TriplaneTV(avatar, key)

        def losses(step: int, seed: int, photometric=photometric, tv=tv) -> dict[str, Tensor]:
            return {**photometric(step, generator_state(seed))[0], **tv(step, {})[0]}

        people.append(Identity(key, str(Path(cap.root).resolve()), cap.appearance, digest,
                               dict(cap.body_info.get("phenotype") or {}), losses, avatar))  # fmt: skip
    shared = Shared(corrector, field_)
    own = [p for a in field_.appearances.values() for p in a.parameters()]
    ids = {id(p) for p in own}
    lr = config.learning_rates
    groups = {"appearance": (own, lr["appearance"]),
              "shared": ([p for p in field_.parameters() if id(p) not in ids], lr["shared"]),
              "pose": (list(corrector.parameters()), lr["pose"])}  # fmt: skip

    def tensors() -> dict[str, Tensor]:
        return shared_tensors({"corrector": corrector, "field": field_}, list(field_.appearances.values()))

    return Pretraining(shared, people, groups, tensors, field_config)


def pretrain(out: str | Path, captures: list[str | Path], config: PretrainConfig, dist: Dist | None = None,
             resume: bool = False, progress: bool = True) -> tuple[TrainResult, dict]:  # fmt: skip
    """Pretrain ``config.method``'s shared parts on ``captures`` plus ``config.synthetic.count`` synthetic
    people; write the prior to ``out``.

    Returns:
        (the engine's result, the provenance written into ``prior.json``).

    Raises:
        PerennialError: ``out`` holds a prior already, no identity, a bad capture, a checkpoint of
            another run on ``--resume``.
    """
    dist = dist or Dist()
    out = Path(out)
    if (out / "prior.json").exists():
        raise PerennialError(f"{out / 'prior.json'}: a prior exists already; choose another folder")
    if dist.device != "cpu":
        raise ConfigError(f"--device {dist.device}: pretraining runs on the CPU in this version")
    if config.batch % dist.world:
        raise ConfigError(f"--batch {config.batch} must be a multiple of the number of processes ({dist.world})")
    seed = config.engine.seed
    paths = [Path(p) for p in captures]
    if config.synthetic.count:
        paths += synthetic_people(out / "cache", config.synthetic, seed, dist, progress and dist.writer)
    if not paths:
        raise ConfigError("nothing to pretrain on: give --captures or --synthetic N (N >= 1)")
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    if config.method == "field":
        run = field_people(paths, config, progress and dist.writer)
    else:
        from perennial.learn.pretrain_texture import texture_people

        run = texture_people(paths, config.crop, config.learning_rates, progress and dist.writer)
    people, weights = run.people, config.weights
    term = IdentityTerm(IdentityBatch(run.shared, people, config.batch, dist, seed), tuple(weights))
    tag = {"action": "pretrain", "method": config.method, "identities": [p.digest for p in people],
           "batch": config.batch, "seed": seed}  # fmt: skip
    ckpt = out / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    result = train(run.shared, run.groups, [term], weights, config.engine, ckpt, tag=tag, resume=resume,
                   progress=progress and dist.writer, desc="pretraining", writer=dist.writer)  # fmt: skip
    samples = result.steps_run * config.batch
    provenance = {
        "identities": [{"key": p.key, "capture": p.capture, "appearance": p.appearance, "sha256": p.digest, "phenotype": p.phenotype}
                       for p in people],  # fmt: skip
        "method": config.method, "steps": config.engine.steps, "steps_run": result.steps_run, "seed": seed,
        "batch": config.batch, "processes": dist.world,
        **({"rays_per_step": config.rays_per_step} if config.method == "field" else {"crop": config.crop.size}), "seconds": result.seconds,
        "samples_per_s": samples / result.seconds if result.seconds > 0 else float("nan"),
        "train_psnr_body": result.train_psnr, "lr": config.learning_rates,
        "synthetic": {"count": config.synthetic.count, "cameras": config.synthetic.cameras,
                      "frames": config.synthetic.frames, "size": config.synthetic.size,
                      "ages": [config.synthetic.min_age, config.synthetic.max_age], "motions": list(MOTIONS)},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "perennial": _version(),
    }  # fmt: skip
    barrier(dist)  # every rank has read the checkpoint (on --resume) before rank 0 removes it
    if dist.writer:
        write_prior(out, run.tensors(), config.method, run.config, provenance)
        shutil.rmtree(ckpt, ignore_errors=True)
    barrier(dist)
    return result, provenance


def _version() -> str:
    from perennial import __version__

    return __version__
