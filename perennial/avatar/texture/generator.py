"""The image generator: a small StyleUNet (UNet styled by the appearance latent).

RAM-Avatar renders its full-body feature map with a StyleUNet; here a plain-torch
UNet (no torchvision) whose convolutions are StyleGAN2-style *modulated* ones at every
level: the appearance latent ``z`` scales the input channels of a level's convolution,
``w'[o, i] = w[o, i] * (1 + gamma_l(z)[i])``, each output channel's weights are then
*demodulated* (divided by their norm, times the LeakyReLU gain), and ``beta_l(z)`` shifts
the outputs; ``gamma_l, beta_l`` are linear in ``z`` (FiLM). All of it acts on the
weights (a few thousand numbers), never on the activations: no extra pass over the image.

Why normalised weights, equalised learning rates and a hard sigmoid. With plain
convolutions, no normalisation layer and sigmoid outputs, the first training run on a
synthetic capture (Adam, lr 2e-3) collapsed in 8 steps: the alpha loss asks for ever
more negative background logits, Adam rescales even a vanishing sigmoid gradient into a
full step, and since the layers' inputs are mostly positive (LeakyReLU) one sign-like
step aligned with their mean amplifies each layer; the activations grew 5x per step
until alpha was 0 on the whole image and every gradient vanished. Three cheap changes
(weights only, or one clamp) made the same run stable (activations stay < ~15, the loss
falls steadily, ``tests/test_texture_model.py``): every hidden convolution is normalised
per output channel (its weights' scale no longer matters); its weights are stored unit
normal, so a step of ``lr`` turns them by ~``lr`` whatever the fan-in (35x less than
PyTorch's default initialisation did at fan-in 432); outputs are a hard sigmoid
``clamp(x / 4 + 1/2, 0, 1)``: a pixel at exactly its target 0 or 1 has no error, so
nothing pushes past it. Its gradient leaks (1 % of the slope) where it clamps: with a
plain clamp, one run in seven (widths 8-16-32-64, lr 1e-2) overshot to alpha 0 on every
pixel, where no gradient was left to come back.

.. code-block:: text

    in (C_in) -> conv3 w0 -> conv3* w0 ---------------------------------------- cat -> conv3* w0 -> conv1 -> RGBA
                     | stride-2 conv3 w1 -> conv3* w1 ------------------ cat -> conv3* w1 -> conv1 w0, x2 ^
                     |   ... len(widths) levels (* = styled by the latent) -> conv1 w1, x2 ^

Inputs of any size are zero-padded to a multiple of ``2^(levels-1)`` and the output
cropped back. Outputs: RGB and alpha (hard sigmoid). Convolutions run in
``channels_last`` under :func:`perennial.numerics.autocast` (bf16 where the CPU has
native bf16). Widths: see :class:`~perennial.avatar.texture.model.TextureConfig`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perennial.numerics import autocast

__all__ = ["NormConv", "StyleUNet"]

_SLOPE = 0.2
_GAIN = math.sqrt(2.0 / (1.0 + _SLOPE**2))  # keeps unit variance through LeakyReLU(0.2)


class NormConv(nn.Conv2d):
    """A convolution whose weights are normalised per output channel (times the LeakyReLU gain).

    With ``style=(scale (C_in,), shift (C_out,))`` the input channels are scaled before the
    normalisation (modulation + demodulation) and the shift is added to the bias.

    The stored weights start unit normal (the forward does not depend on their scale):
    an optimiser step of ``lr`` then turns them by about ``lr`` radians whatever the
    fan-in (StyleGAN's "equalised learning rate").
    """

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, style: tuple[Tensor, Tensor] | None = None) -> Tensor:
        w, b = self.weight, self.bias
        if style is not None:
            w = w * style[0][None, :, None, None]
            b = b + style[1]
        w = w * (_GAIN * torch.rsqrt(w.square().sum((1, 2, 3), keepdim=True) + 1e-8))
        return F.conv2d(x, w, b, self.stride, self.padding)


def _hard_sigmoid(x: Tensor, leak: float = 0.01) -> Tensor:
    """``clamp(x / 4 + 1/2, 0, 1)`` whose gradient is ``leak / 4`` (not 0) where it clamps.

    A pixel clamped at its target (the background's 0) has zero error, so it gives no
    gradient whatever the slope: nothing pushes past the bound. A pixel clamped on the
    wrong side (a body pixel at 0) still gets a small gradient, so no state is absorbing.
    """
    z = x * 0.25 + 0.5
    c = z.clamp(0.0, 1.0)
    return c + leak * (z - c) - (leak * (z - c)).detach()


class _Styles(nn.Module):
    """The latent -> (input scale, output shift) of each styled convolution, one linear map."""

    def __init__(self, latent_dim: int, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.shapes = shapes
        self.linear = nn.Linear(latent_dim, sum(i + o for i, o in shapes))
        # a unit-variance latent starts as a ~10 % modulation: styles differ from the first
        # step, and both the latent and these weights get gradients (zero-initialising
        # either would leave both stuck at zero)
        nn.init.normal_(self.linear.weight, std=0.1 / latent_dim**0.5)
        nn.init.zeros_(self.linear.bias)

    def forward(self, latent: Tensor) -> list[tuple[Tensor, Tensor]]:
        out = self.linear(latent.float())
        res, k = [], 0
        for i, o in self.shapes:
            res.append((1.0 + out[k : k + i], out[k + i : k + i + o]))
            k += i + o
        return res


class StyleUNet(nn.Module):
    """UNet with skip connections, styled at every level by an appearance latent.

    Args:
        in_channels: channels of the input feature map.
        latent_dim: length of the appearance latent.
        widths: channels per level, full resolution first (2-5 levels).
        out_channels: 3 RGB + 1 alpha.
        autocast_mode: ``"auto"``, ``"on"`` or ``"off"`` (:mod:`perennial.numerics`).
    """

    def __init__(self, in_channels: int, latent_dim: int, widths: tuple[int, ...] = (16, 32, 48, 64),
                 out_channels: int = 4, autocast_mode: str = "auto") -> None:  # fmt: skip
        super().__init__()
        if not 2 <= len(widths) <= 5:
            raise ValueError(f"widths must have 2 to 5 levels, got {widths}")
        self.widths = w = tuple(int(c) for c in widths)
        self.autocast_mode = autocast_mode
        n = len(w)
        self.stem = NormConv(in_channels, w[0], 3, padding=1)
        self.enc = nn.ModuleList([NormConv(w[i], w[i], 3, padding=1) for i in range(n)])
        self.down = nn.ModuleList([NormConv(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(n - 1)])
        self.up = nn.ModuleList([NormConv(w[i + 1], w[i], 1) for i in range(n - 1)])
        self.dec = nn.ModuleList([NormConv(2 * w[i], w[i], 3, padding=1) for i in range(n - 1)])
        self.head = nn.Conv2d(w[0], out_channels, 1)
        self.styles = _Styles(latent_dim, [(c, c) for c in w] + [(2 * c, c) for c in w[:-1]])
        self.to(memory_format=torch.channels_last)

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C_in, H, W) features and an (L,) latent -> RGB (B, 3, H, W), alpha (B, 1, H, W).

        Both in [0, 1], float32; differentiable w.r.t. the inputs and every parameter.
        """
        H, W = x.shape[-2:]
        m = self.multiple
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        styles = self.styles(latent)
        n = len(self.widths)

        def act(t: Tensor) -> Tensor:
            return F.leaky_relu(t, _SLOPE, inplace=True)

        with autocast(self.autocast_mode, x.device):
            h = act(self.stem(x.contiguous(memory_format=torch.channels_last)))
            skips = []
            for i in range(n):
                if i > 0:
                    h = act(self.down[i - 1](h))
                h = act(self.enc[i](h, styles[i]))
                skips.append(h)
            for i in range(n - 2, -1, -1):
                # channels are reduced at the low resolution, then upsampled (4x cheaper)
                up = F.interpolate(act(self.up[i](h)), scale_factor=2.0, mode="nearest")
                h = act(self.dec[i](torch.cat([up, skips[i]], 1), styles[n + i]))
            out = self.head(h)
        out = _hard_sigmoid(out.float()[..., :H, :W])
        return out[:, :3], out[:, 3:]
