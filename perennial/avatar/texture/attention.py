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

import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DualAttention",
    "criss_cross",
    "criss_cross_hwc",
    "expanded_vertices",
    "vertex_face_incidence",
]


@functools.lru_cache(maxsize=64)
def _grid(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(n, n) float32 ``|i - j|`` and the (n, n) bool diagonal, cached (the maps' sizes repeat)."""
    idx = torch.arange(n, device=device, dtype=torch.float32)
    return (idx[:, None] - idx[None, :]).abs(), torch.eye(n, dtype=torch.bool, device=device)


def criss_cross_hwc(q: Tensor, k: Tensor, v: Tensor, slope: Tensor | float = 0.0) -> Tensor:
    """:func:`criss_cross` on channels-last maps: (B, H, W, Cq) queries and keys, (B, H, W, C) values.

    Returns:
        (B, H, W, C). The layout the module works in: its 1x1 projections are then plain matrix
        products and no permuted copy is made per pass (on the 2-core CPU the maps are tiny and the
        attention's cost is the number of operations, not their size).
    """
    B, H, W, Cq = q.shape
    slope = torch.as_tensor(slope, dtype=q.dtype, device=q.device)
    dist_w, _ = _grid(W, q.device)
    dist_h, own = _grid(H, q.device)
    q = q * (1.0 / math.sqrt(Cq))
    kt = k.transpose(1, 2)  # (B, W, H, Cq)
    # e_row[b, h, w, w'] = sum_c q[b, h, w, c] k[b, h, w', c];  e_col[b, w, h, h'] = sum_c q[b, h, w, c] k[b, h', w, c]
    e_row = torch.matmul(q, k.transpose(-1, -2)) - slope * dist_w.to(q.dtype)
    e_col = torch.matmul(q.transpose(1, 2), kt.transpose(-1, -2)) - slope * dist_h.to(q.dtype)
    e_col = e_col.masked_fill(own, float("-inf"))  # position (h, w) counted once, in its row
    att = torch.softmax(torch.cat([e_row, e_col.transpose(1, 2)], -1), -1)  # (B, H, W, W + H')
    a_row, a_col = att.split([W, H], -1)
    # out[b, h, w, c] = sum_w' a_row[b, h, w, w'] v[b, h, w', c] + sum_h' a_col[b, h, w, h'] v[b, h', w, c]
    out_col = torch.matmul(a_col.transpose(1, 2), v.transpose(1, 2))  # (B, W, H, C)
    return torch.matmul(a_row, v) + out_col.transpose(1, 2)


def criss_cross(q: Tensor, k: Tensor, v: Tensor, slope: Tensor | float = 0.0) -> Tensor:
    """Criss-cross attention (module docstring) of (B, Cq, H, W) queries and keys, (B, C, H, W) values.

    Returns:
        (B, C, H, W): per position the attention-weighted sum of the values in its row and column
        (the position itself counted once, in its row).
    """

    def hwc(x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)

    return criss_cross_hwc(hwc(q), hwc(k), hwc(v), slope).permute(0, 3, 1, 2)


def vertex_face_incidence(faces: Tensor, num_vertices: int) -> Tensor:
    """(V, F) sparse CSR matrix with a 1 where vertex ``v`` is a corner of face ``f``."""
    rows = faces.T.reshape(-1)
    cols = torch.arange(len(faces), device=faces.device).repeat(3)
    ones = torch.ones(len(rows), device=faces.device)
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), ones, (num_vertices, len(faces)), check_invariants=True
    )
    with warnings.catch_warnings():  # "sparse CSR support is in beta": sums of rows are all we use
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr()


