"""``perennial pretrain``: the shared parts of field avatars trained across many identities.

Large-scale Codec Avatars pre-trains one model on many people and post-trains it on one. Here the
parts of a field avatar that are not an appearance, the pose corrector and the shared MLP, are
trained on many identities at once (synthetic people with phenotypes drawn from Anny's shape
distribution, each in its own outfit and motion, plus any real captures), each identity with an
appearance of its own (codes and tri-plane) in one :class:`~perennial.avatar.field.model.CanonicalField`.
Every identity has its own body (a :class:`FieldAvatar` whose corrector and field are the shared
modules, so only the deformer, i.e. the phenotype, is its own).

The loop is the training engine's (:func:`perennial.learn.engine.train`). One term,
:class:`IdentityBatch`, renders ``rays_per_step`` training rays of each identity of this rank's share
of the step (:func:`perennial.learn.distributed.identities_for`) and returns the mean of their
losses. Its random draws are a function of (seed, step, identity) only, so the losses of an
identity are the same on whichever rank it lands; in a distributed run the term goes through
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

import torch
from torch import Tensor, nn

from perennial.avatar.field.deformer import PoseCorrector
from perennial.avatar.field.model import CanonicalField, FieldAvatar, FieldConfig
from perennial.errors import ConfigError, PerennialError
from perennial.learn.distributed import Dist, barrier, identities_for
from perennial.learn.engine import EngineConfig, TrainResult, generator_state, train
from perennial.learn.field_terms import Photometric, TrainingRays, TriplaneTV
from perennial.learn.prior_file import shared_tensors, write_prior

__all__ = ["PretrainConfig", "SyntheticPeople", "draw_phenotypes", "pretrain", "synthetic_people"]

MOTIONS = ("walk", "wave", "squat", "turn", "mix")


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
    """Pretraining of the shared parts of field avatars across identities."""

    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=3000, checkpoint_every=250))
    """Steps, learning-rate decay, checkpoints, seed."""
    lr: dict[str, float] = field(default_factory=lambda: {"appearance": 5e-3, "shared": 5e-3, "pose": 0.0})
    """Adam learning rate at the start of each group: ``appearance`` (every identity's codes and
    tri-plane), ``shared`` (the shared MLP), ``pose`` (the pose corrector). The corrector is frozen
    (identity) by default: trained at 1e-4 across 8 synthetic people (exact poses) it learned
    residuals of 1.1 deg per bone on average (3.6 max) that cost an unseen person 2.1-2.8 dB
    (``bench prior``; see docs/ARCHITECTURE.md)."""
    batch: int = 2
    """Identities per step over all processes (the global batch; a multiple of the process count)."""
    rays_per_step: int = 1024
    """Training rays per identity and step, drawn from one frame's training views."""
    samples: int = 16
    """Jittered samples per ray."""
    box_dilation: int = 4
    """Pixels added around each view's person box when drawing rays."""
    loss_weights: dict[str, float] = field(default_factory=lambda: {"rgb": 1.0, "mask": 0.1, "tv": 1e-3})
    """Weight of each loss (``rgb``, ``mask``, ``tv``), each the mean over the step's identities."""
    synthetic: SyntheticPeople = field(default_factory=SyntheticPeople)
    """The synthetic identities."""

    def __post_init__(self) -> None:
        if set(self.lr) != {"appearance", "shared", "pose"}:
            raise ConfigError(f"lr must name the groups ['appearance', 'pose', 'shared'], got {sorted(self.lr)}")
        for k in ("batch", "rays_per_step", "samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be an integer >= 1, got {v!r}")


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


@dataclass
class Identity:
    """One person in pretraining: its body (sharing the corrector and field) and its training rays."""

    key: str
    capture: str
    appearance: str
    digest: str
    phenotype: dict
    photometric: Photometric
    tv: TriplaneTV


class Shared(nn.Module):
    """What a pretraining run learns: the pose corrector and the field with one appearance per identity."""

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
                out, _ = person.photometric(step, generator_state(s))
            out.update(person.tv(step, {})[0])
            for k, v in out.items():
                total[k] = total.get(k, 0) + v / len(ids)
        for k in ("rgb", "mask"):  # no ray hit a body: a zero loss that still reaches every parameter
            if k not in total:
                total[k] = sum(p.sum() for p in self.shared.parameters()) * 0.0
        return total


