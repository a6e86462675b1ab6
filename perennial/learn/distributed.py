"""Data-parallel training across processes: torch.distributed set-up, the identity split, launching.

A run with ``W`` processes (ranks) is started by ``torchrun`` (or ``perennial pretrain --nproc W``,
which runs torchrun): every rank holds the whole model, draws its share of each step's identities
(:func:`identities_for`), and torch's :class:`~torch.nn.parallel.DistributedDataParallel` averages
the gradients over the ranks during the backward pass, so every rank takes the same optimiser step.
With equal shares, that average equals the gradient of one process that sees the whole global batch
(the mean over identities), which ``tests/test_pretrain.py`` checks.

Backends: ``gloo`` on CPU, ``nccl`` when the run's device is CUDA. Multi-node runs use torchrun's
standard rendezvous flags (``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``, ...); only one node is
tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from perennial.errors import ConfigError

__all__ = ["Dist", "barrier", "identities_for", "init", "launch", "shutdown"]


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a run: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def writer(self) -> bool:
        """Rank 0 writes checkpoints, the prior and progress; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init(device: str = "auto") -> Dist:
    """Join the process group torchrun set up (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``
    in the environment); without them, a single process.

    Args:
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available). A CUDA rank uses the GPU of its
            ``LOCAL_RANK`` and the ``nccl`` backend; a CPU rank uses ``gloo``.

    Raises:
        ConfigError: an unknown device, or ``cuda`` without a GPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, "cuda" if cuda else "cpu")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = "cpu"
    if cuda:
        torch.cuda.set_device(local)
        dev = f"cuda:{local}"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, dev)


def barrier(dist: Dist) -> None:
    """Wait for every rank (nothing in a single process)."""
    if dist.distributed:
        torch.distributed.barrier()


def shutdown(dist: Dist) -> None:
    if dist.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def identities_for(step: int, count: int, batch: int, rank: int, world: int, seed: int) -> list[int]:
    """The identities rank ``rank`` trains on at ``step``, like ``DistributedSampler`` without state.

    The identities are visited epoch after epoch, each epoch in its own seeded order; step ``s`` takes
    positions ``s * batch ... (s + 1) * batch - 1`` of that endless sequence (the global batch) and
    rank ``r`` takes every ``world``-th of them from the ``r``-th. So the ranks' shares of a step are
    disjoint, their union is the global batch whatever ``world`` is, and a resumed run draws the
    same identities as an uninterrupted one (the draw is a function of the step).

    Raises:
        ConfigError: ``batch`` is not a positive multiple of ``world``.
    """
    if batch < 1 or batch % world:
        raise ConfigError(f"identities per step ({batch}) must be a positive multiple of the number of "
                          f"processes ({world})")  # fmt: skip
    out = []
    for pos in range(step * batch + rank, (step + 1) * batch, world):
        epoch, i = divmod(pos, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(int(order[i]))
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``perennial <argv>`` in ``nproc`` processes with torchrun on this machine; its exit code.

    The ``--nproc`` option is how a user asks for this; ``argv`` must not contain it again.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "perennial.cli", *argv]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)
