"""Training a field avatar on a capture: ray batches, losses, schedule, progress, checkpoints.

Each step takes one frame, draws ``rays_per_step`` pixels from that frame's
training views (inside each view's person box, dilated, where all the signal
is), casts them against the corrected-posed body mesh and renders the rays that
hit it (misses are background by construction and carry no gradient).

Losses (``TrainConfig.loss_weights`` must name exactly these):
- ``rgb``: mean squared colour error;
- ``mask``: mean squared error between accumulated opacity and the mask;
- ``tv``: total variation of the appearance's tri-plane (neighbouring texels
  alike), which fills texels that few rays see and keeps held-out views clean.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from perennial.avatar.field.model import FieldAvatar
from perennial.avatar.field.render import render_rays
from perennial.avatar.field.triplane import table_to_planes
from perennial.capture.capture import Capture
from perennial.learn.checkpoint import load_checkpoint, save_checkpoint
from perennial.render.raycast import Hit, WarpMeshCaster


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation of a field avatar."""

    steps: int = 6000
    """Optimisation steps."""
    rays_per_step: int = 2048
    """Pixels drawn per step (from one frame's training views)."""
    lr: float = 5e-3
    """Adam learning rate of the field at the start; decays exponentially to ``lr * lr_final``."""
    lr_final: float = 0.1
    """Final learning rate as a fraction of the first."""
    lr_pose: float = 1e-4
    """Adam learning rate of the pose corrector (0 freezes it)."""
    loss_weights: dict[str, float] = field(default_factory=lambda: {"rgb": 1.0, "mask": 0.1, "tv": 1e-3})
    """Weight of each loss; keys must be exactly the losses computed."""
    samples: int = 16
    """Jittered samples per ray while training (rendering uses the avatar's ``RenderConfig``)."""
    box_dilation: int = 4
    """Pixels added around each view's person box when drawing rays."""
    checkpoint_every: int = 500
    """Write a resumable checkpoint every n steps (0: never)."""
    seed: int = 0
    """Seed of ray and frame sampling."""


@dataclass
class _View:
    frame: int
    origins: Tensor  # (P, 3)
    dirs: Tensor  # (P, 3)
    rgb: Tensor  # (P, 3)
    mask: Tensor  # (P,)
    pixels: Tensor  # (Q,) candidate pixel ids inside the dilated person box


def load_training_views(capture: Capture, dilation: int, progress: bool = True) -> dict[int, list[_View]]:
    """Training views grouped by frame, pixels and rays in memory."""
    rays = {name: cam.rays() for name, cam in capture.cameras.items()}
    out: dict[int, list[_View]] = {}
    train = capture.views_of("train")
    if not train:
        raise ValueError(f"{capture.root}: the capture has no training views")
    for v in tqdm(train, desc="loading views", unit="view", leave=False, disable=not progress):
        cam = capture.cameras[v.camera]
        H, W = cam.height, cam.width
        img = capture.load_image(v).reshape(-1, 3)
        mask = capture.load_mask(v)
        ys, xs = (mask > 0).nonzero(as_tuple=True)
        if ys.numel() == 0:
            continue  # an empty view teaches only background, which needs no rays
        y0, y1 = max(int(ys.min()) - dilation, 0), min(int(ys.max()) + dilation, H - 1)
        x0, x1 = max(int(xs.min()) - dilation, 0), min(int(xs.max()) + dilation, W - 1)
        yy, xx = torch.meshgrid(torch.arange(y0, y1 + 1), torch.arange(x0, x1 + 1), indexing="ij")
        o, d = rays[v.camera]
        out.setdefault(v.frame, []).append(
            _View(v.frame, o, d, img, mask.reshape(-1), (yy * W + xx).reshape(-1))
        )
    return out


def sample_batch(data: dict[int, list[_View]], frames: list[int], n: int, gen: torch.Generator):
    """``n`` random pixels of one random frame's training views.

    Returns:
        frame, origins (n, 3), dirs (n, 3), rgb (n, 3), mask (n,).
    """
    f = frames[int(torch.randint(len(frames), (1,), generator=gen))]
    views = data[f]
    counts = torch.tensor([v.pixels.numel() for v in views], dtype=torch.float32)
    pick_view = torch.multinomial(counts, n, replacement=True, generator=gen)
    o, d, rgb, mask = [], [], [], []
    for i, v in enumerate(views):
        k = int((pick_view == i).sum())
        if k == 0:
            continue
        px = v.pixels[torch.randint(v.pixels.numel(), (k,), generator=gen)]
        o.append(v.origins[px]), d.append(v.dirs[px]), rgb.append(v.rgb[px]), mask.append(v.mask[px])
    return f, torch.cat(o), torch.cat(d), torch.cat(rgb), torch.cat(mask)


def photometric_losses(avatar, caster, rotvec, translation, o, d, rgb, mask, appearance, render_cfg):
    """``rgb`` and ``mask`` losses of the rays that hit the corrected-posed body (None if none do)."""
    body = avatar.pose(rotvec, translation)
    caster.update(body.vertices)
    hit = caster.cast(o, d)
    keep = hit.mask.nonzero()[:, 0]
    if keep.numel() == 0:
        return None
    sub = Hit(hit.face[keep], hit.bary[keep], hit.depth[keep])
    out = render_rays(avatar, body, caster, o[keep], d[keep], appearance, render_cfg, jitter=True, hit=sub)
    return {
        "rgb": (out.rgb - rgb[keep]).square().mean(),
        "mask": (out.alpha - mask[keep]).square().mean(),
    }


