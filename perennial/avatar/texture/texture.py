"""Neural texture: learnable per-appearance features read at every covered pixel.

Two kinds, one interface (``texture(uv, points) -> (N, C)``):

- ``"uv"`` (the default): a ``(C, T, T)`` atlas over Anny's texture coordinates,
  read bilinearly with ``F.grid_sample`` at the pixels' interpolated UVs.
- ``"triplane"``: a tri-plane over the rest-space box
  (:class:`~perennial.avatar.field.triplane.TriPlane`, ``F.embedding_bag`` lookup,
  planes summed), read at the pixels' canonical positions.

Why the atlas. Measured on the shared 2-core CPU (AVX512-BF16 EPYC, quiet), C=16, at
the covered pixels of the walking body (``bench_texture_lookup``, interleaved medians
of 30), forward / forward + backward (gradient to the texture): 256^2 (7.4 k pixels):
atlas T=256 1.2 / 3.4 ms, tri-plane R=128 1.5 / 5.9 ms; 512^2 (29.5 k pixels): 2.2 / 8.2
against 3.0 / 9.2 ms. The atlas is a little faster, and both are a few per cent of a
frame, so the choice is made on what they can store:

- texel density: the atlas gives the head 1.21 UV units per m^2 of surface and the
  body 0.16-0.41 (``uv area / 3D area`` per part), so at T=256 a texel is ~3.5 mm on
  the face and 6-10 mm on the limbs; a tri-plane R=128 over the rest body's box
  (1.07 x 0.46 x 1.67 m) has cells of 8.5 x 3.6 x 13 mm, and across the face (seen
  from the front) only its XZ plane tells points apart: 8.5 x 13 mm, where the
  atlas has 3.5 mm;
- ambiguity: a tri-plane gives the front and the back of the torso the same XZ-plane
  features (and the two sides of every limb some shared ones); an atlas stores every
  surface point once;
- seams: the atlas has UV seams (Anny's charts: body, head, hands, feet): texels at
  a chart border are read from both sides, bilinear reads near it mix in unused
  texels (learnable too). The generator sees across seams in image space, so they
  cost little; the tri-plane has none.

Size: C=16 channels at T=240 is 3.69 MB of float32 per appearance, under the 4 MB
budget with the latent (T=256 would be 4.19 MB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perennial.avatar.field.triplane import TriPlane, TriPlaneConfig

__all__ = ["TEXTURE_KINDS", "NeuralTexture"]

TEXTURE_KINDS = ("uv", "triplane")


class NeuralTexture(nn.Module):
    """One appearance's learnable feature texture.

    Args:
        kind: ``"uv"`` (atlas over texture coordinates) or ``"triplane"`` (rest-space tri-plane).
        channels: feature channels C.
        size: atlas side T (texels), or tri-plane resolution R.
        init_std: standard deviation of the normal initialisation.
    """

    def __init__(self, kind: str = "uv", channels: int = 16, size: int = 240, init_std: float = 0.1) -> None:
        super().__init__()
        if kind not in TEXTURE_KINDS:
            raise ValueError(f"texture kind must be one of {TEXTURE_KINDS}, got {kind!r}")
        if channels < 1 or size < 2:
            raise ValueError(f"need channels >= 1 and size >= 2, got {channels}, {size}")
        self.kind, self.channels, self.size = kind, int(channels), int(size)
        if kind == "uv":
            self.atlas = nn.Parameter(torch.randn(1, channels, size, size) * init_std)
            """(1, C, T, T) features; row 0 is v = 1 (the atlas as an image of the UV layout)."""
        else:
            self.triplane = TriPlane(TriPlaneConfig(channels=channels, resolution=size, reduce="sum",
                                                    init_std=init_std))  # fmt: skip

    def forward(self, uv: Tensor, points: Tensor | None = None) -> Tensor:
        """Features at N surface points.

        Args:
            uv: (N, 2) texture coordinates in [0, 1] (read by the atlas).
            points: (N, 3) canonical positions normalised to [-1, 1]^3 (read by the tri-plane).

        Returns:
            (N, C) float32, differentiable w.r.t. the texture.
        """
        if self.kind == "triplane":
            if points is None:
                raise ValueError("a tri-plane texture needs the normalised canonical points")
            return self.triplane(points)
        n = uv.shape[0]
        if n == 0:
            return self.atlas.new_zeros(0, self.channels)
        # grid x = 2u - 1 (columns), y = 1 - 2v (rows: v grows upwards in UV space)
        grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1).view(1, 1, n, 2)
        out = F.grid_sample(self.atlas, grid.to(self.atlas.dtype), mode="bilinear",
                            padding_mode="border", align_corners=False)  # fmt: skip
        return out[0, :, 0].t()

    def nbytes(self) -> int:
        """Bytes of the texture's parameters."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, channels={self.channels}, size={self.size}"
