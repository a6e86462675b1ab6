"""``perennial learn``: add an appearance to an avatar without forgetting the others.

Strategies (``ContinualConfig.strategy``), all writing a new avatar version:

- ``replay`` (MaintaAvatar): the new appearance gets its own global codes and
  tri-plane; the shared MLP and the pose corrector keep training. A frozen copy
  of the previous version renders 64x64 pseudo-ground-truth patches for the
  stored cameras and poses of every past appearance (no past images needed) and
  supervises the current model alongside the new images (*generative replay*).
  After ``distill_start`` steps, an L2 loss ties the pose corrector's output to
  the frozen one's on past and current poses (*pose distillation*; starting it
  late avoids blur, as the paper reports).
- ``finetune``: new appearance, no replay, no distillation (forgets).
- ``joint``: replay with the real past images instead of pseudo-ground truth
  (needs the past captures at their recorded paths, checked by content hash):
  the upper bound.
- ``shared-local``: like ``replay`` but every appearance reads the first
  appearance's tri-plane; only the global codes are per appearance (ablation
  of the global-local split: colours bleed between appearances).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from perennial.avatar.field.render import render_rays
from perennial.avatar.field_io import (
    appearance_record,
    load_field_avatar,
    replay_cameras,
    save_field_avatar,
)
from perennial.avatar.maintenance import check_capture_for_avatar, check_capture_images
from perennial.avatar.store import AvatarError, AvatarStore, Version
from perennial.capture.capture import Capture
from perennial.learn.checkpoint import load_checkpoint, save_checkpoint
from perennial.learn.trainer import (
    decay_lr,
    load_training_views,
    new_data_losses,
    photometric_losses,
    psnr_from_mse,
    sample_batch,
)
from perennial.render.raycast import Hit, WarpMeshCaster

STRATEGIES = ("replay", "finetune", "joint", "shared-local")


@dataclass(kw_only=True)
class ContinualConfig:
    """How a new appearance is learned."""

    strategy: str = "replay"
    """One of ``replay``, ``finetune``, ``joint``, ``shared-local``."""
    steps: int = 1500
    """Optimisation steps."""
    rays_per_step: int = 2048
    """New-appearance rays per step."""
    samples: int = 16
    """Jittered samples per ray while training."""
    lr: float = 5e-3
    """Adam learning rate of the new appearance's codes and tri-plane (decays to ``lr * lr_final``)."""
    lr_shared: float | None = None
    """Adam learning rate of the shared MLP and past appearances. Default: 5e-4 for
    ``replay``, ``joint`` and ``shared-local`` (the shared network moves slowly while
    the new appearance's own codes and tri-plane learn fast); for ``finetune``, plain
    fine-tuning, the same rate as everything else (``lr``)."""
    lr_pose: float = 1e-5
    """Adam learning rate of the pose corrector."""
    lr_final: float = 0.1
    """Final learning rate as a fraction of the first."""
    replay_every: int = 2
    """Replay (or joint) batch every n steps."""
    patch: int = 64
    """Side of the replay patches, pixels."""
    distill_start: float = 0.3
    """Pose distillation starts after this fraction of the steps."""
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"rgb": 1.0, "mask": 0.1, "tv": 1e-3, "replay_rgb": 1.0, "replay_mask": 0.1, "distill": 10.0}
    )
    """Weight of each loss; keys must be exactly the losses of the strategy's steps."""
    box_dilation: int = 4
    """Pixels added around each view's person box when drawing new rays."""
    checkpoint_every: int = 250
    """Write a resumable checkpoint every n steps (0: never)."""
    seed: int = 0
    """Seed of the sampling."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.lr_shared is None:
            self.lr_shared = self.lr if self.strategy == "finetune" else 5e-4


class _Replayer:
    """Pseudo-ground-truth patches of past appearances from a frozen teacher."""

    def __init__(self, teacher, records: list[dict], poses: dict, patch: int, samples: int, gen) -> None:
        self.teacher, self.records, self.poses, self.patch, self.gen = teacher, records, poses, patch, gen
        self.cams = {r["name"]: replay_cameras(r) for r in records}
        self.caster = WarpMeshCaster(teacher.deformer.rest_vertices, teacher.deformer.faces)
        self.cfg = dataclasses.replace(teacher.render_config, samples=samples)

    def batch(self):
        """(appearance, rotvec, translation, origins, dirs, rgb, alpha) of one random patch."""
        g = self.gen
        rec = self.records[int(torch.randint(len(self.records), (1,), generator=g))]
        name = rec["name"]
        i = int(torch.randint(len(rec["frames"]), (1,), generator=g))
        rotvec, translation = self.poses[name]["rotvec"][i], self.poses[name]["translation"][i]
        cams = list(self.cams[name].values())
        cam = cams[int(torch.randint(len(cams), (1,), generator=g))]
        body = self.teacher.pose(rotvec, translation)
        self.caster.update(body.vertices)
        # a coarse grid finds the body; the patch is centred on a random body pixel
        step = 8
        grid = torch.stack(torch.meshgrid(torch.arange(0, cam.height, step), torch.arange(0, cam.width, step), indexing="ij"), -1).reshape(-1, 2)
        o, d = cam.rays(grid.flip(-1).float())
        on = grid[self.caster.cast(o, d).mask]
        if on.shape[0] == 0:
            return None
        cy, cx = on[int(torch.randint(on.shape[0], (1,), generator=g))].tolist()
        h = self.patch // 2
        y0, x0 = min(max(cy - h, 0), max(cam.height - self.patch, 0)), min(max(cx - h, 0), max(cam.width - self.patch, 0))
        yy, xx = torch.meshgrid(torch.arange(y0, min(y0 + self.patch, cam.height)),
                                torch.arange(x0, min(x0 + self.patch, cam.width)), indexing="ij")  # fmt: skip
        px = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1).float()
        o, d = cam.rays(px)
        with torch.no_grad():
            out = render_rays(self.teacher, body, self.caster, o, d, name, self.cfg)
        return name, rotvec, translation, o, d, out.rgb, out.alpha


def _patch_losses(avatar, caster, name, rotvec, translation, o, d, rgb, alpha, cfg) -> dict:
    body = avatar.pose(rotvec, translation)
    caster.update(body.vertices)
    hit = caster.cast(o, d)
    out = render_rays(avatar, body, caster, o, d, name, cfg, jitter=True, hit=Hit(hit.face, hit.bary, hit.depth))
    return {"replay_rgb": (out.rgb - rgb).square().mean(), "replay_mask": (out.alpha - alpha).square().mean()}


def learn_appearance(
    path: str | Path,
    capture: Capture,
    config: ContinualConfig | None = None,
    name: str | None = None,
    progress: bool = True,
    template=None,
    resume: bool = False,
) -> Version:
    """Add ``capture``'s appearance (as ``name``) to the avatar at ``path``; returns the new version.

    Checkpoints go to ``<path>/checkpoint`` every ``config.checkpoint_every`` steps and
    are removed once the version is written; ``resume`` continues an interrupted learn
    of the same appearance and strategy from there (the teacher is the current
    version, which an unfinished learn never changes).
    """
    config = config or ContinualConfig()
    store = AvatarStore(path)
    store.meta()  # a clear error for a missing or unknown avatar before anything else
    check_capture_images(capture)  # a corrupt PNG fails now, not half-way through training
    with store.lock():
        store.clean_partial()  # leftovers of an update that was killed
        check_capture_for_avatar(store, capture)
        avatar, version, poses = load_field_avatar(store, template=template)
        name = name or capture.appearance
        records = version.state["appearances"]
        if name in avatar.field.appearances:
            raise AvatarError(f"{store.root}: appearance {name!r} exists already (choose another --name)")
        teacher = copy.deepcopy(avatar).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        share = config.strategy == "shared-local"
        app = avatar.field.add_appearance(name)
        if share:
            app.triplane = avatar.field.appearances[records[0]["name"]].triplane
        ckpt = store.root / "checkpoint"
        if ckpt.exists() and not resume:
            shutil.rmtree(ckpt)  # an abandoned update's checkpoint; this is a fresh start
        tag = {"action": "learn", "appearance": name, "strategy": config.strategy}
        summary = _run(avatar, teacher, capture, name, records, poses, config, progress, ckpt, tag, resume)
        record, replay = appearance_record(capture)
        record["name"] = name
        if share:
            record["triplane_of"] = records[0].get("triplane_of", records[0]["name"])
        entry = {"action": "learn", "appearance": name, "strategy": config.strategy,
                 "train": dataclasses.asdict(config), "seconds": summary["seconds"]}  # fmt: skip
        v = save_field_avatar(store, avatar, [*records, record], {**poses, name: replay}, entry, {"train": summary},
                              switch=False)  # fmt: skip
        shutil.rmtree(ckpt, ignore_errors=True)
        store.switch(v.number)
        return store.version(v.number)


def _run(avatar, teacher, capture, name, records, poses, config: ContinualConfig, progress: bool,
         ckpt: Path | None = None, tag: dict | None = None, resume: bool = False) -> dict:  # fmt: skip
    gen = torch.Generator().manual_seed(config.seed)
    data = load_training_views(capture, config.box_dilation, progress)
    frames = sorted(data)
    new_params = list(avatar.field.appearances[name].parameters())
    new_ids = {id(p) for p in new_params}
    shared = [p for p in avatar.field.parameters() if id(p) not in new_ids]
    groups = [{"params": new_params, "lr": config.lr}, {"params": shared, "lr": config.lr_shared}]
    if config.lr_pose > 0:
        groups.append({"params": list(avatar.corrector.parameters()), "lr": config.lr_pose})
    optim = torch.optim.Adam(groups)
    base = [g["lr"] for g in optim.param_groups]
    start = 0
    if resume and ckpt is not None and (ckpt / "state.json").exists():
        import json

        saved = json.loads((ckpt / "state.json").read_text()).get("extra", {})
        if saved != tag:
            raise AvatarError(f"{ckpt / 'state.json'}: the checkpoint is of {saved}, not of {tag}; "
                              "run without --resume to start over")  # fmt: skip
        start, _ = load_checkpoint(ckpt, avatar, optim)
        gen.manual_seed(config.seed + start)
    caster = WarpMeshCaster(avatar.deformer.rest_vertices, avatar.deformer.faces)
    cfg = dataclasses.replace(avatar.render_config, samples=config.samples)
    replay = config.strategy in ("replay", "shared-local") and records
    joint = _joint_sources(records, config) if config.strategy == "joint" else None
    replayer = _Replayer(teacher, records, poses, config.patch, config.samples, gen) if replay else None
    past_poses = torch.cat([p["rotvec"] for p in poses.values()]) if poses else None
    distill_from = int(config.distill_start * config.steps)
    t0 = time.perf_counter()
    mse: list[float] = []
    avatar.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"learning {name} ({config.strategy})",
               unit="step", disable=not progress)  # fmt: skip
    for step in bar:
        decay_lr(optim, base, step, config.steps, config.lr_final)
        batch = new_data_losses(avatar, caster, capture, data, frames, config.rays_per_step, gen, name, cfg)
        if batch is None:
            continue
        rotvec, losses = batch
        if step % config.replay_every == 0:
            if replayer is not None:
                b = replayer.batch()
                if b is not None:
                    losses.update(_patch_losses(avatar, caster, *b, cfg))
            elif joint is not None:
                src_name, src_cap, src_data = joint[int(torch.randint(len(joint), (1,), generator=gen))]
                jf, jo, jd, jrgb, jmask = sample_batch(src_data, sorted(src_data), config.rays_per_step, gen)
                jr, jt, _ = src_cap.body_params(jf)
                j = photometric_losses(avatar, caster, jr, jt, jo, jd, jrgb, jmask, src_name, cfg)
                if j is not None:
                    losses.update({"replay_rgb": j["rgb"], "replay_mask": j["mask"]})
        if replay and step >= distill_from:
            pose_batch = torch.cat([past_poses[torch.randint(past_poses.shape[0], (7,), generator=gen)], rotvec[None]])
            with torch.no_grad():
                target = teacher.corrector.residual(pose_batch)
            losses["distill"] = (avatar.corrector.residual(pose_batch) - target).square().mean()
        unknown = set(losses) - set(config.loss_weights)
        if unknown:
            raise KeyError(f"no loss weight for {sorted(unknown)} (weights: {sorted(config.loss_weights)})")
        loss = sum(config.loss_weights[k] * v for k, v in losses.items())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        mse.append(losses["rgb"].item())
        if ckpt is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save_checkpoint(ckpt, avatar, optim, step + 1, tag or {})
        if progress and step % 10 == 0:
            recent = mse[-50:]
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr_from_mse(sum(recent) / len(recent)):.2f}", refresh=False)
    bar.close()
    avatar.eval()
    seconds = time.perf_counter() - t0
    recent = mse[-100:] or [float("nan")]
    return {"steps": config.steps, "steps_run": len(mse), "seconds": seconds,
            "steps_per_s": len(mse) / seconds if seconds else float("nan"),
            "train_psnr_body": psnr_from_mse(sum(recent) / len(recent))}  # fmt: skip


def _joint_sources(records: list[dict], config: ContinualConfig) -> list:
    """Past captures for ``joint``: read from their recorded paths and checked by content hash."""
    from perennial.capture.format import read_capture

    out = []
    for r in records:
        path = Path(r["capture"]["path"])
        cap = read_capture(path)
        if cap.content_hash() != r["capture"]["sha256"]:
            raise AvatarError(f"{path}: the capture of appearance {r['name']!r} changed since it was learned")
        out.append((r["name"], cap, load_training_views(cap, config.box_dilation, progress=False)))
    return out
