"""A minimal fitting loop for the field avatar on one capture.

Plain loop, Adam, one frame per step: the frame's training views are cast
against the corrected-posed mesh, ``rays_per_step`` rays are drawn from the
rays that hit the mesh (misses are background by construction and carry no
gradient), rendered with stratified jitter and compared with the images
(photometric MSE) and the masks (MSE between accumulated alpha and mask).

This is the first piece of ``learn``: continual learning (replay,
distillation), checkpoints and progress bars build on it elsewhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from perennial.avatar.field.model import FieldAvatar, FieldConfig
from perennial.avatar.field.render import RenderConfig, render_rays
from perennial.capture.capture import Capture
from perennial.render.raycast import WarpMeshCaster

__all__ = ["FitConfig", "fit", "psnr"]


@dataclass(kw_only=True)
class FitConfig:
    """Optimiser settings of :func:`fit`."""

    lr: float = 1e-2
    """Adam learning rate of the field (MLP, codes, tri-planes)."""
    lr_pose: float = 1e-4
    """Adam learning rate of the pose corrector (0 freezes it)."""
    loss_weights: dict[str, float] = field(default_factory=lambda: {"rgb": 1.0, "mask": 0.1})
    """Weight of each loss term; keys must match the losses exactly."""
    seed: int = 0
    """Seed of ray and frame sampling."""


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _views_by_frame(capture: Capture) -> dict[int, list[tuple[Tensor, Tensor, Tensor, Tensor]]]:
    """frame -> [(origins, dirs, rgb (P, 3), mask (P,)) per training view]."""
    out: dict[int, list] = {}
    for v in capture.views_of("train"):
        cam = capture.cameras[v.camera]
        o, d = cam.rays()
        img = capture.load_image(v).reshape(-1, 3)
        mask = capture.load_mask(v).reshape(-1)
        out.setdefault(v.frame, []).append((o, d, img, mask))
    if not out:
        raise ValueError(f"capture {capture.root} has no training views")
    return out


def fit(
    capture: Capture,
    steps: int,
    rays_per_step: int,
    avatar: FieldAvatar | None = None,
    template=None,
    config: FitConfig | None = None,
    field_config: FieldConfig | None = None,
    render_config: RenderConfig | None = None,
    log_every: int = 0,
) -> tuple[FieldAvatar, dict[str, list[float]]]:
    """Fit (or continue fitting) a field avatar to a capture's training views.

    Args:
        capture: the capture; its ``appearance`` is created in the avatar if new.
        steps: optimisation steps.
        rays_per_step: rays per step (drawn from one frame's training views).
        avatar: continue this avatar; a new one is built when omitted.
        template: the body template (``load_template()`` when omitted).
        config: optimiser settings.
        field_config, render_config: shape of a new avatar.
        log_every: print the losses every n steps (0: silent).

    Returns:
        The avatar and a history ``{"loss", "rgb", "mask", "seconds"}`` per step.
    """
    config = config or FitConfig()
    if avatar is None:
        if template is None:
            from perennial.body.anny import load_template

            template = load_template(capture.body_info.get("template", "anny"))
        avatar = FieldAvatar(
            template,
            capture.body_info.get("phenotype"),
            [capture.appearance],
            field_config,
            render_config,
        )
    elif capture.appearance not in avatar.field.appearances:
        avatar.field.add_appearance(capture.appearance)
    name = capture.appearance
    gen = torch.Generator().manual_seed(config.seed)
    data = _views_by_frame(capture)
    frames = sorted(data)
    groups = [{"params": avatar.field.parameters(), "lr": config.lr}]
    if config.lr_pose > 0:
        groups.append({"params": avatar.corrector.parameters(), "lr": config.lr_pose})
    opt = torch.optim.Adam(groups)
    caster = WarpMeshCaster(avatar.deformer.rest_vertices, avatar.deformer.faces)
    history: dict[str, list[float]] = {"loss": [], "rgb": [], "mask": [], "seconds": []}
    start = time.perf_counter()
    avatar.train()
    for step in range(steps):
        f = frames[int(torch.randint(len(frames), (1,), generator=gen))]
        rotvec, translation, _ = capture.body_params(f)
        body = avatar.pose(rotvec, translation)
        o = torch.cat([v[0] for v in data[f]])
        d = torch.cat([v[1] for v in data[f]])
        rgb_gt = torch.cat([v[2] for v in data[f]])
        mask_gt = torch.cat([v[3] for v in data[f]])
        caster.update(body.vertices)
        hit = caster.cast(o, d)
        cand = hit.mask.nonzero()[:, 0]
        if cand.numel() == 0:
            continue
        pick = cand[torch.randint(cand.numel(), (min(rays_per_step, cand.numel()),), generator=gen)]
        sub = type(hit)(hit.face[pick], hit.bary[pick], hit.depth[pick])
        out = render_rays(
            avatar, body, caster, o[pick], d[pick], name, avatar.render_config, jitter=True, hit=sub
        )
        losses = {
            "rgb": torch.mean((out.rgb - rgb_gt[pick]) ** 2),
            "mask": torch.mean((out.alpha - mask_gt[pick]) ** 2),
        }
        if set(losses) != set(config.loss_weights):
            raise KeyError(
                f"loss weights {sorted(config.loss_weights)} do not match losses {sorted(losses)}"
            )
        loss = sum(config.loss_weights[k] * v for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        for k, v in losses.items():
            history[k].append(float(v.detach()))
        history["seconds"].append(time.perf_counter() - start)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d} loss {float(loss):.5f} rgb {float(losses['rgb']):.5f} "
                  f"mask {float(losses['mask']):.5f} {history['seconds'][-1]:.1f}s")  # fmt: skip
    avatar.eval()
    return avatar, history
