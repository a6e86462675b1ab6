"""A meta-learned starting point for new appearances (MCL-NF's shared initialisation, by Reptile).

An avatar learns a new outfit by fitting the new appearance's own parameters (field
avatars: geometry and colour codes and the tri-plane; texture avatars: the neural
texture and the latent) while the shared networks stay frozen (the ``fast`` learn).
Which values those parameters start from decides how fast few images are fitted.
Here they start from a *prior* learned across many outfits on this avatar's body:

    for each iteration i:  pick an outfit task t (5 training images of a procedural
        outfit, :func:`perennial.capture.synth.synthesize` on the avatar's phenotype);
        theta <- prior;  `inner_steps` Adam steps on t, only theta moves
        (the method's ``fast`` preset: shared networks frozen);
        prior <- prior + eps_i (theta - prior)          (Reptile, first order)

with ``eps_i`` decaying linearly from ``outer_lr`` to 0. The inner steps run in the
training engine with the groups and terms the method makes for a ``learn``
(``Method.prepare``), so the prior is learned exactly as it will be used. The prior
is stored in the avatar (``prior.*`` tensors, ``state.json: prior``) and every new
appearance starts from it. Tasks are synthetic outfits (pattern, colour and cut vary
by name), rendered on the avatar's own phenotype in several built-in motions.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from perennial.config import override
from perennial.errors import ConfigError
from perennial.learn.engine import train
from perennial.progress import progress as progress_bar

__all__ = ["MetaConfig", "meta_learn_prior"]

MOTIONS = ("walk", "wave", "squat", "turn")


@dataclass(kw_only=True)
class MetaConfig:
    """Meta-learning of the starting point of new appearances (Reptile over synthetic outfits)."""

    iterations: int = 48
    """Outer Reptile steps (0: no prior; new appearances start from scratch)."""
    tasks: int = 12
    """Synthetic outfits in the task pool (each 8 cameras x 2 frames, 5 training views)."""
    inner_steps: int = 40
    """Adam steps on one task per outer step."""
    inner_lr: float = 5e-3
    """Adam learning rate of the inner steps."""
    outer_lr: float = 0.5
    """Reptile step size at the first outer step (decays linearly to 0)."""
    task: dict = field(default_factory=dict)
    """Settings of the method's ``fast`` preset changed for the inner steps (e.g. ``{"rays_per_step": 1024}``)."""
    size: int = 128
    """Image size of the task captures, pixels."""
    task_seed: int = 0
    """Seed of the task outfits and of the sampling."""

    def __post_init__(self) -> None:
        for k, lo in (("iterations", 0), ("tasks", 1), ("inner_steps", 1), ("size", 32)):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < lo:
                raise ConfigError(f"meta {k} must be an integer >= {lo}, got {getattr(self, k)!r}")
        if not (self.inner_lr > 0 and 0 < self.outer_lr <= 1):
            raise ConfigError(f"meta: need inner_lr > 0 and outer_lr in (0, 1], got {self.inner_lr}, {self.outer_lr}")


def _tasks(phenotype: dict, config: MetaConfig, folder: Path, progress: bool) -> list:
    from perennial.capture.synth import SynthConfig, synthesize

    caps = []
    for i in progress_bar(range(config.tasks), desc="meta: synthesising outfits", unit="outfit", enabled=progress):
        cfg = SynthConfig(appearance=f"meta-{config.task_seed}-{i}", cameras=8, frames=2, size=config.size,
                          motion=MOTIONS[i % len(MOTIONS)], seed=config.task_seed + i, supersample=2,
                          test_camera_every=3, test_frame_every=2, phenotype=dict(phenotype))  # fmt: skip
        caps.append(synthesize(folder / f"t{i}", cfg, progress=False))
    return caps


def meta_learn_prior(avatar, method, config: MetaConfig, progress: bool = True) -> dict:
    """Learn ``avatar.prior`` (created if missing) by Reptile; the rest of the avatar is unchanged.

    Args:
        avatar: a field or texture avatar (``add_appearance``, ``remove_appearance``, ``ensure_prior``).
        method: its :class:`~perennial.learn.methods.Method` (``prepare`` and the ``fast`` preset).
        config: the meta-learning settings.

    Returns:
        What was done: ``{"iterations", "tasks", "inner_steps", "seconds"}`` (for ``state.json``).
    """
    t0 = time.perf_counter()
    prior = avatar.ensure_prior()
    g = torch.Generator().manual_seed(config.task_seed)
    task = override(method.presets["fast"](), {**config.task, "steps": config.inner_steps, "seconds": 0.0,
                                               "checkpoint_every": 0, "lr_final": 1.0})  # fmt: skip
    task.lr = {k: (config.inner_lr if k == "appearance" else 0.0) for k in task.lr}
    name = "meta-task"
    while name in avatar.appearance_names:  # never the name of one of the avatar's own appearances
        name += "-"
    with tempfile.TemporaryDirectory() as tmp:
        caps = _tasks(avatar.phenotype, config, Path(tmp), progress)
        data = [(cap, cap.read_split("train")[0]) for cap in caps]
        bar = progress_bar(range(config.iterations), desc="meta: learning the prior", unit="step", enabled=progress)
        for i in bar:
            cap, pixels = data[int(torch.randint(len(data), (1,), generator=g))]
            try:
                groups, terms = method.prepare(avatar, name, cap, pixels, [], {}, task)  # starts from the prior
                task.engine.seed = config.task_seed + 1000 * i
                train(avatar, groups, terms, task.loss_weights, task.engine, progress=False)
                eps = config.outer_lr * (1 - i / config.iterations)
                with torch.no_grad():
                    for p_prior, p_task in zip(prior.parameters(), avatar.appearance(name).parameters()):
                        p_prior.add_(p_task - p_prior, alpha=eps)  # Reptile: prior <- prior + eps (theta - prior)
            finally:
                if name in avatar.appearance_names:
                    avatar.remove_appearance(name)
    avatar.eval()
    return {"iterations": config.iterations, "tasks": config.tasks, "inner_steps": config.inner_steps,
            "seconds": time.perf_counter() - t0}  # fmt: skip
