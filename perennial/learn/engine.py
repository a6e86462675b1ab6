"""The one training loop: every method (field, texture, ...) and every strategy runs here.

A run is described by data, never by a name the loop could branch on:

- **parameter groups**: ``{group name: (parameters, learning rate)}``; a group with
  learning rate 0 is frozen. Names are the keys of a config's ``lr`` dict, so a
  misspelt group raises.
- **terms**: objects that each produce some named losses (:class:`Term`). A term
  is a *policy with explicit state*: ``losses, state = term(step, state)``; its
  state (e.g. the state of its random generator) is a dict of tensors that the
  loop keeps and checkpoints, so a resumed run draws the same batches as an
  uninterrupted one.
- **loss weights**: ``{loss name: weight}``; the names must be exactly the union
  of the terms' ``losses`` (checked before the first step), and a step that
  returns an unknown or duplicated name raises.

The loop: learning rates decay exponentially from their start to ``lr_final``
times it; each step sums ``weight * loss`` over the losses the terms returned
(a term may return none on a step, e.g. replay every other step), takes one
Adam step, shows progress and writes a checkpoint (:mod:`perennial.learn.checkpoint`)
every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from perennial.errors import ConfigError, PerennialError
from perennial.learn.checkpoint import load_checkpoint, read_checkpoint_tag, save_checkpoint
from perennial.progress import progress as progress_bar
from perennial.util import psnr_from_mse

__all__ = ["EngineConfig", "Term", "TrainResult", "check_weights", "generator_state", "train"]


@dataclass(kw_only=True)
class EngineConfig:
    """The optimisation loop shared by every method and strategy."""

    steps: int = 6000
    """Optimisation steps (>= 1)."""
    lr_final: float = 0.1
    """Learning rates decay exponentially to this fraction of their start, in (0, 1]."""
    checkpoint_every: int = 500
    """Write a resumable checkpoint every n steps (0: never)."""
    seed: int = 0
    """Seed of every random draw of the run (batches, replay, distillation)."""
    monitor: str = "rgb"
    """Loss shown as PSNR in the progress bar and the summary (a mean squared error of colours)."""
    seconds: float = 0.0
    """Wall-clock budget of the run, seconds (0: none): the run stops at ``steps`` or when the
    budget is spent, whichever comes first, and the learning rates decay over whichever of the
    two is further along."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not 0 < self.lr_final <= 1:
            raise ConfigError(f"lr_final must be in (0, 1], got {self.lr_final!r}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every!r}")
        if not self.seconds >= 0:
            raise ConfigError(f"seconds must be >= 0, got {self.seconds!r}")


