"""Retrieval-augmented training (RAF, arXiv 2603.08645) as a policy of the training terms.

For every training frame the nearest neighbours of each of its parts (arms, legs, trunk,
hands, face; :data:`~perennial.motion.retrieval.SWAP_PARTS`) are looked up once in a bank
(:class:`~perennial.motion.retrieval.RetrievalBank`). On each step, each part of the drawn
frame's *conditioning* is, with probability ``fraction``, replaced by the same part of one of
its ``neighbours`` nearest bank entries, drawn at random; the target image stays the
frame's own. The conditioning is what the networks read about the pose, never the skinning
that places the body in the image:

- field avatars: the pose corrector's input (its residual is added to the frame's own pose);
- texture avatars: the poses of the hand map's finger lines and the facial actions of the face map.

The draws use the term's own generator (its state is checkpointed), so a resumed run draws the
same swaps; with ``fraction`` 0 nothing is drawn and training is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from perennial.errors import ConfigError
from perennial.motion.retrieval import BACKENDS, SWAP_PARTS, RetrievalBank, part_bones

__all__ = ["RetrievalConfig", "Retrieval", "attach"]


@dataclass(kw_only=True)
class RetrievalConfig:
    """Retrieval-augmented training: swap parts of the pose conditioning for a bank's nearest neighbours."""

    fraction: float = 0.0
    """Probability with which each part (arms, legs, trunk, hands, face) of a training frame's pose
    conditioning is swapped for a nearest neighbour's from the bank, in [0, 1]; 0: off."""
    neighbours: int = 8
    """Nearest bank entries per part to draw the swap from."""
    bank: str = ""
    """Motion bank (folder or .npz from 'motion import') to retrieve from; empty: the CMU poses shipped
    with the package."""
    backend: str = "faiss"
    """Nearest-neighbour library: faiss (exact; fastest here), hnswlib, usearch or torch."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"retrieval fraction must be in [0, 1], got {self.fraction!r}")
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ConfigError(f"retrieval neighbours must be an integer >= 1, got {self.neighbours!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"retrieval backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


_BANKS: dict[tuple[str, str], RetrievalBank] = {}


def _bank(config: RetrievalConfig) -> RetrievalBank:
    key = (config.bank, config.backend)
    if key not in _BANKS:
        _BANKS[key] = RetrievalBank.load(config.bank or None, config.backend)
    return _BANKS[key]


class Retrieval:
    """The swap policy over a fixed set of training frames.

    Args:
        config: fraction, neighbours, bank.
        frames: key -> (rotvec (J, 3), facial actions (52,) or None) of every training frame.
        bank: the bank (built from ``config`` when None).
    """

    def __init__(self, config: RetrievalConfig, frames: dict, bank: RetrievalBank | None = None) -> None:
        self.config, self.bank = config, bank or _bank(config)
        keys = list(frames)
        rv = torch.stack([frames[k][0] for k in keys]).float()
        faces = [frames[k][1] for k in keys]
        self.neighbours: dict[str, dict] = {}
        for part in SWAP_PARTS:
            if part == "face":
                if any(f is None for f in faces):
                    continue  # no facial actions in the capture: the face map reads none
                ids = self.bank.neighbours(part, None, torch.stack(faces).float(), config.neighbours)
            else:
                ids = self.bank.neighbours(part, rv, None, config.neighbours)
            self.neighbours[part] = dict(zip(keys, ids))

    def __call__(self, key, rotvec: Tensor, facial: Tensor | None, g: torch.Generator):
        """The conditioning of frame ``key``: (rotvec (J, 3), facial (52,) or None) with parts swapped."""
        draws = torch.rand(len(SWAP_PARTS), generator=g)
        picks = torch.randint(self.config.neighbours, (len(SWAP_PARTS),), generator=g)
        rv, fa = rotvec.clone(), facial
        for part, u, j in zip(SWAP_PARTS, draws.tolist(), picks.tolist()):
            if u >= self.config.fraction or part not in self.neighbours:
                continue
            ids = self.neighbours[part][key]
            b = int(ids[min(j, len(ids) - 1)])
            if part == "face":
                fa = self.bank.facial[b].to(rotvec.dtype)
            else:
                bones = list(part_bones(part))
                rv[bones] = self.bank.rotvec[b, bones].to(rv.dtype)
        return rv, fa


def attach(term, config: RetrievalConfig | None, frames: dict) -> Callable | None:
    """Give ``term`` (a field ``Photometric`` or texture ``ImageCrops``) the swap policy when the
    fraction is above 0; returns the policy or None."""
    if config is None or config.fraction == 0:
        return None
    term.condition = Retrieval(config, frames)
    return term.condition
