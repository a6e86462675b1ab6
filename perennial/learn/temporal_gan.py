"""The temporal discriminator of the texture avatar (RAM-Avatar, Sec. 3.1 and eq. 4) as a loss term.

A small PatchGAN ``D`` judges frame triplets of one camera: the *real* triplet
``(I_{t-1}, I_t, I_{t+1})`` of the capture and the *fake* one ``(I_{t-1}, G(t), I_{t+1})`` with
the rendered middle frame, stacked as 9 channels. It sees realism and whether the middle frame
fits between its neighbours. Losses (non-saturating GAN, Goodfellow et al. 2014):

- ``D`` minimises ``softplus(-D(real)) + softplus(D(fake))`` (mean over its patch logits), one
  Adam step per call, on the fake triplet with the rendering detached;
- the avatar minimises ``temporal_gan = ramp(step) * softplus(-D(fake))``, where ``ramp`` rises
  linearly from 0 at ``ramp_start`` to 1 at ``ramp_start + ramp_steps`` (the photometric terms
  shape the image first; the loss weight in the config is the weight after the ramp).

Every ``every`` steps the term renders a ``crop`` x ``crop`` window, centred on the person, of a
training view whose camera also has training views at the previous and next frames of the
capture (views held out for testing are never read). The discriminator is state, not a hidden
module: its parameters, Adam moments and step count are tensors of the term's state
(``d.<name>``, ``m.<name>``, ``v.<name>``, ``d_step``), so a checkpoint resumes it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from perennial.errors import ConfigError
from perennial.learn.engine import generator_state
from perennial.learn.texture_terms import TrainingImages, window

__all__ = ["TemporalGAN", "TemporalGANConfig", "TripletPatchGAN"]

State = dict[str, Tensor]


@dataclass(kw_only=True)
class TemporalGANConfig:
    """The temporal discriminator on frame triplets and its adversarial loss."""

    every: int = 0
    """Run the discriminator every n steps (0: off)."""
    crop: int = 64
    """Side of the rendered window the discriminator judges, pixels."""
    channels: int = 32
    """Channels of the discriminator's first layer (doubled once)."""
    lr: float = 2e-4
    """Adam learning rate of the discriminator."""
    ramp_start: int = 1000
    """Step at which the adversarial loss starts to count."""
    ramp_steps: int = 2000
    """Steps over which its weight rises linearly to the full loss weight."""

    def __post_init__(self) -> None:
        for k, lo in (
            ("every", 0),
            ("crop", 16),
            ("channels", 1),
            ("ramp_start", 0),
            ("ramp_steps", 1),
        ):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < lo:
                raise ConfigError(
                    f"temporal_gan.{k} must be an integer >= {lo}, got {getattr(self, k)!r}"
                )
        if not self.lr > 0:
            raise ConfigError(f"temporal_gan.lr must be > 0, got {self.lr!r}")


