"""Procedural outfits for synthetic captures.

An outfit is a small seeded description (garments, colours, patterns, and the
fine detail of the face and hands, :mod:`perennial.capture.detail`). Colours
are evaluated per surface point from the point's *rest-pose* position and body
part, so patterns stick to the body when it moves.
"""

from __future__ import annotations

import colorsys
import math
import random
import zlib
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from perennial.capture.detail import Detail

PATTERNS = ("solid", "stripes", "checks", "dots", "noise")
SLEEVES = ("none", "short", "long")
BOTTOMS = ("shorts", "trousers")
_SKIN_TONES = ((0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.72, 0.52, 0.38), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16))  # fmt: skip
_HAIR = ((0.08, 0.06, 0.05), (0.30, 0.18, 0.09), (0.65, 0.45, 0.22), (0.85, 0.75, 0.50), (0.55, 0.20, 0.08))  # fmt: skip


@dataclass
class Garment:
    """A piece of clothing's look.

    Attributes:
        colour: base RGB in [0, 1].
        pattern: one of :data:`PATTERNS`.
        accent: second RGB colour used by the pattern.
        scale: pattern period in metres (rest-pose surface).
    """

    colour: tuple[float, float, float]
    pattern: str = "solid"
    accent: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 0.08


@dataclass
class Outfit:
    """A seeded clothed look for the body.

    Attributes:
        name: appearance name.
        sleeves: top's sleeve length, one of :data:`SLEEVES`.
        top: the top's look.
        bottom_kind: ``"shorts"`` or ``"trousers"``.
        bottom: the bottom's look.
        shoes: RGB of the shoes.
        skin: RGB skin tone.
        hair: RGB hair colour.
        noise_seed: seed of the ``noise`` pattern.
        extra: free-form notes (unused by the renderer).
        detail: the face and hand detail, or None for none.
    """

    name: str
    sleeves: str
    top: Garment
    bottom_kind: str
    bottom: Garment
    shoes: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    noise_seed: int = 0
    extra: dict = field(default_factory=dict)
    detail: Detail | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_name(name: str, seed: int = 0) -> Outfit:
        """The outfit seeded by ``name`` and ``seed`` (same inputs, same outfit)."""
        rng = random.Random(zlib.crc32(name.encode()) * 1000003 + seed)

        def colour(sat=(0.45, 0.9), val=(0.35, 0.95)) -> tuple[float, float, float]:
            return draw_colour(rng, sat, val)

        def garment() -> Garment:
            base = colour()
            accent = tuple(round(1.0 - 0.8 * c, 4) for c in base) if rng.random() < 0.5 else colour()
            return Garment(base, rng.choice(PATTERNS), accent, round(rng.uniform(0.05, 0.12), 4))

        outfit = Outfit(
            name=name,
            sleeves=rng.choice(SLEEVES),
            top=garment(),
            bottom_kind=rng.choice(BOTTOMS),
            bottom=garment(),
            shoes=colour(sat=(0.0, 0.5), val=(0.1, 0.6)),
            skin=rng.choice(_SKIN_TONES),
            hair=rng.choice(_HAIR),
            noise_seed=rng.randrange(1 << 30),
        )
        # drawn last, so that the garments above are those of outfits made before detail existed
        outfit.detail = Detail.draw(rng, outfit.skin, outfit.hair)
        return outfit


