"""Motion Distribution Align (RAM-Avatar §3.3): driving poses moved into an avatar's training poses.

What "inside the training distribution" means here. An avatar's capture is usually narrow (a
person standing and waving: one forearm and the head move, the legs never do), so the joint
distribution of its training poses is a thin curve: a decoder that must return poses *on* it
maps every driving pose to some training pose and loses the motion (a first version did: the
output collapsed to the training mean, with correlations near 0 and a jerk several times the
input's). The avatar itself (skinning per bone, pose-conditioned networks) generalises to new
*combinations* of per-bone rotations it has seen; what it renders badly are rotations outside the
range a bone was trained with. So alignment works per bone, on the *marginal* range:

- :class:`PoseRange` (from the training poses only): per bone, the mean rotation vector, the
  principal axes of its variation and, along each axis, the interval the training poses span.
  An axis along which the bone moved less than ``still`` (std, radians) is pinned to the mean.
- The aligned pose is the driving pose's *projection* onto those boxes: a coordinate inside its
  interval is kept exactly (the limbs the training set moves follow the driving motion), one
  outside it is clamped to the border (pinned axes: to the mean). With ``margin`` m > 0 the clamp
  is soft: the excess is squashed to at most m radians beyond the border (``hi + m tanh((c -
  hi) / m)``, C2 at the border), for an avatar trusted to extrapolate a little. The default is
  the hard clamp: measured on ``bench ood``'s motions it has the lowest jerk of all margins (a
  pinned axis does not move at all, where a soft margin turns a large swing into a small,
  square-wave-like one with steep turns) and the smallest distance to the training poses.
- The avatar-specific conditional decoder of the issue is an option
  (``AlignConfig.decoder``): it sees the frozen prior encoder's latents of the current and the
  previous driving pose (as ``z_t`` and ``z_t - z_{t-1}``) and the driving pose itself, and
  returns a per-bone residual rotation vector added to the driving pose. It is trained only on
  the avatar's training poses, made into inputs by swapping limbs for those of poses of the
  shipped retrieval bank and adding noise (:func:`training_inputs`), with the projection of
  each input as its target (:func:`train_aligner`); its output passes once more through the
  projection, so it stays within ``margin`` of the training range whatever its error.
  It is off by default because, measured, it is a coarse copy of the projection it learns: on
  held-out inputs it removes 36 % of the distance to the target (1500 steps), on the poses of
  ``bench ood`` it leaves 0.03-0.07 rad per bone, and that error, smooth in the pose but not
  along a motion, made the jerk of walk and squat 4-7 times the projection's. With a narrow
  training set the latents carry nothing the projection lacks; a decoder has something to learn
  only where the training poses are broad enough for a joint (not per-bone) notion of "in
  distribution", which ``bench ood`` does not test.

With the default, alignment is the projection alone: deterministic, instant, and a pose
inside the training range comes back unchanged.

The root's orientation and the translation are the motion's: alignment changes the body's
articulation only. The decoder's training takes seconds to a minute (``AlignConfig.steps``);
:func:`aligner_for` caches an aligner per (prior, training poses, config) in memory.

:func:`jerk` measures smoothness: the mean magnitude of the third time derivative of the joint
positions (root fixed), m/s^3.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import roma
import torch
from torch import Tensor, nn

from perennial.errors import ConfigError, PerennialError
from perennial.motion.prior import PoseFK, PosePrior, default_prior

__all__ = [
    "AlignConfig",
    "MotionAligner",
    "PoseRange",
    "aligner_for",
    "jerk",
    "train_aligner",
    "training_inputs",
]


@dataclass(kw_only=True)
class AlignConfig:
    """Motion Distribution Align: the per-bone range projection and the optional conditional decoder."""

    decoder: bool = False
    """Pass the driving pose through the learned conditional decoder before the projection. Off by
    default: measured on ``bench ood``'s test poses (margin 0.3), the decoder reproduces the projection only
    to 0.03-0.07 rad per bone, and that error, smooth in the pose but not along a motion, made the jerk of
    walk and squat 4-7 times the projection's."""
    hidden: int = 256
    """Width of the decoder's two hidden layers."""
    steps: int = 1500
    """Adam steps of its training on the avatar's training poses."""
    batch: int = 256
    """Training inputs per step."""
    pool: int = 16384
    """Augmented training inputs drawn (and encoded) once, before the steps."""
    lr: float = 2e-3
    """Adam learning rate at the start (decays to a tenth)."""
    still: float = 0.03
    """A bone's rotation vector counts as not moved along a principal axis whose training std is under
    this (radians): that axis is pinned to the training mean."""
    margin: float = 0.0
    """How far beyond its training interval a coordinate may go, radians (soft: the excess is squashed by
    ``margin * tanh(excess / margin)``); 0 clamps hard (default)."""
    swap: float = 0.5
    """In a training input, probability with which each limb (arms, legs, trunk, hands) is replaced by the
    same limb of a random pose of the retrieval bank."""
    noise: float = 0.5
    """Std of the per-bone Gaussian noise added to training inputs, radians (scaled per input by a uniform
    draw in [0, 1], so that clean and far-off inputs are both seen)."""
    seed: int = 0
    """Seed of the initialisation and of the draws."""

    def __post_init__(self) -> None:
        for k in ("hidden", "steps", "batch", "pool"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be an integer >= 1, got {v!r}")
        if not (
            self.lr > 0
            and self.noise >= 0
            and self.still >= 0
            and self.margin >= 0
            and 0 <= self.swap <= 1
        ):
            raise ConfigError("need lr > 0, noise >= 0, still >= 0, margin >= 0 and 0 <= swap <= 1")


class PoseRange(nn.Module):
    """Per-bone marginal range of training poses: mean rotation vector, principal axes, interval per axis."""

    def __init__(self, poses: Tensor, still: float) -> None:
        """``poses`` (F, J, 3) rotation vectors (the root's is ignored); ``still`` radians (std)."""
        super().__init__()
        rv = poses.float().clone()
        rv[:, 0] = 0
        mean = rv.mean(0)
        d = rv - mean
        cov = (
            torch.einsum("fjk,fjl->jkl", d, d) / rv.shape[0]
        )  # cov[j, k, l] = mean_f d[f, j, k] d[f, j, l]
        axes = torch.linalg.eigh(
            cov
        ).eigenvectors  # axes[j] columns: principal directions of bone j
        c = torch.einsum(
            "fjk,jkd->fjd", d, axes
        )  # c[f, j, d] = sum_k (rv - mean)[f, j, k] axes[j, k, d]
        moved = (
            c.std(0, unbiased=False) >= still
            if rv.shape[0] > 1
            else torch.zeros_like(mean, dtype=torch.bool)
        )
        moved[0] = False
        self.register_buffer("mean", mean)
        self.register_buffer("axes", axes)
        self.register_buffer("lo", torch.where(moved, c.min(0).values, torch.zeros_like(mean)))
        self.register_buffer("hi", torch.where(moved, c.max(0).values, torch.zeros_like(mean)))
        self.register_buffer("moved", moved)

    def coords(self, rotvec: Tensor) -> Tensor:
        """(B, J, 3) poses -> (B, J, 3) coordinates along each bone's principal axes (about the mean)."""
        return torch.einsum("bjk,jkd->bjd", rotvec - self.mean, self.axes)

    def project(self, rotvec: Tensor, margin: float) -> Tensor:
        """Soft projection of poses (B, J, 3) onto the per-bone boxes; the root's rotation is kept."""
        c = self.coords(rotvec)
        if margin > 0:
            up = self.hi + margin * torch.tanh((c - self.hi).clamp_min(0) / margin)
            down = self.lo - margin * torch.tanh((self.lo - c).clamp_min(0) / margin)
            c = torch.where(c > self.hi, up, torch.where(c < self.lo, down, c))
        else:
            c = torch.minimum(torch.maximum(c, self.lo), self.hi)
        out = self.mean + torch.einsum("bjd,jkd->bjk", c, self.axes)
        out[:, 0] = rotvec[:, 0]
        return out


class MotionAligner(nn.Module):
    """Frozen prior encoder + conditional decoder ``(z_t, z_t - z_{t-1}, pose_t) -> pose_t + residual``."""

    def __init__(
        self, prior: PosePrior, pose_range: PoseRange, config: AlignConfig | None = None
    ) -> None:
        super().__init__()
        self.config = c = config or AlignConfig()
        object.__setattr__(self, "prior", prior)  # frozen and shared: not a submodule
        self.range = pose_range
        L, J = prior.config.latent, pose_range.mean.shape[0]
        act = nn.LeakyReLU(0.1)
        self.decoder = nn.Sequential(nn.Linear(2 * L + 3 * (J - 1), c.hidden), act, nn.Linear(c.hidden, c.hidden),
                                     act, nn.Linear(c.hidden, 3 * (J - 1)))  # fmt: skip
        nn.init.normal_(self.decoder[-1].weight, std=1e-3)
        nn.init.zeros_(self.decoder[-1].bias)

    def decode(self, rotvec: Tensor, z: Tensor, z_prev: Tensor) -> Tensor:
        """Driving poses (B, J, 3) and their latents (B, L) and previous latents -> poses (B, J, 3), root kept."""
        x = rotvec[:, 1:].reshape(rotvec.shape[0], -1)
        res = self.decoder(torch.cat([z, z - z_prev, x - self.range.mean[1:].reshape(-1)], -1))
        out = rotvec.clone()
        out[:, 1:] = rotvec[:, 1:] + res.reshape(rotvec.shape[0], -1, 3)
        return out

    @torch.no_grad()
    def align(self, rotvec: Tensor) -> Tensor:
        """A motion's poses (F, J, 3) moved into the training distribution; root rotation kept."""
        if rotvec.ndim != 3 or rotvec.shape[0] < 1:
            raise PerennialError(
                f"align: poses must be (F, J, 3) with F >= 1, got {tuple(rotvec.shape)}"
            )
        rv = rotvec.float()
        if self.config.decoder:
            mu = self.prior.encode(rv)[0]
            rv = self.decode(rv, mu, torch.cat([mu[:1], mu[:-1]]))
        return self.range.project(rv, self.config.margin)


def train_aligner(
    prior: PosePrior, poses: Tensor, config: AlignConfig | None = None
) -> MotionAligner:
    """Train the conditional decoder on an avatar's training poses (F, J, 3), in capture order.

    Raises:
        PerennialError: fewer than 2 poses.
    """
    c = config or AlignConfig()
    if poses.ndim != 3 or poses.shape[0] < 2:
        raise PerennialError(f"align: need at least 2 training poses, got {tuple(poses.shape)}")
    torch.manual_seed(c.seed)
    g = torch.Generator().manual_seed(c.seed)
    rv = poses.float().clone()
    rv[:, 0] = 0
    aligner = MotionAligner(prior, PoseRange(rv, c.still), c)
    if not c.decoder:
        return aligner.eval()
    # a pool of augmented inputs, encoded once (the encoder is frozen), with their projections as targets
    with torch.no_grad():
        x, xp = training_inputs(rv, c, c.pool, g)
        z, zp = prior.encode(x)[0], prior.encode(xp)[0]
        target = aligner.range.project(x, c.margin)
    opt = torch.optim.Adam(aligner.decoder.parameters(), lr=c.lr)
    for step in range(c.steps):
        for group in opt.param_groups:
            group["lr"] = c.lr * 0.1 ** (step / max(c.steps - 1, 1))
        i = torch.randint(c.pool, (c.batch,), generator=g)
        loss = (aligner.decode(x[i], z[i], zp[i]) - target[i])[:, 1:].square().sum((1, 2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return aligner.eval()


def training_inputs(
    poses: Tensor, config: AlignConfig, n: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` augmented decoder inputs (n, J, 3) at t and t - 1, root zero: random training poses (and the
    pose before each, in capture order) with the same limbs swapped for a bank pose's (and the bank row
    before it) and the same per-bone noise (plus a tenth of it drawn anew for t - 1)."""
    c, g = config, generator
    rv = poses.float().clone()
    rv[:, 0] = 0
    idx = torch.randint(rv.shape[0], (n,), generator=g)
    x, xp = rv[idx].clone(), rv[(idx - 1).clamp_min(0)].clone()
    if c.swap > 0:
        bank = _bank_poses()
        d = torch.randint(1, bank.shape[0], (n,), generator=g)
        for bones in _parts():
            on = (torch.rand(n, generator=g) < c.swap)[:, None, None]
            x[:, bones] = torch.where(on, bank[d][:, bones], x[:, bones])
            xp[:, bones] = torch.where(on, bank[d - 1][:, bones], xp[:, bones])
    scale = c.noise * torch.rand(n, 1, 1, generator=g)
    eps = torch.randn(x.shape, generator=g) * scale
    x, xp = x + eps, xp + eps + 0.1 * torch.randn(x.shape, generator=g) * scale
    x[:, 0] = xp[:, 0] = 0
    return x, xp


def _parts() -> list[list[int]]:
    """Bone lists of the limbs (arms, legs, trunk, hands) swapped in training inputs."""
    from perennial.motion.retrieval import SWAP_PARTS, part_bones

    return [list(part_bones(p)) for p in SWAP_PARTS if p != "face"]


def _bank_poses() -> Tensor:
    import numpy as np

    from perennial.motion.retrieval import DEFAULT_BANK

    with np.load(DEFAULT_BANK, allow_pickle=False) as z:
        return torch.from_numpy(z["rotvec"].astype(np.float32))


_CACHE: dict[str, MotionAligner] = {}


def aligner_for(
    poses: Tensor, prior: PosePrior | None = None, config: AlignConfig | None = None
) -> MotionAligner:
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