class TripletPatchGAN(nn.Module):
    """PatchGAN on a frame triplet: (B, 9, H, W) in [0, 1] -> (B, 1, H/4 - 2, W/4 - 2) logits.

    Two stride-2 4x4 convolutions (``c``, ``2c`` channels), one stride-1 4x4, a 4x4 to one
    logit per patch; LeakyReLU(0.2); each logit sees a 34 x 34 pixel patch.
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.convs = nn.ModuleList([nn.Conv2d(9, c, 4, 2, 1), nn.Conv2d(c, 2 * c, 4, 2, 1),
                                    nn.Conv2d(2 * c, 2 * c, 4, 1, 1), nn.Conv2d(2 * c, 1, 4, 1, 1)])  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        x = x * 2 - 1
        for conv in self.convs[:-1]:
            x = F.leaky_relu(conv(x), 0.2)
        return self.convs[-1](x)


def triplets(images: TrainingImages) -> list[tuple[int, int, int]]:
    """``(previous, middle, next)`` image indices: training views of one camera at consecutive frames."""
    where = {im.key: i for i, im in enumerate(images.images)}
    out = []
    for i, im in enumerate(images.images):
        cam, row = im.key
        prev, nxt = where.get((cam, row - 1)), where.get((cam, row + 1))
        if prev is not None and nxt is not None:
            out.append((prev, i, nxt))
    return out


class TemporalGAN:
    """The adversarial term on frame triplets (module docstring); loss ``temporal_gan``.

    Args:
        avatar: the texture avatar being trained.
        images: its training images.
        appearance: the appearance learned.
        config: the discriminator's settings (``every == 0``: the term returns nothing).
    """

    losses = ("temporal_gan",)
    name = "temporal_gan"

    def __init__(
        self, avatar, images: TrainingImages, appearance: str, config: TemporalGANConfig
    ) -> None:
        self.avatar, self.images, self.appearance, self.config = avatar, images, appearance, config
        self.triplets = triplets(images) if config.every else []
        self.disc = TripletPatchGAN(config.channels)

    def init_state(self, seed: int) -> State:
        state = generator_state(seed)
        if self.config.every and self.triplets:
            torch.manual_seed(seed)  # the discriminator's initial weights follow the run's seed
            d = TripletPatchGAN(self.config.channels)
            for k, p in d.named_parameters():
                state[f"d.{k}"] = p.detach().clone()
                state[f"m.{k}"] = torch.zeros_like(p)
                state[f"v.{k}"] = torch.zeros_like(p)
            state["d_step"] = torch.zeros(())
        return state

    @staticmethod
    def params(state: State) -> dict[str, Tensor]:
        """The discriminator's parameters held in a state."""
        return {k[2:]: v for k, v in state.items() if k.startswith("d.")}

    def score(self, state: State, triplet: Tensor) -> Tensor:
        """D's patch logits (B, 1, h, w) for (B, 9, H, W) triplets, with the parameters of ``state``."""
        return functional_call(self.disc, self.params(state), (triplet,))

    def ramp(self, step: int) -> float:
        c = self.config
        return min(max((step - c.ramp_start) / c.ramp_steps, 0.0), 1.0)

    def _d_step(self, state: State, real: Tensor, fake: Tensor) -> State:
        """One Adam step of the discriminator on a real and a fake triplet (fake already detached)."""
        params = {k: v.detach().requires_grad_() for k, v in self.params(state).items()}
        d_real = functional_call(self.disc, params, (real,))
        d_fake = functional_call(self.disc, params, (fake,))
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        b1, b2, eps, lr = 0.5, 0.999, 1e-8, self.config.lr  # GAN-usual beta1
        t = float(state["d_step"]) + 1
        out = dict(state)
        for (k, p), g in zip(params.items(), grads):
            m = b1 * state[f"m.{k}"] + (1 - b1) * g
            v = b2 * state[f"v.{k}"] + (1 - b2) * g * g
            out[f"m.{k}"], out[f"v.{k}"] = m, v
            out[f"d.{k}"] = p.detach() - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        out["d_step"] = torch.tensor(t)
        return out

    def __call__(self, step: int, state: State) -> tuple[dict[str, Tensor], State]:
        if not self.config.every or not self.triplets or step % self.config.every:
            return {}, state
        g = torch.Generator()
        g.set_state(state["rng"])
        ip, im_, inx = self.triplets[int(torch.randint(len(self.triplets), (1,), generator=g))]
        ims = self.images.images
        mid = ims[im_]
        x0, y0, x1, y1 = self.images.body_boxes[im_]
        cam = mid.camera
        x0, y0, w, h = window(
            ((x0 + x1) / 2, (y0 + y1) / 2), self.config.crop, cam.width, cam.height, g, jitter=0.25
        )
        previous = mid.previous if getattr(self.avatar, "temporal", False) else None
        ramp = self.ramp(step)
        with torch.set_grad_enabled(
            ramp > 0 and torch.is_grad_enabled()
        ):  # before the ramp: D learns alone
            out = self.avatar(cam, mid.rotvec, mid.translation, self.appearance, mid.facial, crop=(x0, y0, w, h),
                              previous=previous)  # fmt: skip
        crop = (slice(None), slice(y0, y0 + h), slice(x0, x0 + w))
        before, now, after = (ims[i].rgb[crop] for i in (ip, im_, inx))
        real = torch.cat([before, now, after])[None]
        fake = torch.cat([before, out["rgb"], after])[None]
        state = self._d_step({**state, "rng": g.get_state()}, real, fake.detach())
        if ramp == 0:
            return {}, state
        return {"temporal_gan": F.softplus(-self.score(state, fake)).mean() * ramp}, state