def draw_colour(rng: random.Random, sat: tuple[float, float] = (0.45, 0.9),
                val: tuple[float, float] = (0.35, 0.95)) -> tuple[float, float, float]:  # fmt: skip
    """A random RGB colour: uniform hue, saturation and value in the given ranges."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return tuple(round(c, 4) for c in rgb)


def pattern_colour(g: Garment, p: Tensor, noise_seed: int) -> Tensor:
    """(N, 3) colour of garment ``g`` at (N, 3) rest-space points ``p``."""
    base = torch.tensor(g.colour, dtype=p.dtype, device=p.device)
    accent = torch.tensor(g.accent, dtype=p.dtype, device=p.device)
    s = g.scale
    if g.pattern == "solid":
        t = torch.zeros_like(p[:, 0])
    elif g.pattern == "stripes":  # horizontal bands, a third of the period wide
        t = ((p[:, 2] / s) % 1.0 < 0.33).to(p.dtype)
    elif g.pattern == "checks":
        t = (torch.floor(p / s).sum(-1) % 2).to(p.dtype)
    elif g.pattern == "dots":
        d = ((p / s) % 1.0 - 0.5).norm(dim=-1)
        t = (d < 0.28).to(p.dtype)
    elif g.pattern == "noise":  # smooth band-limited noise: a few seeded plane waves
        gen = torch.Generator().manual_seed(noise_seed)
        k = torch.randn(6, 3, generator=gen) * (2 * math.pi / s)
        ph = torch.rand(6, generator=gen) * 2 * math.pi
        t = (torch.sin(p @ k.T.to(p) + ph.to(p)).mean(-1) * 1.5 + 0.5).clamp(0, 1)
    else:
        raise ValueError(f"unknown pattern {g.pattern!r}; known: {PATTERNS}")
    return base + (accent - base) * t[:, None]


def outfit_colours(outfit: Outfit, rest: Tensor, part: Tensor, part_names: tuple[str, ...], head_top: float) -> Tensor:
    """Albedo of surface points (garments, shoes, hair and skin; no face or hand detail).

    Args:
        outfit: the look.
        rest: (N, 3) rest-pose positions (Anny rest frame: root at the origin, Z up,
            arms in an A-pose along +-X), metres.
        part: (N,) body-part ids, indices into ``part_names``.
        part_names: names of the template's body parts.
        head_top: rest-space Z of the top of the head, metres.

    Returns:
        (N, 3) RGB in [0, 1].
    """
    return outfit_albedo(outfit, rest, part, part_names, head_top)[0]


def outfit_albedo(
    outfit: Outfit, rest: Tensor, part: Tensor, part_names: tuple[str, ...], head_top: float
) -> tuple[Tensor, Tensor]:
    """:func:`outfit_colours` and where the skin is bare.

    Returns:
        (N, 3) RGB in [0, 1], and (N,) bool: True where no garment, shoe or hair covers the skin.
    """
    P = {n: i for i, n in enumerate(part_names)}

    def is_(*names: str) -> Tensor:
        out = torch.zeros_like(part, dtype=torch.bool)
        for n in names:
            out |= part == P[n]
        return out

    x, y, z = rest.unbind(-1)
    ax = x.abs()
    skin = torch.tensor(outfit.skin, dtype=rest.dtype).expand_as(rest)
    colour = skin.clone()
    waist = 0.07
    # top: torso above the waist, plus sleeves
    top = is_("torso") & (z >= waist)
    if outfit.sleeves == "short":
        top |= is_("upperarm.L", "upperarm.R") & (ax < 0.27)
    elif outfit.sleeves == "long":
        top |= is_("upperarm.L", "upperarm.R", "lowerarm.L", "lowerarm.R") & (ax < 0.43)
    else:
        top |= is_("upperarm.L", "upperarm.R") & (ax < 0.19)  # shoulder straps
    # bottom: hips and legs
    bottom = (is_("torso") & (z < waist)) | is_("upperleg.L", "upperleg.R")
    if outfit.bottom_kind == "shorts":
        bottom &= z > -0.30
    else:
        bottom |= is_("lowerleg.L", "lowerleg.R") & (z > -0.76)
    shoes = is_("foot.L", "foot.R") | (is_("lowerleg.L", "lowerleg.R") & (z <= -0.76))
    hair = is_("head") & ((z > head_top - 0.075) | ((z > head_top - 0.21) & (y > -0.02)))
    for sel, look in ((top, outfit.top), (bottom, outfit.bottom)):
        if sel.any():
            colour[sel] = pattern_colour(look, rest[sel], outfit.noise_seed)
    colour[shoes] = torch.tensor(outfit.shoes, dtype=rest.dtype)
    colour[hair] = torch.tensor(outfit.hair, dtype=rest.dtype)
    return colour.clamp(0, 1), ~(top | bottom | shoes | hair)
