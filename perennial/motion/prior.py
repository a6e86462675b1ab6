"""A pose prior: a variational autoencoder over Anny body and finger poses (VPoser-like).

The prior sees every bone but the root: the root's world orientation and position
are the motion's and are handled apart (alignment keeps them). A pose is the
``local-ref`` rotation of each of the 103 other bones (Anny's ``anny`` rig, fingers
and toes included), fed as the continuous 6-D representation (the first two columns
of each rotation matrix). The encoder gives the mean and log-variance of a
``latent``-dimensional Gaussian; the decoder returns 6-D rotations made orthonormal by
Gram-Schmidt.

Training (:func:`train_prior`) minimises, per pose, the squared Frobenius error of the
rotations, the squared error of the joint positions (forward kinematics of Anny's
identity skeleton with the root fixed, metres) and a KL term, over frames of any motion
bank (:mod:`perennial.motion.bank`). Whole clips are held out (every ``holdout``-th
clip) and the printed errors are on those: mean geodesic angle per bone (degrees, over
the body bones and over all bones) and mean joint position error (cm).

On disk (``perennial-pose-prior``, version 1): one safetensors file of the weights,
with the configuration and the training record as JSON in its metadata (no pickles).
The package ships a default prior (:func:`default_prior`) trained on the CMU samples,
which may be redistributed (see ``perennial/motion/data/README.md``).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import roma
import torch
from torch import Tensor, nn

from perennial.body.rig import ANNY_BONES, ANNY_PARENTS
from perennial.errors import ConfigError, PerennialError

__all__ = ["PRIOR_FORMAT", "PoseFK", "PosePrior", "PriorConfig", "default_prior", "load_prior",
           "load_training_poses", "pose_errors", "save_retrieval_bank", "train_prior"]  # fmt: skip

PRIOR_FORMAT = "perennial-pose-prior"
PRIOR_VERSION = 1
DEFAULT_PRIOR = Path(__file__).parent / "data" / "pose_prior.safetensors"
BODY_BONES = tuple(i for i, b in enumerate(ANNY_BONES)
                   if i > 0 and not b.startswith(("finger", "metacarpal", "toe", "eye")))  # fmt: skip
"""Bone ids of the body (no root, fingers, metacarpals, toes or eyes): the bones the degree error is
reported over first."""


@dataclass(kw_only=True)
class PriorConfig:
    """Shape and training of the pose prior (``perennial motion prior``)."""

    latent: int = 32
    """Length of the latent code."""
    hidden: int = 256
    """Width of the encoder's and decoder's two hidden layers."""
    steps: int = 3000
    """Adam steps."""
    batch: int = 256
    """Poses per step."""
    lr: float = 1e-3
    """Adam learning rate at the start; it decays to a tenth by the last step."""
    kl: float = 1e-2
    """Weight of the KL term (per latent dimension summed)."""
    joints: float = 2.0
    """Weight of the joint-position error (squared metres summed over joints)."""
    mirror: bool = True
    """Also train on every pose reflected left to right (twice the poses)."""
    holdout: int = 6
    """Every n-th clip of the bank is held out for the printed errors (0: none)."""
    fps: float = 30.0
    """Frames of a bank clip are taken at this rate, frames/s."""
    seed: int = 0
    """Seed of the initialisation and of the batches."""

    def __post_init__(self) -> None:
        for k in ("latent", "hidden", "steps", "batch"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be an integer >= 1, got {v!r}")
        if not (self.lr > 0 and self.kl >= 0 and self.joints >= 0 and self.fps > 0):
            raise ConfigError("need lr > 0, kl >= 0, joints >= 0 and fps > 0")
        if self.holdout < 0 or self.holdout == 1:
            raise ConfigError(f"holdout must be 0 or >= 2, got {self.holdout!r}")


def to_6d(rotvec: Tensor) -> Tensor:
    """(..., 3) rotation vectors -> (..., 6): the first two columns of the rotation matrix."""
    R = roma.rotvec_to_rotmat(rotvec)
    return R[..., :2].transpose(-1, -2).reshape(*rotvec.shape[:-1], 6)


def from_6d(x: Tensor) -> Tensor:
    """(..., 6) -> (..., 3, 3) rotation matrices (Gram-Schmidt on the two columns)."""
    return roma.special_gramschmidt(x.reshape(*x.shape[:-1], 2, 3).transpose(-1, -2))


class PoseFK(nn.Module):
    """Joint positions of Anny's identity skeleton posed by ``local-ref`` rotations, root fixed.

    ``G_c = G_p @ D_c`` and ``j_c = j_p + G_p (q_c - q_p)`` with ``q`` the identity-pose bone
    heads (:func:`perennial.motion.rest.rest_info`), evaluated one tree level at a time.
    """

    def __init__(self, joints: Tensor | None = None) -> None:
        super().__init__()
        if joints is None:
            from perennial.motion.rest import rest_info

            joints = torch.as_tensor(rest_info().joints, dtype=torch.float32)
        par = list(ANNY_PARENTS)
        depth = [0] * len(par)
        for c in range(1, len(par)):
            depth[c] = depth[par[c]] + 1
        self.levels = [[c for c in range(1, len(par)) if depth[c] == d] for d in range(1, max(depth) + 1)]
        self.parents = par
        self.register_buffer("offsets", joints - joints[torch.tensor([max(p, 0) for p in par])], persistent=False)

    def forward(self, R: Tensor) -> Tensor:
        """(B, J, 3, 3) local-ref rotations (the root's is ignored) -> (B, J, 3) joints, metres."""
        B, J = R.shape[:2]
        G = [None] * J
        j = [None] * J
        G[0] = torch.eye(3, dtype=R.dtype).expand(B, 3, 3)
        j[0] = R.new_zeros(B, 3)
        for level in self.levels:
            idx = torch.tensor(level)
            p = [self.parents[c] for c in level]
            Gp = torch.stack([G[i] for i in p], 1)  # (B, n, 3, 3)
            jp = torch.stack([j[i] for i in p], 1)
            jc = jp + (Gp @ self.offsets[idx][None, :, :, None])[..., 0]
            Gc = Gp @ R[:, idx]
            for k, c in enumerate(level):
                G[c], j[c] = Gc[:, k], jc[:, k]
        return torch.stack(j, 1)


class PosePrior(nn.Module):
    """The VAE. ``encode`` and ``decode`` take and give (B, J, 3) rotation vectors (J = 104, the
    root's entry is ignored on the way in and zero on the way out)."""

    def __init__(self, config: PriorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or PriorConfig()
        n = 6 * (len(ANNY_BONES) - 1)
        act = nn.LeakyReLU(0.1)
        self.encoder = nn.Sequential(nn.Linear(n, c.hidden), act, nn.Linear(c.hidden, c.hidden), act,
                                     nn.Linear(c.hidden, 2 * c.latent))  # fmt: skip
        self.decoder = nn.Sequential(nn.Linear(c.latent, c.hidden), act, nn.Linear(c.hidden, c.hidden), act,
                                     nn.Linear(c.hidden, n))  # fmt: skip
        # decoders output a 6-D offset from the identity rotation, starting near it
        for dec in (self.decoder,):
            nn.init.normal_(dec[-1].weight, std=1e-3)
            nn.init.zeros_(dec[-1].bias)
        self.register_buffer("identity", torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(len(ANNY_BONES) - 1),
                             persistent=False)  # fmt: skip
        self.info: dict = {}
        """How the prior was trained (bank, clips, held-out errors), saved with it."""

    @staticmethod
    def features(rotvec: Tensor) -> Tensor:
        """(B, J, 3) poses -> (B, 618) 6-D rotations of the non-root bones."""
        return to_6d(rotvec[:, 1:].float()).reshape(rotvec.shape[0], -1)

    def encode(self, rotvec: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (B, latent) of the posterior of each pose."""
        return self.encode_features(self.features(rotvec))

    def encode_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`encode` of poses given as :meth:`features`."""
        mu, logvar = self.encoder(x).chunk(2, -1)
        return mu, logvar.clamp(-12, 6)

    def decode_matrices(self, z: Tensor) -> Tensor:
        """(B, latent) -> (B, J, 3, 3) local-ref rotations (the root's is the identity)."""
        R = from_6d((self.decoder(z) + self.identity).reshape(z.shape[0], -1, 6))
        eye = torch.eye(3, dtype=R.dtype).expand(z.shape[0], 1, 3, 3)
        return torch.cat([eye, R], 1)

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent) -> (B, J, 3) rotation vectors (root zero)."""
        return roma.rotmat_to_rotvec(self.decode_matrices(z))

    def reconstruct(self, rotvec: Tensor) -> Tensor:
        """Each pose through the posterior mean and back (root zero)."""
        return self.decode(self.encode(rotvec)[0])

    def save(self, path: str | Path) -> Path:
        """Write the prior as ``perennial-pose-prior`` v1 safetensors (temp file + rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": PRIOR_FORMAT, "version": str(PRIOR_VERSION), "config": json.dumps(asdict(self.config)),
                "info": json.dumps(self.info)}  # fmt: skip
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path


def load_prior(path: str | Path) -> PosePrior:
    """Read a prior written by :meth:`PosePrior.save`.

    Raises:
        PerennialError: missing file, another format or version, weights that do not fit (names
            the file and the field).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise PerennialError(f"{path}: no such pose prior file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise PerennialError(f"{path}: not a safetensors pose prior ({e})") from None
    if meta.get("format") != PRIOR_FORMAT:
        raise PerennialError(f"{path}: metadata field 'format' must be {PRIOR_FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("version") != str(PRIOR_VERSION):
        raise PerennialError(f"{path}: metadata field 'version' {meta.get('version')!r} is not supported")
    try:
        config = PriorConfig(**json.loads(meta["config"]))
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise PerennialError(f"{path}: metadata field 'config' is not a prior configuration ({e})") from None
    prior = PosePrior(config)
    try:
        prior.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise PerennialError(f"{path}: weights do not fit the configuration ({str(e).splitlines()[0]})") from None
    prior.info = info
    return prior.eval()


_DEFAULT: dict[str, PosePrior] = {}


def default_prior() -> PosePrior:
    """The prior shipped with the package (trained on the CMU samples; see its README)."""
    if "p" not in _DEFAULT:
        _DEFAULT["p"] = load_prior(DEFAULT_PRIOR)
    return _DEFAULT["p"]


def load_training_poses(path: str | Path, fps: float = 30.0) -> tuple[Tensor, Tensor]:
    """Every frame of a motion bank (folder or ``.npz`` from ``motion import``) or of one clip file.

    Returns:
        rotvec (N, J, 3) and clip id (N,) int64.
    """
    path = Path(path)
    if path.is_dir():
        from perennial.motion.bank import load_bank

        bank = load_bank(path)
        rv, ids = [], []
        for i, clip in enumerate(bank):
            clip = clip.resample(fps)
            rv.append(clip.rotvec)
            ids.append(torch.full((clip.num_frames,), i, dtype=torch.int64))
        if not rv:
            raise PerennialError(f"{path}: the bank holds no clip")
        return torch.cat(rv), torch.cat(ids)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "clip" in z.files and "rotvec" in z.files:  # a bank exported as one .npz (save_bank_npz)
                if tuple(str(b) for b in z["bones"]) != ANNY_BONES:
                    raise PerennialError(f"{path}: field 'bones' does not match the anny rig")
                step = max(1, round(float(z["fps"]) / fps))
                return torch.from_numpy(z["rotvec"][::step].astype(np.float32)), torch.from_numpy(z["clip"][::step])
    from perennial.motion.load import load_motion

    clip = load_motion(path, fps=fps)
    return clip.rotvec, torch.zeros(clip.num_frames, dtype=torch.int64)


_MIRROR = [ANNY_BONES.index(b[:-2] + {".L": ".R", ".R": ".L"}[b[-2:]]) if b[-2:] in (".L", ".R") else i
           for i, b in enumerate(ANNY_BONES)]  # fmt: skip


def mirror(rotvec: Tensor) -> Tensor:
    """Poses (N, J, 3) reflected left to right: the world X axis (the body's left) flips, left and right
    bones swap. A rotation vector ``(a, b, c)`` reflects to ``(a, -b, -c)``."""
    return rotvec[:, _MIRROR] * torch.tensor([1.0, -1.0, -1.0])


def geodesic_deg(R1: Tensor, R2: Tensor) -> Tensor:
    """(..., 3, 3) pairs -> (...) angle between them, degrees."""
    cos = ((R1.transpose(-1, -2) @ R2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


@torch.no_grad()
def pose_errors(prior: PosePrior, rotvec: Tensor, fk: PoseFK | None = None, batch: int = 2048) -> dict[str, float]:
    """Reconstruction errors of ``prior`` on poses (N, J, 3): mean degrees per bone over the body
    bones and over all 103 non-root bones, and mean joint position error in cm (root fixed)."""
    fk = fk or PoseFK()
    body, allb, cm, n = 0.0, 0.0, 0.0, 0
    for i in range(0, rotvec.shape[0], batch):
        rv = rotvec[i : i + batch].float().clone()
        rv[:, 0] = 0
        R = roma.rotvec_to_rotmat(rv)
        Rh = prior.decode_matrices(prior.encode(rv)[0])
        ang = geodesic_deg(R[:, 1:], Rh[:, 1:])
        body += float(ang[:, [b - 1 for b in BODY_BONES]].mean(1).sum())
        allb += float(ang.mean(1).sum())
        cm += float((fk(R) - fk(Rh)).norm(dim=-1).mean(1).sum()) * 100
        n += rv.shape[0]
    return {"deg_body": body / n, "deg_all": allb / n, "joint_cm": cm / n, "poses": n}


def train_prior(rotvec: Tensor, clip_ids: Tensor, config: PriorConfig | None = None, progress: bool = True,
                source: str = "") -> PosePrior:  # fmt: skip
    """Train a pose prior on bank frames; held-out clips give ``prior.info["heldout"]``.

    Args:
        rotvec: (N, J, 3) poses (the root's rotation is ignored).
        clip_ids: (N,) clip of each pose (whole clips are held out).
        config: shape and training.
        progress: show a progress bar.
        source: where the poses came from (recorded in ``info``).
    """
    from perennial.progress import progress as bar

    c = config or PriorConfig()
    torch.manual_seed(c.seed)
    rotvec = rotvec.float().clone()
    rotvec[:, 0] = 0
    held = (clip_ids % c.holdout == c.holdout - 1) if c.holdout else torch.zeros_like(clip_ids, dtype=torch.bool)
    if held.all() or (~held).sum() < 2:
        held = torch.zeros_like(held)
    train_rv, test_rv = rotvec[~held], rotvec[held]
    if c.mirror:
        train_rv = torch.cat([train_rv, mirror(train_rv)])
    prior = PosePrior(c)
    fk = PoseFK()
    opt = torch.optim.Adam(prior.parameters(), lr=c.lr)
    g = torch.Generator().manual_seed(c.seed)
    train_R = roma.rotvec_to_rotmat(train_rv)
    with torch.no_grad():
        train_x = PosePrior.features(train_rv)
        train_j = torch.cat([fk(train_R[i : i + 4096]) for i in range(0, train_R.shape[0], 4096)])
    t0 = time.perf_counter()
    for step in bar(range(c.steps), desc="pose prior", unit="step", enabled=progress):
        for group in opt.param_groups:
            group["lr"] = c.lr * 0.1 ** (step / max(c.steps - 1, 1))
        idx = torch.randint(train_rv.shape[0], (c.batch,), generator=g)
        R = train_R[idx]
        mu, logvar = prior.encode_features(train_x[idx])
        z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
        Rh = prior.decode_matrices(z)
        rot = (Rh[:, 1:] - R[:, 1:]).square().sum((1, 2, 3)).mean()
        joints = (fk(Rh) - train_j[idx]).square().sum((1, 2)).mean()
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1).mean()
        loss = rot + c.joints * joints + c.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    prior.eval()
    info = {"source": source, "poses_train": int((~held).sum()), "poses_heldout": int(test_rv.shape[0]),
            "clips": int(clip_ids.max()) + 1 if clip_ids.numel() else 0, "seconds": time.perf_counter() - t0,
            "final_loss": float(loss.detach())}  # fmt: skip
    if test_rv.shape[0]:
        info["heldout"] = pose_errors(prior, test_rv, fk)
    info["train"] = pose_errors(prior, train_rv[:: max(1, train_rv.shape[0] // 4000)], fk)
    prior.info = info
    return prior


def save_retrieval_bank(rotvec: Tensor, path: str | Path) -> int:
    """Write poses (N, J, 3) as a retrieval bank (``.npz``: ``bones``, ``rotvec`` float16); returns N."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, format=np.array("perennial-retrieval-bank"), version=np.array(1),
                        bones=np.array(ANNY_BONES), rotvec=rotvec.numpy().astype(np.float16))  # fmt: skip
    os.replace(tmp, path)
    return int(rotvec.shape[0])


def describe(prior: PosePrior) -> str:
    """The training record of a prior as lines to print."""
    i = prior.info
    lines = [f"trained on {i.get('poses_train', '?')} poses of {i.get('clips', '?')} clips "
             f"({i.get('source', '')}) in {i.get('seconds', math.nan):.0f} s"]  # fmt: skip
    for split in ("train", "heldout"):
        if split in i:
            e = i[split]
            lines.append(f"{split:>8}: {e['deg_body']:.2f} deg per body bone, {e['deg_all']:.2f} deg per bone "
                         f"(all 103), {e['joint_cm']:.2f} cm per joint ({e['poses']} poses)")  # fmt: skip
    return "\n".join(lines)
