"""What every pretraining method builds (:mod:`perennial.learn.pretrain`): identities and the run's parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from perennial.errors import ConfigError

__all__ = ["Identity", "Pretraining", "read_people"]


@dataclass
class Identity:
    """One person in pretraining: where it comes from, its avatar, and its losses at a step.

    ``losses(step, seed)`` draws from the torch generator and from ``generator_state(seed)`` only."""

    key: str
    capture: str
    appearance: str
    digest: str
    phenotype: dict
    losses: Callable[[int, int], dict[str, Tensor]]
    avatar: nn.Module
    """The identity's avatar: its own body, the run's shared networks."""


@dataclass
class Pretraining:
    """What a method contributes to a pretraining run."""

    shared: nn.Module
    """Every parameter the run learns (shared parts and the identities' appearances)."""
    people: list[Identity]
    groups: dict[str, tuple[list, float]]
    """The engine's parameter groups."""
    tensors: Callable[[], dict[str, Tensor]]
    """The prior's tensors (:func:`~perennial.learn.prior_file.shared_tensors`), after training."""
    config: object
    """The avatar's shape (``FieldConfig`` or ``TextureConfig``), written into ``prior.json``."""


def read_people(paths: list[Path]):
    """The captures of ``paths`` and their (one) body template."""
    from perennial.body.anny import load_template
    from perennial.capture import read_capture

    captures = [read_capture(p) for p in paths]
    templates = {c.body_info["template"] for c in captures}
    if len(templates) != 1:
        raise ConfigError(f"every capture must use one body template, got {sorted(templates)}")
    return captures, load_template(templates.pop())
