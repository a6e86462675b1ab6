"""Loss terms of the field avatar, each a policy with explicit state (see :mod:`perennial.learn.engine`).

Every term that draws random numbers keeps the state of its own ``torch.Generator``
in its state dict (``{"rng": ...}``): the engine passes it in, gets the new one
back and checkpoints it. No term holds state between calls.

- :class:`Photometric` (``rgb``, ``mask``): rays of the new capture's training views.
- :class:`TriplaneTV` (``tv``): smoothness of the learned appearance's tri-plane.
- :class:`Replay` (``replay_rgb``, ``replay_mask``): pseudo-ground-truth patches of
  past appearances rendered by a frozen teacher (MaintaAvatar's generative replay).
- :class:`JointReplay` (``replay_rgb``, ``replay_mask``): the real images of past
  appearances instead (the upper bound).
- :class:`PoseDistill` (``distill``): the pose corrector's output tied to the teacher's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from perennial.avatar.field.model import FieldAvatar
from perennial.avatar.field.render import RenderConfig, render_rays
from perennial.avatar.field.triplane_ops import table_to_planes
from perennial.capture.capture import ViewPixels
from perennial.learn.engine import generator_state
from perennial.learn.replay import PastViews
from perennial.render.camera import Camera
from perennial.render.raycast import Hit, WarpMeshCaster

__all__ = ["JointReplay", "Photometric", "PoseDistill", "Replay", "TrainingRays", "TriplaneTV"]

State = dict[str, Tensor]


def _gen(state: State) -> torch.Generator:
    g = torch.Generator()
    g.set_state(state["rng"])
    return g


def _out(g: torch.Generator) -> State:
    return {"rng": g.get_state()}


@dataclass
class _FrameView:
    origins: Tensor  # (P, 3) world metres
    dirs: Tensor  # (P, 3)
    rgb: Tensor  # (P, 3)
    mask: Tensor  # (P,)
    pixels: Tensor  # (Q,) candidate pixel ids inside the dilated person box


class TrainingRays:
    """The training pixels of one capture, grouped by frame, with their rays.

    Only pixels inside each view's person box (dilated by ``dilation`` pixels) are
    drawn: all the signal is there. A view with an empty mask teaches only
    background, which needs no rays, and is left out.

    Args:
        pixels: decoded training views (:meth:`Capture.read_split`).
        cameras: the capture's cameras by name.
        body_params: frame index -> (rotvec (J, 3), translation (3,)).
        dilation: pixels added around each person box.
    """

    def __init__(self, pixels: list[ViewPixels], cameras: dict[str, Camera],
                 body_params: Callable[[int], tuple[Tensor, Tensor]], dilation: int) -> None:  # fmt: skip
        self.body_params = body_params
        rays = {}
        self.frames: dict[int, list[_FrameView]] = {}
        for vp in pixels:
            v, cam = vp.view, cameras[vp.view.camera]
            ys, xs = (vp.mask > 0).nonzero(as_tuple=True)
            if ys.numel() == 0:
                continue
            H, W = cam.height, cam.width
            y0, y1 = max(int(ys.min()) - dilation, 0), min(int(ys.max()) + dilation, H - 1)
            x0, x1 = max(int(xs.min()) - dilation, 0), min(int(xs.max()) + dilation, W - 1)
            yy, xx = torch.meshgrid(torch.arange(y0, y1 + 1), torch.arange(x0, x1 + 1), indexing="ij")
            if v.camera not in rays:
                rays[v.camera] = cam.rays()
            o, d = rays[v.camera]
            self.frames.setdefault(v.frame, []).append(
                _FrameView(o, d, vp.rgb.reshape(-1, 3), vp.mask.reshape(-1), (yy * W + xx).reshape(-1))
            )
        self.order = sorted(self.frames)

    def __len__(self) -> int:
        return len(self.order)

    def sample(self, n: int, g: torch.Generator) -> tuple[int, Tensor, Tensor, Tensor, Tensor]:
        """``n`` random pixels of one random frame: frame, origins, dirs (n, 3), rgb (n, 3), mask (n,)."""
        f = self.order[int(torch.randint(len(self.order), (1,), generator=g))]
        views = self.frames[f]
        counts = torch.tensor([v.pixels.numel() for v in views], dtype=torch.float32)
        pick = torch.multinomial(counts, n, replacement=True, generator=g)
        parts = []
        for i, v in enumerate(views):
            k = int((pick == i).sum())
            if k:
                px = v.pixels[torch.randint(v.pixels.numel(), (k,), generator=g)]
                parts.append((v.origins[px], v.dirs[px], v.rgb[px], v.mask[px]))
        o, d, rgb, mask = (torch.cat(x) for x in zip(*parts))
        return f, o, d, rgb, mask


def _photometric(avatar: FieldAvatar, caster: WarpMeshCaster, rotvec: Tensor, translation: Tensor,
                 o: Tensor, d: Tensor, appearance: str, cfg: RenderConfig, condition: Tensor | None = None):  # fmt: skip
    """Render the rays that hit the corrected-posed body: (keep ids, output) or None."""
    body = avatar.pose(rotvec, translation, condition)
    caster.update(body.vertices)
    hit = caster.cast(o, d)
    keep = hit.mask.nonzero()[:, 0]
    if keep.numel() == 0:
        return None
    sub = Hit(hit.face[keep], hit.bary[keep], hit.depth[keep])
    return keep, render_rays(avatar, body, caster, o[keep], d[keep], appearance, cfg, jitter=True, hit=sub)


def _caster(avatar: FieldAvatar) -> WarpMeshCaster:
    return WarpMeshCaster(avatar.deformer.rest_vertices, avatar.deformer.faces)


class Photometric:
    """Colour and mask error of ``rays_per_step`` training rays of one frame (those that hit the body).

    Losses: ``rgb`` (mean squared colour error), ``mask`` (mean squared error of the
    accumulated opacity against the mask). None on a step where no drawn ray hits.
    ``condition`` (retrieval-augmented training, :mod:`perennial.learn.retrieval`), when set, gives
    the pose the corrector reads: ``condition(frame, rotvec, facial, generator) -> (rotvec, facial)``.
    """

    condition = None

    losses = ("rgb", "mask")

    def __init__(self, avatar: FieldAvatar, rays: TrainingRays, appearance: str, rays_per_step: int,
                 samples: int, name: str = "photometric", loss_names: tuple[str, str] = ("rgb", "mask")) -> None:  # fmt: skip
        self.avatar, self.rays, self.appearance, self.n, self.name = avatar, rays, appearance, rays_per_step, name
        self.losses = loss_names
        self.cfg = dataclasses.replace(avatar.render_config, samples=samples)
        self.caster = _caster(avatar)

    def init_state(self, seed: int) -> State:
        return generator_state(seed)

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        g = _gen(state)
        f, o, d, rgb, mask = self.rays.sample(self.n, g)
        rotvec, translation = self.rays.body_params(f)
        cond = None if self.condition is None else self.condition(f, rotvec, None, g)[0]
        res = _photometric(self.avatar, self.caster, rotvec, translation, o, d, self.appearance, self.cfg, cond)
        if res is None:
            return {}, _out(g)
        keep, out = res
        c, m = self.losses
        return {c: (out.rgb - rgb[keep]).square().mean(), m: (out.alpha - mask[keep]).square().mean()}, _out(g)


class TriplaneTV:
    """``tv``: mean squared difference of neighbouring texels of one appearance's tri-plane.

    Fills texels that few rays see and keeps held-out views clean. Stateless.
    """

    name = "tv"
    losses = ("tv",)

    def __init__(self, avatar: FieldAvatar, appearance: str) -> None:
        self.triplane = avatar.field.appearance(appearance).triplane

    def init_state(self, seed: int) -> State:
        return {}

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        tp = self.triplane
        planes = table_to_planes(tp.table, tp.config.resolution)  # (3, C, R, R) view
        dx = planes[..., :, 1:] - planes[..., :, :-1]
        dy = planes[..., 1:, :] - planes[..., :-1, :]
        return {"tv": dx.square().mean() + dy.square().mean()}, state


class Replay:
    """Generative replay: a frozen teacher renders a ``patch`` x ``patch`` pixel patch of a past
    appearance (a stored camera and training pose, centred on a random body pixel) and the
    student must match it. Runs every ``every`` steps.

    Losses: ``replay_rgb``, ``replay_mask`` (mean squared errors against the teacher's colour
    and opacity).
    """

    name = "replay"
    losses = ("replay_rgb", "replay_mask")

    def __init__(self, student: FieldAvatar, teacher: FieldAvatar, past: PastViews, patch: int, samples: int,
                 every: int) -> None:  # fmt: skip
        self.student, self.teacher, self.past, self.patch, self.every = student, teacher, past, patch, every
        self.cfg = dataclasses.replace(teacher.render_config, samples=samples)
        self.teacher_caster, self.caster = _caster(teacher), _caster(student)

    def init_state(self, seed: int) -> State:
        return generator_state(seed)

    def target(self, g: torch.Generator):
        """(appearance, rotvec, translation, origins, dirs, rgb, alpha) of one teacher patch, or None."""
        view = self.past.draw(g)
        name, rotvec, translation, cam = view.appearance, view.rotvec, view.translation, view.camera
        body = self.teacher.pose(rotvec, translation)
        self.teacher_caster.update(body.vertices)
        # a coarse grid finds the body; the patch is centred on a random body pixel
        grid = torch.stack(torch.meshgrid(torch.arange(0, cam.height, 8), torch.arange(0, cam.width, 8),
                                          indexing="ij"), -1).reshape(-1, 2)  # fmt: skip
        o, d = cam.rays(grid.flip(-1).float())
        on = grid[self.teacher_caster.cast(o, d).mask]
        if on.shape[0] == 0:
            return None
        cy, cx = on[int(torch.randint(on.shape[0], (1,), generator=g))].tolist()
        h, P = self.patch // 2, self.patch
        y0, x0 = min(max(cy - h, 0), max(cam.height - P, 0)), min(max(cx - h, 0), max(cam.width - P, 0))
        yy, xx = torch.meshgrid(torch.arange(y0, min(y0 + P, cam.height)), torch.arange(x0, min(x0 + P, cam.width)),
                                indexing="ij")  # fmt: skip
        o, d = cam.rays(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1).float())
        with torch.no_grad():
            out = render_rays(self.teacher, body, self.teacher_caster, o, d, name, self.cfg)
        return name, rotvec, translation, o, d, out.rgb, out.alpha

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        if step % self.every:
            return {}, state
        g = _gen(state)
        t = self.target(g)
        if t is None:
            return {}, _out(g)
        name, rotvec, translation, o, d, rgb, alpha = t
        body = self.student.pose(rotvec, translation)
        out = render_rays(self.student, body, self.caster, o, d, name, self.cfg, jitter=True)
        return {"replay_rgb": (out.rgb - rgb).square().mean(),
                "replay_mask": (out.alpha - alpha).square().mean()}, _out(g)  # fmt: skip


class JointReplay:
    """Joint training: every ``every`` steps, rays of a random past appearance's real training
    images (its capture, checked by content hash). Losses as :class:`Replay`."""

    name = "joint"
    losses = ("replay_rgb", "replay_mask")

    def __init__(self, avatar: FieldAvatar, sources: dict[str, TrainingRays], rays_per_step: int,
                 samples: int, every: int) -> None:  # fmt: skip
        self.terms = [Photometric(avatar, rays, name, rays_per_step, samples, loss_names=self.losses)
                      for name, rays in sorted(sources.items())]  # fmt: skip
        self.every = every

    def init_state(self, seed: int) -> State:
        return generator_state(seed)

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        if step % self.every:
            return {}, state
        g = _gen(state)
        term = self.terms[int(torch.randint(len(self.terms), (1,), generator=g))]
        losses, out = term(step, _out(g))
        return losses, out


class PoseDistill:
    """``distill``: from step ``start`` on, the mean squared difference between the student's and
    the frozen teacher's pose-corrector residuals on ``batch`` poses drawn from the past
    appearances' and the new capture's training poses (MaintaAvatar's pose distillation;
    starting late avoids blur)."""

    name = "distill"
    losses = ("distill",)

    def __init__(self, student: FieldAvatar, teacher: FieldAvatar, past: Tensor, new: Tensor,
                 start: int, batch: int) -> None:  # fmt: skip
        self.student, self.teacher, self.past, self.new, self.start, self.batch = student, teacher, past, new, start, batch

    def init_state(self, seed: int) -> State:
        return generator_state(seed)

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        if step < self.start:
            return {}, state
        g = _gen(state)
        past = self.past[torch.randint(self.past.shape[0], (self.batch - 1,), generator=g)]
        new = self.new[torch.randint(self.new.shape[0], (1,), generator=g)]
        poses = torch.cat([past, new])
        with torch.no_grad():
            target = self.teacher.corrector.residual(poses)
        return {"distill": (self.student.corrector.residual(poses) - target).square().mean()}, _out(g)
