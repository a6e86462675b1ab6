"""Motion Distribution Align (RAM-Avatar §3.3): driving poses moved into an avatar's training poses.

The pose prior's encoder (:mod:`perennial.motion.prior`), frozen, reads the meaning of a
pose; an avatar-specific *conditional decoder* takes the latent of the current and of the
previous driving pose and returns a pose inside the avatar's training distribution.

The decoder is trained on the avatar's own training poses only: for each training pose
``t`` (and the one before it, ``t - 1``, in capture order) latents are drawn from the
frozen posterior, its standard deviation widened by ``noise``, and the decoder must
return pose ``t``. Every latent it learns from thus maps to a training pose, so a
driving pose whose latent lies near the training poses' keeps its meaning, and one far
from them is pulled towards them (the limbs the training set never moved stay near
their training range). The root's orientation and the translation are the motion's:
alignment changes the body's articulation only.

Training takes a few seconds (``AlignConfig.steps``); :func:`aligner_for` caches an
aligner per (prior, training poses) in memory, so rendering or viewing with alignment
trains it once per process.

:func:`jerk` measures smoothness: the mean magnitude of the third time derivative of
the joint positions (root fixed), m/s^3.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import roma
import torch
from torch import Tensor, nn

from perennial.errors import ConfigError, PerennialError
from perennial.motion.prior import PoseFK, PosePrior, default_prior, from_6d

__all__ = ["AlignConfig", "MotionAligner", "aligner_for", "jerk", "train_aligner"]


@dataclass(kw_only=True)
class AlignConfig:
    """The avatar-specific conditional decoder of Motion Distribution Align."""

    hidden: int = 256
    """Width of the decoder's two hidden layers."""
    steps: int = 1500
    """Adam steps of its training on the avatar's training poses."""
    batch: int = 128
    """Training poses per step."""
    lr: float = 2e-3
    """Adam learning rate at the start (decays to a tenth)."""
    noise: float = 2.0
    """The posterior's standard deviation is widened by this factor when drawing training latents:
    the larger, the wider the neighbourhood of each training pose that maps onto it."""
    swap: float = 0.5
    """Probability with which each limb the training poses do not move (arms, legs, trunk, hands: rotation
    std under ``still`` radians) is replaced, in a training input, by the same limb of a random pose of the
    retrieval bank; the target stays the training pose, so the decoder learns to ignore what those limbs
    do and to follow the limbs the avatar was trained with (0: off)."""
    still: float = 0.05
    """A limb whose bones' rotation vectors vary less than this (std, radians) over the training poses
    counts as not moved."""
    seed: int = 0
    """Seed of the initialisation and of the draws."""

    def __post_init__(self) -> None:
        for k in ("hidden", "steps", "batch"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and self.noise >= 0):
            raise ConfigError("need lr > 0 and noise >= 0")