def expanded_vertices(
    vertices: Tensor, faces: Tensor, distance: float, incidence: Tensor | None = None
) -> Tensor:
    """(V, 3) posed vertices moved ``distance`` metres along their area-weighted unit normals.

    ``incidence``: :func:`vertex_face_incidence` of ``faces`` (built here when not given): the face
    normals are summed per vertex as one sparse product (a third of the time of ``index_add``).
    """
    p0, p1, p2 = (vertices.index_select(0, faces[:, i]) for i in range(3))
    fn = torch.linalg.cross(p1 - p0, p2 - p0)  # (F, 3), twice the area along the face normal
    if incidence is None:
        incidence = vertex_face_incidence(faces, len(vertices))
    n = incidence @ fn  # n[v] = sum over the faces f around v of fn[f]
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
        """(B, h1, w1, C) channels-last maps; the 1x1 convolutions as matrix products.

        :class:`DualAttention` runs both parts batched; this is the one-part twin its test compares with.
        """
        q = F.linear(query_map, self.query.weight.flatten(1), self.query.bias)
        slope = F.softplus(self.slope_raw)
        f = body
        for _ in range(self.passes):
            k, v = F.linear(f, self.key_value.weight.flatten(1), self.key_value.bias).split(
                [q.shape[-1], f.shape[-1]], -1
            )
            f = f + self.alpha * criss_cross_hwc(q, k, v, slope)
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
        self.passes = passes
        # a 3x3 convolution per part, then their sum: one convolution over the parts' concatenation
        self.fuse = nn.Conv2d(channels * (int(spatial) + int(temporal)), channels, 3, padding=1)
        self.gain = nn.Parameter(torch.zeros(()))
        """Scales the fused result; 0 at first, so the module starts as the identity of the body map."""

    def forward(
        self, body: Tensor, expanded: Tensor | None = None, previous: Tensor | None = None
    ) -> Tensor:
        """The residual to add to the body map, (B, C, h1, w1).

        Args:
            body: (B, C, h1, w1) body map; expanded: the normal-expanded map (spatial part);
            previous: the previous frame's body map (temporal part; default: ``body``, a still frame).
        """

        B, C, H, W = body.shape
        parts = [
            (b, m)
            for b, m in ((self.spatial, expanded), (self.temporal, previous))
            if b is not None
        ]
        n = len(parts)

        def flat(x: Tensor | None) -> Tensor:  # (1, B h1 w1, C) channels last
            return (body if x is None else x).permute(0, 2, 3, 1).reshape(1, B * H * W, C)

        def stacked(
            name: str,
        ) -> tuple[Tensor, Tensor]:  # the parts' 1x1 convolutions: (n, in, out), (n, 1, out)
            convs = [getattr(b, name) for b, _ in parts]
            return torch.stack([c.weight.flatten(1).t() for c in convs]), torch.stack(
                [c.bias for c in convs]
            )[:, None]

        def per_part(name: str) -> Tensor:  # (n B, 1, 1, 1)
            return (
                torch.stack([getattr(b, name) for b, _ in parts])
                .repeat_interleave(B)
                .view(-1, 1, 1, 1)
            )

        # both parts in one batch (first dimension: part, then image): half the operations of one
        # part after the other, which is what an attention on 13 x 30 cells costs on a CPU
        (wq, bq), (wkv, bkv) = stacked("query"), stacked("key_value")
        ck = wq.shape[-1]
        q = torch.baddbmm(bq, torch.cat([flat(m) for _, m in parts]), wq).view(n * B, H, W, ck)
        slope, alpha = F.softplus(per_part("slope_raw")), per_part("alpha")
        f = flat(None).expand(n, -1, -1).reshape(n * B, H, W, C)
        for _ in range(self.passes):
            kv = torch.baddbmm(bkv, f.view(n, B * H * W, C), wkv).view(n * B, H, W, ck + C)
            k, v = kv.split([ck, C], -1)
            f = f + alpha * criss_cross_hwc(q, k, v, slope)
        # fused[b, part * C + c, h, w] = f[part * B + b, h, w, c]
        fused = f.view(n, B, H, W, C).permute(1, 0, 4, 2, 3).reshape(B, n * C, H, W)
        return self.gain * self.fuse(fused)