class IdentityTerm:
    """The engine's one term: the batch's losses, through DDP when the run has several processes."""

    name = "identities"
    losses = ("rgb", "mask", "tv")

    def __init__(self, batch: IdentityBatch) -> None:
        self.batch, self.module = batch, None

    def init_state(self, seed: int) -> dict[str, Tensor]:
        return {}

    def __call__(self, step: int, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if self.module is None:  # built at the first step, after the engine froze groups at lr 0
            self.module = self.batch
            if self.batch.dist.distributed:
                self.module = nn.parallel.DistributedDataParallel(self.batch, find_unused_parameters=True)
        return self.module(step), state


def _people(paths: list[Path], config: PretrainConfig, field_config: FieldConfig, progress: bool):
    from perennial.body.anny import load_template
    from perennial.capture import read_capture

    captures = [read_capture(p) for p in paths]
    templates = {c.body_info["template"] for c in captures}
    if len(templates) != 1:
        raise ConfigError(f"every capture must use one body template, got {sorted(templates)}")
    template = load_template(templates.pop())
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
        people.append(Identity(key, str(Path(cap.root).resolve()), cap.appearance, digest, dict(cap.body_info.get("phenotype") or {}),
                               Photometric(avatar, rays, key, config.rays_per_step, config.samples),
                               TriplaneTV(avatar, key)))  # fmt: skip
    return Shared(corrector, field_), people


def pretrain(out: str | Path, captures: list[str | Path], config: PretrainConfig, dist: Dist | None = None,
             resume: bool = False, progress: bool = True) -> tuple[TrainResult, dict]:  # fmt: skip
    """Pretrain on ``captures`` plus ``config.synthetic.count`` synthetic people; write the prior to ``out``.

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
        raise ConfigError(f"--device {dist.device}: field avatars train on the CPU in this version")
    if config.batch % dist.world:
        raise ConfigError(f"--batch {config.batch} must be a multiple of the number of processes ({dist.world})")
    seed = config.engine.seed
    paths = [Path(p) for p in captures]
    if config.synthetic.count:
        paths += synthetic_people(out / "cache", config.synthetic, seed, dist, progress and dist.writer)
    if not paths:
        raise ConfigError("nothing to pretrain on: give --captures or --synthetic N (N >= 1)")
    field_config = FieldConfig()
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    shared, people = _people(paths, config, field_config, progress and dist.writer)
    own = [p for k, a in shared.field.appearances.items() for p in a.parameters()]
    ids = {id(p) for p in own}
    groups = {"appearance": (own, config.lr["appearance"]),
              "shared": ([p for p in shared.field.parameters() if id(p) not in ids], config.lr["shared"]),
              "pose": (list(shared.corrector.parameters()), config.lr["pose"])}  # fmt: skip
    term = IdentityTerm(IdentityBatch(shared, people, config.batch, dist, seed))
    tag = {"action": "pretrain", "identities": [p.digest for p in people], "batch": config.batch, "seed": seed}
    ckpt = out / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    result = train(shared, groups, [term], config.loss_weights, config.engine, ckpt, tag=tag, resume=resume,
                   progress=progress and dist.writer, desc="pretraining", writer=dist.writer)  # fmt: skip
    samples = result.steps_run * config.batch
    provenance = {
        "identities": [{"key": p.key, "capture": p.capture, "appearance": p.appearance, "sha256": p.digest, "phenotype": p.phenotype}
                       for p in people],  # fmt: skip
        "steps": config.engine.steps, "steps_run": result.steps_run, "seed": seed, "batch": config.batch,
        "rays_per_step": config.rays_per_step, "processes": dist.world, "seconds": result.seconds,
        "samples_per_s": samples / result.seconds if result.seconds > 0 else float("nan"),
        "train_psnr_body": result.train_psnr, "lr": config.lr,
        "synthetic": {"count": config.synthetic.count, "cameras": config.synthetic.cameras,
                      "frames": config.synthetic.frames, "size": config.synthetic.size,
                      "ages": [config.synthetic.min_age, config.synthetic.max_age], "motions": list(MOTIONS)},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "perennial": _version(),
    }  # fmt: skip
    barrier(dist)  # every rank has read the checkpoint (on --resume) before rank 0 removes it
    if dist.writer:
        write_prior(out, shared_tensors(shared.corrector, shared.field), field_config, provenance)
        shutil.rmtree(ckpt, ignore_errors=True)
    barrier(dist)
    return result, provenance


def _version() -> str:
    from perennial import __version__

    return __version__