class MotionAligner(nn.Module):
    """Frozen prior encoder + conditional decoder ``(z_t, z_{t-1}) -> pose``."""

    def __init__(self, prior: PosePrior, config: AlignConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AlignConfig()
        object.__setattr__(self, "prior", prior)  # frozen and shared: not a submodule
        L, n = prior.config.latent, prior.decoder[-1].out_features
        act = nn.LeakyReLU(0.1)
        self.decoder = nn.Sequential(nn.Linear(2 * L, c.hidden), act, nn.Linear(c.hidden, c.hidden), act,
                                     nn.Linear(c.hidden, n))  # fmt: skip
        nn.init.normal_(self.decoder[-1].weight, std=1e-3)
        nn.init.zeros_(self.decoder[-1].bias)

    def decode(self, z: Tensor, z_prev: Tensor) -> Tensor:
        """(B, L) latents of the current and previous pose -> (B, J, 3, 3) rotations (root identity)."""
        R = from_6d((self.decoder(torch.cat([z, z_prev], -1)) + self.prior.identity).reshape(z.shape[0], -1, 6))
        return torch.cat([torch.eye(3).expand(z.shape[0], 1, 3, 3), R], 1)

    @torch.no_grad()
    def align(self, rotvec: Tensor) -> Tensor:
        """A motion's poses (F, J, 3) moved into the training distribution; root rotation kept."""
        if rotvec.ndim != 3 or rotvec.shape[0] < 1:
            raise PerennialError(f"align: poses must be (F, J, 3) with F >= 1, got {tuple(rotvec.shape)}")
        mu = self.prior.encode(rotvec.float())[0]
        prev = torch.cat([mu[:1], mu[:-1]])
        out = roma.rotmat_to_rotvec(self.decode(mu, prev))
        out[:, 0] = rotvec[:, 0]
        return out


def train_aligner(prior: PosePrior, poses: Tensor, config: AlignConfig | None = None) -> MotionAligner:
    """Train the conditional decoder on an avatar's training poses (F, J, 3), in capture order.

    Raises:
        PerennialError: fewer than 2 poses.
    """
    c = config or AlignConfig()
    if poses.ndim != 3 or poses.shape[0] < 2:
        raise PerennialError(f"align: need at least 2 training poses, got {tuple(poses.shape)}")
    torch.manual_seed(c.seed)
    g = torch.Generator().manual_seed(c.seed)
    aligner = MotionAligner(prior, c)
    rv = poses.float().clone()
    rv[:, 0] = 0
    still = _still_parts(rv, c.still) if c.swap > 0 else []
    bank = _bank_poses() if still else None
    target = roma.rotvec_to_rotmat(rv)
    prev = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(rv.shape[0] - 1)])
    opt = torch.optim.Adam(aligner.decoder.parameters(), lr=c.lr)

    def latents(idx: Tensor) -> Tensor:
        x = rv[idx]
        if bank is not None:  # limbs the avatar never moved take a random bank pose's
            x = x.clone()
            donor = bank[torch.randint(bank.shape[0], (len(idx),), generator=g)]
            for bones in still:
                on = torch.rand(len(idx), generator=g) < c.swap
                x[:, bones] = torch.where(on[:, None, None], donor[:, bones], rv[idx][:, bones])
        with torch.no_grad():
            mu, logvar = prior.encode(x)
        return mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp() * c.noise

    for step in range(c.steps):
        for group in opt.param_groups:
            group["lr"] = c.lr * 0.1 ** (step / max(c.steps - 1, 1))
        idx = torch.randint(rv.shape[0], (c.batch,), generator=g)
        z, zp = latents(idx), latents(prev[idx])
        loss = (aligner.decode(z, zp)[:, 1:] - target[idx, 1:]).square().sum((1, 2, 3)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return aligner.eval()


def _still_parts(poses: Tensor, still: float) -> list[list[int]]:
    """Bone lists of the limbs (arms, legs, trunk, hands) the poses (F, J, 3) do not move."""
    from perennial.motion.retrieval import SWAP_PARTS, part_bones

    out = []
    for part in SWAP_PARTS:
        if part != "face":
            bones = list(part_bones(part))
            if float(poses[:, bones].std(0).max()) < still:
                out.append(bones)
    return out


def _bank_poses() -> Tensor:
    import numpy as np

    from perennial.motion.retrieval import DEFAULT_BANK

    with np.load(DEFAULT_BANK, allow_pickle=False) as z:
        return torch.from_numpy(z["rotvec"].astype(np.float32))


_CACHE: dict[str, MotionAligner] = {}


def aligner_for(poses: Tensor, prior: PosePrior | None = None, config: AlignConfig | None = None) -> MotionAligner:
    """The aligner of an avatar's training poses (trained on first use, then cached in memory)."""
    prior = prior or default_prior()
    c = config or AlignConfig()
    h = hashlib.sha256(poses.float().contiguous().numpy().tobytes())
    h.update(repr((id(prior), c)).encode())
    key = h.hexdigest()
    if key not in _CACHE:
        _CACHE[key] = train_aligner(prior, poses, c)
    return _CACHE[key]


def jerk(rotvec: Tensor, fps: float, fk: PoseFK | None = None) -> float:
    """Mean |d^3 x / dt^3| of the joint positions of poses (F, J, 3) at ``fps`` (root fixed), m/s^3."""
    if rotvec.shape[0] < 4:
        return float("nan")
    fk = fk or PoseFK()
    rv = rotvec.float().clone()
    rv[:, 0] = 0
    with torch.no_grad():
        x = fk(roma.rotvec_to_rotmat(rv))
    d3 = x[3:] - 3 * x[2:-1] + 3 * x[1:-2] - x[:-3]
    return float(d3.norm(dim=-1).mean()) * fps**3
