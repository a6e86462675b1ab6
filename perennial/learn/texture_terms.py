"""Loss terms of the texture avatar, each a policy with explicit state (see :mod:`perennial.learn.engine`).

- :class:`ImageCrops` (``l1``, ``rgb``, ``mask``, ``perceptual``, ``face``, ``hands``): a
  ``crop`` x ``crop`` pixel window of a random training view, centred on the body,
  the face or a hand; L1 colour error (and the squared error ``rgb``, shown as the
  training PSNR; its preset weight is 0), L1 opacity error against the mask, and a
  perceptual distance (the first stages of LPIPS's VGG16) on the window; on
  face- and hand-centred windows also on a small window around the face or hand,
  upsampled (faces and hands are 20-30 px in a full-body 256 px view).
- :class:`CropReplay` (``replay_rgb``, ``replay_mask``): generative replay of past
  appearances: a frozen copy of the previous version renders a window of a past
  training view (:class:`~perennial.learn.replay.PastViews`) and the student must
  match it.

Every term draws with its own generator, kept in its state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from perennial.body.regions import region_centres
from perennial.capture.capture import Capture, ViewPixels
from perennial.learn.engine import generator_state
from perennial.learn.replay import PastViews
from perennial.numerics import autocast

__all__ = ["CropReplay", "ImageCrops", "TrainingImages"]

State = dict[str, Tensor]
CENTRES = ("body", "face", "hands")


def _gen(state: State) -> torch.Generator:
    g = torch.Generator()
    g.set_state(state["rng"])
    return g


@dataclass
class _Image:
    camera: object
    rgb: Tensor  # (3, H, W)
    mask: Tensor  # (1, H, W)
    rotvec: Tensor
    translation: Tensor
    facial: Tensor | None
    centres: dict[str, list[tuple[float, float]]]  # "body" / "face" / "hands" -> pixel centres (u, v)
    previous: tuple  # the previous frame's (rotvec, translation, facial), for temporal attention
    key: tuple[str, int] = ("", -1)  # (camera name, frame row in the capture)


class TrainingImages:
    """The training views of one capture with their poses and the pixel centres of face and hands.

    Args:
        capture: the capture.
        pixels: its decoded training views (:meth:`Capture.read_split`).
        template: the body template (for the face and hand centres).
        phenotype: the person's phenotype.
    """

    def __init__(self, capture: Capture, pixels: list[ViewPixels], template, phenotype) -> None:
        rest = template.rest_state(phenotype)
        centres: dict[int, dict[str, Tensor]] = {}
        self.images: list[_Image] = []
        for vp in pixels:
            v = vp.view
            rotvec, translation, facial = capture.body_params(v.frame)
            if v.frame not in centres:
                with torch.no_grad():
                    centres[v.frame] = region_centres(template, rest, rotvec, translation)
            cam = capture.cameras[v.camera]
            ys, xs = (vp.mask > 0.5).nonzero(as_tuple=True)
            if ys.numel() == 0:
                continue  # an empty view teaches only background
            px = {"body": [(float(xs.float().mean()), float(ys.float().mean()))]}
            for part in ("face", "hands"):
                uv, z = cam.project(centres[v.frame][part])
                px[part] = [(float(p[0]), float(p[1])) for p, d in zip(uv, z) if d > 0
                            and 0 <= p[0] < cam.width and 0 <= p[1] < cam.height]  # fmt: skip
            row = capture.frame_row(v.frame)  # the previous frame of the capture (itself for the first)
            previous = capture.body_params(capture.frames[row - 1]["index"] if row > 0 else v.frame)
            self.images.append(_Image(cam, vp.rgb.permute(2, 0, 1).contiguous(), vp.mask[None].contiguous(),
                                      rotvec, translation, facial, px, previous, (v.camera, row)))  # fmt: skip
        self.body_boxes = [self._box(im.mask) for im in self.images]

    @staticmethod
    def _box(mask: Tensor) -> tuple[int, int, int, int]:
        ys, xs = (mask[0] > 0.5).nonzero(as_tuple=True)
        return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())

    def __len__(self) -> int:
        return len(self.images)


def window(centre: tuple[float, float], size: int, width: int, height: int, g: torch.Generator,
           jitter: float = 0.25) -> tuple[int, int, int, int]:  # fmt: skip
    """A ``size`` x ``size`` window (x0, y0, w, h) around ``centre`` (jittered by ``jitter`` x size),
    inside the image (smaller when the image is)."""
    w, h = min(size, width), min(size, height)
    j = (torch.rand(2, generator=g) * 2 - 1) * jitter * size
    x0 = int(round(centre[0] - w / 2 + float(j[0])))
    y0 = int(round(centre[1] - h / 2 + float(j[1])))
    return min(max(x0, 0), width - w), min(max(y0, 0), height - h), w, h


class ImageCrops:
    """Photometric and perceptual losses of the texture avatar on windows of the training views.

    Args:
        avatar: the texture avatar (``forward(camera, rotvec, translation, appearance, facial, crop)``).
        images: the training images.
        appearance: the appearance learned.
        crop: window side, pixels.
        centre_weights: probabilities of centring a window on the body, the face, a hand.
        lpips: the perceptual network (a :class:`perennial.evaluate.lpips.LPIPS`), or None (then the
            perceptual losses are never returned).
        stages: LPIPS stages used by the perceptual terms.
        part_window: side of the window around a face or hand for ``face`` / ``hands``, pixels.
        perceptual_size: the perceptual term sees the crop resized to this side (cheaper), pixels.
        perceptual_every: the perceptual terms run every n steps (LPIPS-VGG's first stages cost
            more than the avatar's own step).
    """

    losses = ("l1", "rgb", "mask", "perceptual", "face", "hands")
    name = "crops"
    condition = None
    """Retrieval-augmented training (:mod:`perennial.learn.retrieval`), when set:
    ``condition(image index, rotvec, facial, generator) -> (rotvec, facial)`` read by the hand and face maps."""

    def __init__(self, avatar, images: TrainingImages, appearance: str, crop: int, centre_weights: tuple[float, ...],
                 lpips, stages: int, part_window: int, perceptual_size: int, perceptual_every: int = 1) -> None:  # fmt: skip
        self.avatar, self.images, self.appearance, self.crop = avatar, images, appearance, crop
        self.weights = torch.tensor(centre_weights, dtype=torch.float64)
        self.lpips, self.stages, self.part_window, self.psize = lpips, stages, part_window, perceptual_size
        self.perceptual_every = perceptual_every
        self.autocast = avatar.config.autocast

    def init_state(self, seed: int) -> State:
        return generator_state(seed)

    def _perceptual(self, pred: Tensor, gt: Tensor, size: int) -> Tensor:
        if pred.shape[-1] != size or pred.shape[-2] != size:
            pred = F.interpolate(pred[None], size=(size, size), mode="bilinear", align_corners=False)[0]
            gt = F.interpolate(gt[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        with autocast(self.autocast, pred.device):  # the generator's numeric path
            return self.lpips(pred, gt, stages=self.stages).float()

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        g = _gen(state)
        i = int(torch.randint(len(self.images), (1,), generator=g))
        im = self.images.images[i]
        kind = CENTRES[int(torch.multinomial(self.weights, 1, generator=g))]
        if not im.centres[kind]:
            kind = "body"
        centres = im.centres[kind]
        centre = centres[int(torch.randint(len(centres), (1,), generator=g))]
        cam = im.camera
        x0, y0, w, h = window(centre, self.crop, cam.width, cam.height, g, jitter=0.25 if kind == "body" else 0.1)
        cond = None if self.condition is None else self.condition(i, im.rotvec, im.facial, g)
        previous = im.previous if getattr(self.avatar, "temporal", False) else None
        out = self.avatar(cam, im.rotvec, im.translation, self.appearance, im.facial, crop=(x0, y0, w, h),
                          condition=cond, previous=previous)  # fmt: skip
        gt = im.rgb[:, y0 : y0 + h, x0 : x0 + w]
        mask = im.mask[:, y0 : y0 + h, x0 : x0 + w]
        pred = out["rgb"]
        losses = {"l1": (pred - gt).abs().mean(), "rgb": (pred - gt).square().mean(),
                  "mask": (out["alpha"] - mask).abs().mean()}  # fmt: skip
        if self.lpips is not None and step % self.perceptual_every == 0:
            losses["perceptual"] = self._perceptual(pred, gt, self.psize)
            if kind != "body":
                # the part's window inside the crop, upsampled for the perceptual network
                px, py = centre[0] - x0, centre[1] - y0
                s = min(self.part_window, w, h)
                a0 = min(max(int(round(px - s / 2)), 0), w - s)
                b0 = min(max(int(round(py - s / 2)), 0), h - s)
                sub = (slice(None), slice(b0, b0 + s), slice(a0, a0 + s))
                losses[kind] = self._perceptual(pred[sub], gt[sub], 2 * s)
        return losses, {"rng": g.get_state()}


class CropReplay:
    """Generative replay for texture avatars: every ``every`` steps a frozen teacher renders a window
    of a past training view and the student matches it (L1 on colour and opacity)."""

    losses = ("replay_rgb", "replay_mask")
    name = "replay"

    def __init__(self, student, teacher, past: PastViews, crop: int, every: int) -> None:
        self.student, self.teacher, self.past, self.crop, self.every = student, teacher, past, crop, every

    def init_state(self, seed: int) -> State:
        return generator_state(seed)

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        if step % self.every:
            return {}, state
        g = _gen(state)
        view = self.past.draw(g)
        cam = view.camera
        with torch.no_grad():
            full = self.teacher.render_image(cam, view.rotvec, view.translation, view.appearance, view.facial_actions)
        ys, xs = (full.alpha > 0.5).nonzero(as_tuple=True)
        if ys.numel() == 0:
            return {}, {"rng": g.get_state()}
        k = int(torch.randint(ys.numel(), (1,), generator=g))
        x0, y0, w, h = window((float(xs[k]), float(ys[k])), self.crop, cam.width, cam.height, g, jitter=0.0)
        out = self.student(cam, view.rotvec, view.translation, view.appearance, view.facial_actions,
                           crop=(x0, y0, w, h))  # fmt: skip
        rgb = full.rgb[y0 : y0 + h, x0 : x0 + w].permute(2, 0, 1)
        alpha = full.alpha[y0 : y0 + h, x0 : x0 + w][None]
        return {"replay_rgb": (out["rgb"] - rgb).abs().mean(),
                "replay_mask": (out["alpha"] - alpha).abs().mean()}, {"rng": g.get_state()}  # fmt: skip
