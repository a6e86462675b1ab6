"""Loose garments for synthetic captures: cloth shells that stand off the body and lag behind it.

Painted outfits (:mod:`perennial.capture.outfit`) stick to the skin, so the body template
explains every pixel. A loose garment is a separate triangle mesh, a *cloth shell*:

- **Shape** (rest frame: root at the origin, Z up, the body faces -Y). A stack of rings
  from the garment's top down to its hem. Each ring is an ellipse around the body's slice
  at that height (the torso and leg vertices in a 5 cm slab; arms and hands left out),
  grown until it contains the whole slice, plus a stand-off that rises from ~1.5 cm at the
  top to the garment's ``flare`` at the hem. Skirts, dresses and coats never narrow
  towards the hem (a bell, not a sheath between the legs); ``trousers`` are one such
  tube around each leg (wide, palazzo-like); a ``coat`` has its front open (a gap that
  widens from 30 to 70 degrees towards the hem). ``u`` in [0, 1] runs from the top ring
  (0) to the hem (1).
- **Skinning.** A vertex's bone weights are the inverse-distance mean of the weights of
  its 12 nearest body vertices (of the same parts), blended towards the mean of its ring
  with ``u`` (the hem of a skirt follows both thighs, not one).
- **Motion** (:func:`simulate`). Per frame the skinned position is a target ``y_t``, and
  each vertex is a damped spring pulled towards it: ``v_t = (1 - d) v_{t-1} + k (y_t -
  x_{t-1})``, ``x_t = x_{t-1} + v_t``, with ``k = 1 - (1 - k_hem) u`` and ``d = 1 - (1 -
  d_hem) u``: the top ring follows the body exactly (``k = d = 1``), the hem lags and
  swings (per frame of the capture's rate; the defaults are meant for ~30 fps). The lag
  is clipped to ``max_lag`` metres from the target so that legs rarely pass through.
  Frame ``t`` thus depends on the frames before it, not only on the pose.

Rendering (:mod:`perennial.capture.synth`) casts rays against the body and the shell as
one mesh, so masks are the exact coverage of their union; the inside of a shell is shaded
as a darker lining.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from perennial.capture.outfit import Garment, Outfit, draw_colour, pattern_colour

__all__ = ["LOOSE_KINDS", "ClothShell", "LooseGarment", "build_shell", "draw_loose", "shell_colours", "simulate"]

LOOSE_KINDS = ("skirt", "dress", "coat", "trousers")
"""Garments that stand off the body."""
_SLAB = 0.025
"""Half-height of the body slice that shapes a ring, metres."""
_RINGS, _AROUND = 14, 48
"""Rings from top to hem, and vertices around each ring (per leg for trousers)."""
# kind -> (rest-space top and hem heights in metres, parts that shape and skin it)
_SPAN = {
    "skirt": (0.07, -0.36, ("torso", "upperleg.L", "upperleg.R", "lowerleg.L", "lowerleg.R")),
    "dress": (0.22, -0.46, ("torso", "upperleg.L", "upperleg.R", "lowerleg.L", "lowerleg.R")),
    "coat": (0.22, -0.30, ("torso", "upperleg.L", "upperleg.R")),
    "trousers": (-0.06, -0.74, None),  # per leg: that leg's parts
}


@dataclass
class LooseGarment:
    """A loose garment's kind, look and motion.

    Attributes:
        kind: one of :data:`LOOSE_KINDS`.
        look: colours and pattern (a :class:`~perennial.capture.outfit.Garment`).
        flare: stand-off from the body at the hem, metres.
        stiffness: spring constant ``k_hem`` of the hem per frame, in (0, 1] (1: no lag).
        damping: damping ``d_hem`` of the hem per frame, in (0, 1].
        max_lag: largest distance of a vertex from its skinned position, metres.
    """

    kind: str
    look: Garment
    flare: float = 0.12
    stiffness: float = 0.35
    damping: float = 0.35
    max_lag: float = 0.06


def draw_loose(kind: str, outfit: Outfit, seed: int = 0) -> LooseGarment:
    """The loose garment of ``kind`` for ``outfit``, seeded by its name and ``seed``.

    ``kind`` "any" draws one of :data:`LOOSE_KINDS`. Skirts and trousers take the outfit's
    bottom look, dresses its top look, coats a colour of their own.
    """
    rng = random.Random(zlib.crc32(("loose:" + outfit.name).encode()) * 7919 + seed)
    if kind == "any":
        kind = rng.choice(LOOSE_KINDS)
    if kind not in LOOSE_KINDS:
        raise ValueError(f"unknown loose garment {kind!r}; known: {LOOSE_KINDS} or 'any'")
    look = {"skirt": outfit.bottom, "trousers": outfit.bottom, "dress": outfit.top}.get(kind)
    if look is None:
        look = Garment(draw_colour(rng, val=(0.25, 0.7)), "solid", draw_colour(rng), 0.1)
    flare = {"skirt": 0.13, "dress": 0.15, "coat": 0.07, "trousers": 0.07}[kind] * rng.uniform(0.85, 1.15)
    return LooseGarment(kind, look, round(flare, 4), round(rng.uniform(0.3, 0.45), 4), round(rng.uniform(0.3, 0.45), 4))


@dataclass
class ClothShell:
    """A cloth mesh in the rest frame with its skinning and motion parameters.

    Attributes:
        rest: (S, 3) rest-space vertices, metres.
        faces: (F, 3) int64 triangles, wound so that their normals point away from the body.
        weights: (S, J) bone weights, rows summing to 1.
        u: (S,) 0 at the top ring, 1 at the hem.
        garment: the garment it was made for.
    """

    rest: Tensor
    faces: Tensor
    weights: Tensor
    u: Tensor
    garment: LooseGarment


def _ellipse_rings(points: Tensor, heights: Tensor, monotone: bool) -> tuple[Tensor, Tensor]:
    """Per height: centre (K, 2) and semi-axes (K, 2) of an ellipse containing the slice."""
    centres, axes = [], []
    for z in heights.tolist():
        sl = points[(points[:, 2] - z).abs() < _SLAB][:, :2]
        if sl.shape[0] < 3:  # below the body part: keep the last ring
            centres.append(centres[-1])
            axes.append(axes[-1])
            continue
        c = (sl.amax(0) + sl.amin(0)) / 2
        ab = ((sl - c).abs().amax(0)).clamp_min(0.02)
        ab = ab * ((sl - c) / ab).norm(dim=-1).amax().clamp_min(1.0)  # contain every point
        centres.append(c)
        axes.append(ab)
    centres, axes = torch.stack(centres), torch.stack(axes)
    if monotone:  # a bell: never narrower than the ring above
        axes = torch.cummax(axes, dim=0).values
    return centres, axes


def _tube(centres: Tensor, axes: Tensor, heights: Tensor, offsets: Tensor, gap: Tensor | None) -> tuple[Tensor, Tensor]:
    """Vertices (K * M, 3) and outward-wound faces of a ring stack; ``gap`` (K,) opens the front."""
    K, M = heights.shape[0], _AROUND
    closed = gap is None
    steps = torch.arange(M, dtype=torch.float32) / (M if closed else M - 1)
    if closed:
        theta = (steps * 2 * math.pi)[None].expand(K, M)
    else:  # from gap/2 to 2 pi - gap/2 around the back; theta = 0 is the front (-Y)
        theta = gap[:, None] / 2 + steps[None] * (2 * math.pi - gap[:, None])
    a = axes[:, :1] + offsets[:, None]
    b = axes[:, 1:] + offsets[:, None]
    x = centres[:, :1] + a * torch.sin(theta)
    y = centres[:, 1:] - b * torch.cos(theta)
    verts = torch.stack([x, y, heights[:, None].expand(K, M)], -1).reshape(-1, 3)
    faces = []
    for k in range(K - 1):
        for m in range(M if closed else M - 1):
            i0, i1 = k * M + m, k * M + (m + 1) % M
            j0, j1 = i0 + M, i1 + M
            # theta grows clockwise seen from above and rings go down: (i0, j0, i1) faces outwards
            faces += [(i0, j0, i1), (i1, j0, j1)]
    return verts, torch.tensor(faces, dtype=torch.int64)


def build_shell(garment: LooseGarment, rest_vertices: Tensor, part_labels: Tensor, part_names: tuple[str, ...],
                weights: Tensor) -> ClothShell:  # fmt: skip
    """The cloth shell of ``garment`` on a body (module docstring).

    Args:
        garment: what to make.
        rest_vertices: (V, 3) the body's rest mesh, metres.
        part_labels: (V,) body-part id per vertex, indices into ``part_names``.
        weights: (V, J) the body's dense skinning weights.
    """
    top, hem, parts = _SPAN[garment.kind]
    heights = torch.linspace(top, hem, _RINGS)
    u = torch.linspace(0.0, 1.0, _RINGS)
    offsets = 0.015 + (garment.flare - 0.015) * u**1.5
    if garment.kind == "dress":  # fitted above the waist, flared below
        below = ((0.07 - heights) / (0.07 - hem)).clamp(0, 1)
        offsets = 0.015 + (garment.flare - 0.015) * below**1.5
    groups = [parts] if parts is not None else [(f"upperleg.{s}", f"lowerleg.{s}") for s in "LR"]
    verts, faces, us, ws = [], [], [], []
    for names in groups:
        sel = torch.zeros_like(part_labels, dtype=torch.bool)
        for n in names:
            sel |= part_labels == part_names.index(n)
        pts, w = rest_vertices[sel], weights[sel]
        centres, axes = _ellipse_rings(pts, heights, monotone=garment.kind != "trousers")
        gap = torch.deg2rad(30 + 40 * u) if garment.kind == "coat" else None
        v, f = _tube(centres, axes, heights, offsets, gap)
        # bone weights: inverse-distance mean over the 12 nearest body vertices of these parts
        d, idx = torch.cdist(v, pts).topk(12, largest=False)
        inv = 1 / d.clamp_min(1e-3)
        wv = (inv[..., None] * w[idx]).sum(1) / inv.sum(1, keepdim=True)
        uv = u.repeat_interleave(v.shape[0] // _RINGS)
        ring_mean = wv.view(_RINGS, -1, wv.shape[1]).mean(1).repeat_interleave(v.shape[0] // _RINGS, 0)
        wv = (1 - 0.6 * uv[:, None]) * wv + 0.6 * uv[:, None] * ring_mean
        faces.append(f + sum(x.shape[0] for x in verts))
        verts.append(v)
        us.append(uv)
        ws.append(wv / wv.sum(1, keepdim=True))
    return ClothShell(torch.cat(verts), torch.cat(faces), torch.cat(ws), torch.cat(us), garment)


def simulate(shell: ClothShell, transforms: Tensor) -> Tensor:
    """Posed shell vertices over a sequence of frames (module docstring: skinning + damped springs).

    Args:
        shell: from :func:`build_shell`.
        transforms: (T, J, 4, 4) skinning transforms (rest -> world) of consecutive frames.

    Returns:
        (T, S, 3) world-space shell vertices, metres.
    """
    g = shell.garment
    J = transforms.shape[1]
    # A[t, s] = sum_j weights[s, j] * transforms[t, j]  (rows 0-2 of the affine 4x4)
    A = torch.einsum("sj,tjab->tsab", shell.weights, transforms[:, :, :3, :].reshape(-1, J, 3, 4))
    targets = (A[..., :3] @ shell.rest[None, :, :, None])[..., 0] + A[..., 3]
    k = (1 - (1 - g.stiffness) * shell.u)[:, None]
    d = (1 - (1 - g.damping) * shell.u)[:, None]
    x, v = targets[0].clone(), torch.zeros_like(targets[0])
    out = [x]
    for y in targets[1:]:
        v = (1 - d) * v + k * (y - x)
        lag = x + v - y
        x = y + lag * (g.max_lag / lag.norm(dim=-1, keepdim=True).clamp_min(g.max_lag))
        v = x - out[-1]
        out.append(x)
    return torch.stack(out)


def shell_colours(shell: ClothShell, face: Tensor, bary: Tensor, inside: Tensor, noise_seed: int) -> Tensor:
    """Albedo (N, 3) of shell hits: the garment's pattern on the rest shell, a darker lining inside,
    and a band along the hem.

    Args:
        face: (N,) shell triangle ids; bary: (N, 3) barycentrics; inside: (N,) bool, seen from inside.
    """
    tri = shell.faces[face]
    rest = torch.einsum("nk,nkc->nc", bary, shell.rest[tri])
    u = torch.einsum("nk,nk->n", bary, shell.u[tri])
    colour = pattern_colour(shell.garment.look, rest, noise_seed)
    accent = torch.tensor(shell.garment.look.accent, dtype=colour.dtype)
    colour = torch.where((u > 0.93)[:, None], 0.5 * colour + 0.5 * accent, colour)
    return torch.where(inside[:, None], 0.55 * colour, colour).clamp(0, 1)