class Term(Protocol):
    """A source of losses with explicit state.

    Attributes:
        name: unique within a run; keys the term's state in checkpoints.
        losses: every loss name the term may return.
    """

    name: str
    losses: tuple[str, ...]

    def init_state(self, seed: int) -> dict[str, Tensor]:
        """The state before the first step."""
        ...

    def __call__(self, step: int, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Losses of this step (possibly none) and the state after it."""
        ...


@dataclass
class TrainResult:
    """What a run did: ``steps`` planned, ``steps_run`` that took an optimiser step,
    ``seconds`` of this process, ``steps_per_s`` and ``train_psnr`` (dB) of the
    monitored loss over the last 100 steps (``nan`` when it was never returned)."""

    steps: int
    steps_run: int
    seconds: float
    steps_per_s: float
    train_psnr: float

    def as_dict(self) -> dict:
        return {"steps": self.steps, "steps_run": self.steps_run, "seconds": self.seconds,
                "steps_per_s": self.steps_per_s, "train_psnr_body": self.train_psnr}  # fmt: skip


def generator_state(seed: int) -> dict[str, Tensor]:
    """The state of a fresh ``torch.Generator`` seeded with ``seed``, as a term's state."""
    return {"rng": torch.Generator().manual_seed(seed).get_state()}


def check_weights(terms: Sequence[Term], weights: dict[str, float]) -> None:
    """The weights name exactly the losses of the terms, and no two terms share a loss.

    Raises:
        ConfigError: naming the missing and the unknown loss names.
    """
    produced: dict[str, str] = {}
    for t in terms:
        for k in t.losses:
            if k in produced:
                raise ConfigError(f"loss {k!r} is produced by both {produced[k]!r} and {t.name!r}")
            produced[k] = t.name
    missing, unknown = sorted(set(produced) - set(weights)), sorted(set(weights) - set(produced))
    if missing or unknown:
        raise ConfigError(f"loss weights do not match the losses {sorted(produced)}: "
                          f"missing {missing}, unknown {unknown}")  # fmt: skip


def train(
    model: nn.Module,
    groups: dict[str, tuple[list[nn.Parameter], float]],
    terms: Sequence[Term],
    weights: dict[str, float],
    config: EngineConfig,
    checkpoint: Path | None = None,
    tag: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "training",
    writer: bool = True,
) -> TrainResult:
    """Optimise ``model`` (in place) with the losses of ``terms``.

    Args:
        model: everything the checkpoint saves and restores (all trained parameters
            must be in it).
        groups: named parameter groups and their starting learning rates.
        terms: the loss sources, called in order every step.
        weights: weight of every loss name (see :func:`check_weights`).
        config: steps, schedule, checkpoints, seed.
        checkpoint: folder of the resumable checkpoint (None: none).
        tag: JSON-able identity of the run (what is learned, how); a checkpoint
            of another run is refused on resume.
        resume: continue from ``checkpoint`` when it exists.
        progress: show progress (a bar on a terminal, lines in a log).
        desc: what the progress says is being done.
        writer: this process writes the checkpoints (in a distributed run only rank 0 does;
            every rank reads them on ``resume``).

    Raises:
        ConfigError: weights that do not match the losses; a group without parameters.
        PerennialError: a checkpoint of another run, or one that does not fit the model.
    """
    check_weights(terms, weights)
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise ConfigError(f"term names must be unique, got {names}")
    param_groups = []
    for name, (params, lr) in groups.items():
        if lr < 0:
            raise ConfigError(f"learning rate of group {name!r} must be >= 0, got {lr}")
        if lr > 0 and params:
            param_groups.append({"params": list(params), "lr": lr, "name": name})
    if not param_groups:
        raise ConfigError("nothing to train: every parameter group is empty or has learning rate 0")
    optim = torch.optim.Adam(param_groups)
    base = [g["lr"] for g in optim.param_groups]
    states = {t.name: t.init_state(config.seed + i) for i, t in enumerate(terms)}
    tag = tag or {}
    start = 0
    if resume and checkpoint is not None and (checkpoint / "state.json").exists():
        saved = read_checkpoint_tag(checkpoint)
        if saved != tag:
            raise PerennialError(f"{checkpoint / 'state.json'}: the checkpoint is of {saved}, not of {tag}; "
                                 "run without --resume to start over")  # fmt: skip
        start, states = load_checkpoint(checkpoint, model, optim, states)
    mse: list[float] = []
    steps_run = 0
    t0 = time.perf_counter()
    model.train()
    bar = progress_bar(range(start, config.steps), total=config.steps, initial=start, desc=desc,
                       unit="step", enabled=progress)  # fmt: skip
    # a frozen group (learning rate 0) gets no gradients: its weights' backward pass is skipped
    frozen = [p for params, lr in groups.values() if lr == 0 for p in params if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for step in bar:
            done = step / max(config.steps - 1, 1)
            if config.seconds:
                spent = (time.perf_counter() - t0) / config.seconds
                if spent >= 1:
                    break
                done = max(done, spent)
            decay = config.lr_final ** done
            for g, lr in zip(optim.param_groups, base):
                g["lr"] = lr * decay
            losses: dict[str, Tensor] = {}
            for term in terms:
                out, states[term.name] = term(step, states[term.name])
                unknown = [k for k in out if k not in term.losses or k in losses]
                if unknown:
                    raise ConfigError(f"term {term.name!r} returned unexpected losses {unknown}")
                losses.update(out)
            if losses:
                loss = sum(weights[k] * v for k, v in losses.items())
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                steps_run += 1
                if config.monitor in losses:
                    mse.append(float(losses[config.monitor].detach()))
                    if step % 10 == 0 or step == config.steps - 1:
                        recent = mse[-50:]
                        bar.set_postfix(loss=f"{float(loss.detach()):.4f}",
                                        psnr=f"{psnr_from_mse(sum(recent) / len(recent)):.2f}", refresh=False)  # fmt: skip
            if writer and checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                save_checkpoint(checkpoint, model, optim, step + 1, tag, states)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    recent = mse[-100:]
    return TrainResult(
        steps=config.steps,
        steps_run=steps_run,
        seconds=seconds,
        steps_per_s=steps_run / seconds if seconds > 0 else float("nan"),
        train_psnr=psnr_from_mse(sum(recent) / len(recent)) if recent else float("nan"),
    )