def decay_lr(optim: torch.optim.Optimizer, base: list[float], step: int, steps: int, final: float) -> None:
    """Exponential decay of every group's learning rate from ``base`` to ``base * final``."""
    decay = final ** (step / max(steps - 1, 1))
    for g, lr in zip(optim.param_groups, base):
        g["lr"] = lr * decay


def new_data_losses(avatar, caster, capture, data, frames, n, gen, appearance, render_cfg):
    """One batch of a capture's training rays: ``(rotvec, {"rgb", "mask", "tv"})``, or None
    when no drawn ray hits the body."""
    f, o, d, rgb, mask = sample_batch(data, frames, n, gen)
    rotvec, translation, _ = capture.body_params(f)
    fit = photometric_losses(avatar, caster, rotvec, translation, o, d, rgb, mask, appearance, render_cfg)
    if fit is None:
        return None
    return rotvec, {**fit, "tv": triplane_tv(avatar, appearance)}


def triplane_tv(avatar: FieldAvatar, appearance: str) -> Tensor:
    """Mean squared difference of neighbouring tri-plane texels of one appearance."""
    tp = avatar.field.appearances[appearance].triplane
    planes = table_to_planes(tp.table, tp.config.resolution)  # (3, C, R, R) view
    dx = planes[..., :, 1:] - planes[..., :, :-1]
    dy = planes[..., 1:, :] - planes[..., :-1, :]
    return dx.square().mean() + dy.square().mean()


def psnr_from_mse(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def train_field(
    avatar: FieldAvatar,
    capture: Capture,
    config: TrainConfig,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Fit ``avatar``'s appearance ``capture.appearance`` (created if new) to the capture.

    Args:
        avatar: the avatar to train (modified in place).
        capture: the capture whose training views supervise it.
        config: optimisation settings.
        checkpoint: folder for resumable checkpoints (None: no checkpoints).
        resume: continue from ``checkpoint`` if it exists.
        progress: show a progress bar (rate, ETA, loss, PSNR).

    Returns:
        Summary: steps, seconds, steps/s, final training PSNR (on rays hitting the body).
    """
    name = capture.appearance
    if name not in avatar.field.appearances:
        avatar.field.add_appearance(name)
    data = load_training_views(capture, config.box_dilation, progress)
    frames = sorted(data)
    groups = [{"params": list(avatar.field.parameters()), "lr": config.lr, "name": "field"}]
    if config.lr_pose > 0:
        groups.append({"params": list(avatar.corrector.parameters()), "lr": config.lr_pose, "name": "pose"})
    optim = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in optim.param_groups]
    start = 0
    if resume and checkpoint is not None and (checkpoint / "state.json").exists():
        try:
            start, _ = load_checkpoint(checkpoint, avatar, optim)
        except (RuntimeError, KeyError) as e:  # tensors of another model (other appearance or config)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{checkpoint}: the checkpoint does not fit this avatar and capture ({msg})") from None
    gen = torch.Generator().manual_seed(config.seed + start)
    caster = WarpMeshCaster(avatar.deformer.rest_vertices, avatar.deformer.faces)
    render_cfg = dataclasses.replace(avatar.render_config, samples=config.samples)
    losses_seen: list[float] = []
    mse_seen: list[float] = []
    t0 = time.perf_counter()
    avatar.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"training {name}",
               unit="step", disable=not progress)  # fmt: skip
    for step in bar:
        decay_lr(optim, base_lrs, step, config.steps, config.lr_final)
        batch = new_data_losses(avatar, caster, capture, data, frames, config.rays_per_step, gen, name, render_cfg)
        if batch is None:
            continue
        _, losses = batch
        if set(losses) != set(config.loss_weights):
            raise KeyError(f"loss weights {sorted(config.loss_weights)} do not match losses {sorted(losses)}")
        loss = sum(config.loss_weights[k] * v for k, v in losses.items())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses_seen.append(loss.item())
        mse_seen.append(losses["rgb"].item())
        if progress and (step % 10 == 0 or step == config.steps - 1):
            recent = sum(mse_seen[-50:]) / len(mse_seen[-50:])
            bar.set_postfix(loss=f"{losses_seen[-1]:.4f}", psnr=f"{psnr_from_mse(recent):.2f}", refresh=False)
        if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            try:
                save_checkpoint(checkpoint, avatar, optim, step + 1, {"appearance": name})
            except OSError as e:  # disk full, read-only, ...: one clear message, not a traceback
                from perennial.avatar.store import AvatarWriteError

                raise AvatarWriteError(f"{checkpoint}: cannot write a checkpoint ({e.strerror or e}); "
                                       "training stopped, no version was written") from None  # fmt: skip
    bar.close()
    avatar.eval()
    seconds = time.perf_counter() - t0
    done = len(mse_seen)
    recent = mse_seen[-100:] or [float("nan")]
    return {
        "steps": config.steps,
        "steps_run": done,
        "seconds": seconds,
        "steps_per_s": done / seconds if seconds > 0 else float("nan"),
        "train_psnr_body": psnr_from_mse(sum(recent) / len(recent)),
    }
