"""Dual attention of the texture avatar (RAM-Avatar, Sec. 3.2): spatial and temporal criss-cross
attention on the body feature map, at reduced resolution.

Maps (all ``(C, h1, w1)`` on the generator window's grid reduced ``reduction`` times, C = the
texture's channels + a coverage channel, rasterised directly at that resolution):

- ``body``: the neural texture of the posed body (the map the generator reads, low-res);
- ``expanded``: the same texture on the posed mesh pushed out along its vertex normals by
  ``expand`` metres: it covers what stands off the body (loose clothes) and tells pixels near
  the template from pixels far from it;
- ``previous``: the body map of the previous frame's pose in the current camera and window.

**Criss-cross attention** (Huang et al., CCNet): every position ``u`` attends to the
``h1 + w1 - 1`` positions of its row and column. With 1x1-convolution queries ``Q``, keys
``K`` (``key_channels``) and values ``V`` (C channels), the weight of position ``i`` is

    A[i, u] = softmax_i( Q_u . K_i / sqrt(key_channels) - s |i - u| )

where ``|i - u|`` is the distance along the row or column in low-res pixels and ``s > 0`` a
learned slope: the paper's distance weighting ``d(i, u)`` as a factor ``exp(-s |i - u|)`` on
the unnormalised weights, so near positions count more. The output is ``sum_i A[i, u] V_i``.

**Spatial part**: queries from ``expanded``, keys and values from the body map; applied twice
(the second pass reads the first one's output, CCNet's recurrence, which connects every pair of
positions), each pass ``F <- F + alpha * attention(F)`` (skip connection, learned ``alpha``).
**Temporal part**: the same with queries from ``previous`` (keys and values from the current
body map). **Fusion**: one 3x3 convolution per part, summed (computed as one convolution over
the parts' concatenation), times a learned ``gain`` that starts at 0 (so a new module changes nothing until training moves it). The result, upsampled
to the window, is added to the generator's texture and coverage channels
(:class:`~perennial.avatar.texture.model.TextureAvatar`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DualAttention", "criss_cross", "expanded_vertices"]


def _distance_bias(n: int, slope: Tensor, device) -> Tensor:
    """(n, n) ``-slope * |i - j|``."""
    idx = torch.arange(n, device=device, dtype=slope.dtype)
    return -slope * (idx[:, None] - idx[None, :]).abs()


def criss_cross(q: Tensor, k: Tensor, v: Tensor, slope: Tensor | float = 0.0) -> Tensor:
    """Criss-cross attention (module docstring) of (B, Cq, H, W) queries and keys, (B, C, H, W) values.

    Returns:
        (B, C, H, W): per position the attention-weighted sum of the values in its row and column
        (the position itself counted once, in its row).
    """
    B, Cq, H, W = q.shape
    slope = torch.as_tensor(slope, dtype=q.dtype, device=q.device)
    scale = 1.0 / math.sqrt(Cq)
    # rows as batched matrix products over (b, h), columns over (b, w), on contiguous layouts:
    # e_row[b, h, w, w'] = sum_c q[b, c, h, w] k[b, c, h, w'];  e_col[b, w, h, h'] = sum_c q[b, c, h, w] k[b, c, h', w]
    # (contiguous copies: a strided batched product took 25x longer on the 2-core CPU)
    e_row = q.permute(0, 2, 3, 1).contiguous() @ k.permute(0, 2, 1, 3).contiguous()
    e_col = q.permute(0, 3, 2, 1).contiguous() @ k.permute(0, 3, 1, 2).contiguous()
    e_row = e_row * scale + _distance_bias(W, slope, q.device)
    e_col = (e_col * scale + _distance_bias(H, slope, q.device)).permute(0, 2, 1, 3)  # (B, H, W, H')
    own = torch.eye(H, dtype=torch.bool, device=q.device)[:, None, :]  # (H, 1, H'): h' == h
    e_col = e_col.masked_fill(own, float("-inf"))
    att = torch.softmax(torch.cat([e_row, e_col], -1), -1)
    a_row, a_col = att[..., :W], att[..., W:]
    # out[b, c, h, w] = sum_w' a_row[b, h, w, w'] v[b, c, h, w'] + sum_h' a_col[b, h, w, h'] v[b, c, h', w]
    out_row = a_row.contiguous() @ v.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
    out_col = a_col.permute(0, 2, 1, 3).contiguous() @ v.permute(0, 3, 2, 1).contiguous()  # (B, W, H, C)
    return (out_row.permute(0, 3, 1, 2) + out_col.permute(0, 3, 2, 1)).contiguous()


def expanded_vertices(vertices: Tensor, faces: Tensor, distance: float) -> Tensor:
    """(V, 3) posed vertices moved ``distance`` metres along their area-weighted unit normals."""
    tri = vertices[faces]  # (F, 3 corners, 3)
    fn = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = torch.zeros_like(vertices)
    for i in range(3):
        n.index_add_(0, faces[:, i], fn)
    return vertices + distance * n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class _Branch(nn.Module):
    """One part (spatial or temporal): query and key/value projections, criss-cross passes with skips."""

    def __init__(self, channels: int, key_channels: int, passes: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key_value = nn.Conv2d(channels, key_channels + channels, 1)
        """Keys and values in one 1x1 convolution (one pass over the map instead of two)."""
        self.alpha = nn.Parameter(torch.ones(()))
        """The paper's alpha: the weight of the attention output in each pass's skip connection."""
        self.slope_raw = nn.Parameter(torch.full((), math.log(math.expm1(0.1))))
        """softplus of it is the distance slope ``s`` (0.1 per low-res pixel at first)."""
        self.passes = passes

    def forward(self, body: Tensor, query_map: Tensor) -> Tensor:
        q = self.query(query_map)
        slope = F.softplus(self.slope_raw)
        f = body
        for _ in range(self.passes):
            k, v = self.key_value(f).split([q.shape[1], f.shape[1]], 1)
            f = f + self.alpha * criss_cross(q, k, v, slope)
        return f


class DualAttention(nn.Module):
    """Spatial and temporal criss-cross attention with a zero-initialised gain (module docstring).

    Args:
        channels: C, channels of the body map (texture + coverage).
        key_channels: channels of queries and keys.
        spatial: build the spatial part; temporal: build the temporal part.
        passes: criss-cross passes per part (2: every position reaches every other).
    """

    def __init__(self, channels: int, key_channels: int = 8, spatial: bool = True, temporal: bool = True,
                 passes: int = 2) -> None:  # fmt: skip
        super().__init__()
        if not (spatial or temporal):
            raise ValueError("DualAttention needs the spatial or the temporal part")
        self.spatial = _Branch(channels, key_channels, passes) if spatial else None
        self.temporal = _Branch(channels, key_channels, passes) if temporal else None
        # a 3x3 convolution per part, then their sum: one convolution over the parts' concatenation
        self.fuse = nn.Conv2d(channels * (int(spatial) + int(temporal)), channels, 3, padding=1)
        self.gain = nn.Parameter(torch.zeros(()))
        """Scales the fused result; 0 at first, so the module starts as the identity of the body map."""

    def forward(self, body: Tensor, expanded: Tensor | None = None, previous: Tensor | None = None) -> Tensor:
        """The residual to add to the body map, (B, C, h1, w1).

        Args:
            body: (B, C, h1, w1) body map; expanded: the normal-expanded map (spatial part);
            previous: the previous frame's body map (temporal part; default: ``body``, a still frame).
        """
        parts = []
        if self.spatial is not None:
            parts.append(self.spatial(body, body if expanded is None else expanded))
        if self.temporal is not None:
            parts.append(self.temporal(body, body if previous is None else previous))
        return self.gain * self.fuse(torch.cat(parts, 1) if len(parts) > 1 else parts[0])
