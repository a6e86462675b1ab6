"""Face feature map: what the 52 facial actions do to the face, as image features.

RAM-Avatar encodes the face of an expression template (FaceVerse) with a small
CNN. Here the expression template is Anny's own: its facial actions are linear
blendshapes of the rest mesh (:meth:`perennial.body.anny.AnnyTemplate.facial_basis`),
so a frame's expression is the per-vertex rest-space offset
``offset[v] = sum_a actions[a] * basis[a, v]`` (metres). Every covered pixel of the
face gets

- that offset, interpolated at the pixel's barycentrics, times ``offset_scale``
  (offsets reach 1-4 cm; x100 brings them to ~1), and
- the face weight: the face-region indicator of the vertices (those some facial
  action moves by more than 0.1 mm: 3,536 vertices, the face, eyes and mouth, see
  :meth:`~perennial.body.anny.AnnyTemplate.face_vertices`) interpolated likewise,
  so it falls off smoothly over the region's border triangles;

and a shallow CNN (two 3x3 convolutions) turns these 4 channels into
``out_channels`` features, multiplied by the face weight: exactly zero outside the
face. Only the face's pixel box (plus the CNN's 2-pixel reach) is convolved: the
face is a few per cent of a full-body frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perennial.avatar.texture.raster import SurfaceRaster

__all__ = ["FaceEncoder", "face_inputs"]


def face_inputs(raster: SurfaceRaster, faces: Tensor, face_weight: Tensor, offsets: Tensor | None,
                scale: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The face's covered pixels and their 4 input channels.

    Args:
        raster: the frame's visible surface.
        faces: (F, 3) triangles of the mesh.
        face_weight: (V,) face-region indicator of the vertices in [0, 1].
        offsets: (V, 3) rest-space expression offsets, metres (None: neutral face).
        scale: multiplies the offsets.

    Returns:
        index: (M,) indices into the raster's pixels of the face pixels (weight > 0);
        inputs: (M, 4) ``[offset * scale (3), weight (1)]``.
    """
    w = raster.interpolate(face_weight[:, None], faces)[:, 0]
    idx = (w > 0).nonzero()[:, 0]
    sub = SurfaceRaster(raster.height, raster.width, raster.pixel[idx], raster.face[idx], raster.bary[idx],
                        raster.depth[idx], raster.uv[idx], raster.canonical[idx])  # fmt: skip
    if offsets is None:
        off = torch.zeros(idx.shape[0], 3, device=w.device)
    else:
        off = sub.interpolate(offsets, faces) * scale
    return idx, torch.cat([off, w[idx, None]], 1)


class FaceEncoder(nn.Module):
    """Shallow CNN over the face's pixels: (offset, weight) -> ``out_channels`` features.

    Args:
        out_channels: features it produces.
        hidden: channels of the hidden layer.
        offset_scale: multiplies the rest-space offsets (metres) on input.
    """

    def __init__(self, out_channels: int = 8, hidden: int = 16, offset_scale: float = 100.0) -> None:
        super().__init__()
        self.out_channels = int(out_channels)
        self.offset_scale = float(offset_scale)
        self.conv1 = nn.Conv2d(4, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, padding=1)

    def encode(self, raster: SurfaceRaster, faces: Tensor, face_weight: Tensor,
               offsets: Tensor | None = None) -> tuple[tuple[int, int, int, int], Tensor] | None:  # fmt: skip
        """The face features on the face's pixel box only.

        Returns:
            None when no face pixel is covered, else ``((x0, y0, w, h), features)``: the box
            in the raster's window and (out_channels, h, w) features (zero off the face).
        """
        H, W = raster.height, raster.width
        idx, x = face_inputs(raster, faces, face_weight, offsets, self.offset_scale)
        if idx.numel() == 0:
            return None
        pix = raster.pixel[idx]
        u, v = pix % W, torch.div(pix, W, rounding_mode="floor")
        r = 2  # two 3x3 convolutions reach 2 pixels
        x0, x1 = max(int(u.min()) - r, 0), min(int(u.max()) + r, W - 1)
        y0, y1 = max(int(v.min()) - r, 0), min(int(v.max()) + r, H - 1)
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        local = (v - y0) * bw + (u - x0)
        img = x.new_zeros(bh * bw, 4).index_copy(0, local, x).t().reshape(1, 4, bh, bw)
        h = F.leaky_relu(self.conv1(img), 0.2)
        h = self.conv2(h) * img[:, 3:4]  # zero outside the face
        return (x0, y0, bw, bh), h[0]

    def forward(self, raster: SurfaceRaster, faces: Tensor, face_weight: Tensor,
                offsets: Tensor | None = None) -> Tensor:  # fmt: skip
        """The face feature map of a frame.

        Args:
            raster: the frame's visible surface (a window of ``raster.height x raster.width``).
            faces: (F, 3) triangles.
            face_weight: (V,) face-region indicator in [0, 1].
            offsets: (V, 3) rest-space expression offsets, metres; None for the neutral face.

        Returns:
            (out_channels, height, width) float32; zero wherever the face weight is zero
            (outside the face, and where nothing is covered). Differentiable w.r.t. the
            CNN's parameters.
        """
        H, W = raster.height, raster.width
        enc = self.encode(raster, faces, face_weight, offsets)
        if enc is None:
            # keep the parameters in the graph (zero gradient) so every step sees them
            return self.conv2.bias.view(-1, 1, 1).expand(-1, H, W) * 0.0
        (x0, y0, bw, bh), h = enc
        return F.pad(h, (x0, W - x0 - bw, y0, H - y0 - bh))
