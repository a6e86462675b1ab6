"""Hand map: five channels (thumb, index, middle, ring, little) of soft finger lines.

RAM-Avatar found a hand *skeleton map* (lines between the hand's key points) the
input that makes distinct, sharp fingers. Here the key points are the posed heads of
Anny's hand bones, per finger of each hand::

    thumb   wrist -> finger1-1 -> finger1-2 -> finger1-3 -> tip1
    index   wrist -> metacarpal1 -> finger2-1 -> finger2-2 -> finger2-3 -> tip2
    ... middle (metacarpal2, finger3-*), ring (metacarpal3, finger4-*), little (metacarpal4, finger5-*)

A finger tip is not a bone head: it is placed once in rest space, on the last
finger bone's axis as far out as the vertices that bone drives, and posed with that bone.
Channel ``k`` at a pixel is ``max_segments exp(-d^2 / sigma^2)``, ``d`` the pixel's
distance to a segment of finger ``k`` and ``sigma = f * hand_sigma / z`` the finger's
half thickness (metres) projected at the segment's depth.

Mask (the decision): a hand's lines are drawn only on the pixels where the mesh's
own hand part (``hand.L``/``hand.R``) is visible. Unmasked, a hand behind the body or
the other hand would paint finger lines over the torso; masked, the lines say which
finger each visible hand pixel belongs to and where its joints are, and nothing else.
It also makes the map cheap: only the visible hand pixels (a few hundred in a
full-body frame) are measured, against that hand's 25 segments, in one vectorised
(pixels, 5, 5) computation. The map has no parameters and needs no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from perennial.avatar.texture.raster import SurfaceRaster
from perennial.render.camera import Camera

__all__ = ["FINGERS", "HandMap"]

FINGERS = ("thumb", "index", "middle", "ring", "little")


def _chains(bone_names: tuple[str, ...], side: str) -> list[list[int]]:
    """Bone ids of the 6 chain points of each finger (the tip is ``-1 - last bone``)."""
    ix = {b: i for i, b in enumerate(bone_names)}
    out = []
    for k in range(1, 6):
        pre = ["wrist"] if k == 1 else ["wrist", f"metacarpal{k - 1}"]
        names = pre + [f"finger{k}-{j}" for j in (1, 2, 3)]
        ids = [ix[f"{n}.{side}"] for n in names]
        ids.append(-1 - ids[-1])  # the tip, posed with the last bone
        ids += [ids[-1]] * (6 - len(ids))  # the thumb repeats its tip: a zero-length segment
        out.append(ids)
    return out


class HandMap(nn.Module):
    """Finger-line map of both hands (no parameters; buffers only).

    Args:
        template: the body template (bone names, parents, part labels, skin weights, faces).
        rest: the person's rest state (``template.rest_state``).
        sigma: finger half thickness, metres.
    """

    def __init__(self, template, rest, sigma: float = 0.008) -> None:
        super().__init__()
        self.sigma = float(sigma)
        names = tuple(template.bone_names)
        heads = rest.bone_poses[:, :3, 3].float()
        chains = torch.tensor([_chains(names, s) for s in ("L", "R")])  # (2, 5, 6)
        bone = torch.where(chains >= 0, chains, -1 - chains)
        points = heads[bone].clone()  # (2, 5, 6, 3) rest positions
        dominant = template.skin_indices.gather(1, template.skin_weights.argmax(1, keepdim=True))[:, 0]
        verts = rest.vertices.float()
        for s in range(2):
            for k in range(5):
                last, prev = int(bone[s, k, 4 if k else 3]), int(bone[s, k, 3 if k else 2])
                axis = heads[last] - heads[prev]
                axis = axis / axis.norm()
                reach = ((verts[dominant == last] - heads[last]) @ axis).max().clamp_min(0.0)
                points[s, k][chains[s, k] < 0] = heads[last] + reach * axis
        self.register_buffer("bone", bone, persistent=False)
        """(2, 5, 6) bone whose transform poses each chain point (hands L, R; fingers; points)."""
        self.register_buffer("rest_points", points, persistent=False)
        """(2, 5, 6, 3) chain points in rest space, metres."""
        side = torch.full((len(template.part_names),), -1, dtype=torch.int64)
        side[template.part_names.index("hand.L")] = 0
        side[template.part_names.index("hand.R")] = 1
        # a triangle belongs to a hand when its first vertex does
        self.register_buffer("face_side", side[template.part_labels[template.faces[:, 0]]], persistent=False)
        """(F,) 0 for the left hand's triangles, 1 for the right's, -1 elsewhere."""

    def joints(self, transforms: Tensor) -> Tensor:
        """(2, 5, 6, 3) posed chain points, world metres, from (J, 4, 4) skinning transforms."""
        T = transforms[self.bone]  # (2, 5, 6, 4, 4)
        # p[..., i] = sum_k T[..., i, k] * rest[..., k] + T[..., i, 3]
        return torch.einsum("...ik,...k->...i", T[..., :3, :3], self.rest_points) + T[..., :3, 3]

    def pixel_values(self, raster: SurfaceRaster, camera: Camera, transforms: Tensor) -> Tensor:
        """(N, 5) finger channels at the raster's covered pixels (zero off the hands).

        Args:
            raster: the visible surface in ``camera``'s image (a crop's camera for a crop).
            camera: the camera of the raster's window.
            transforms: (J, 4, 4) the frame's skinning transforms.
        """
        out = torch.zeros(len(raster), 5, device=raster.pixel.device)
        side = self.face_side[raster.face]
        sel = (side >= 0).nonzero()[:, 0]
        if sel.numel() == 0:
            return out
        with torch.no_grad():
            uv, z = camera.project(self.joints(transforms.detach().float()))  # (2, 5, 6, 2), (2, 5, 6)
            a, b = uv[..., :-1, :], uv[..., 1:, :]  # (2, 5, 5, 2) segment ends
            sig = camera.K[0, 0] * self.sigma / ((z[..., :-1] + z[..., 1:]) / 2).clamp_min(1e-3)  # (2, 5, 5)
            W = raster.width
            pix = raster.pixel[sel]
            p = torch.stack([pix % W, torch.div(pix, W, rounding_mode="floor")], -1).float()  # (M, 2)
            s = side[sel]
            A, D = a[s], (b - a)[s]  # (M, 5, 5, 2)
            rel = p[:, None, None] - A
            t = ((rel * D).sum(-1) / D.square().sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
            d2 = (rel - t[..., None] * D).square().sum(-1)  # (M, 5, 5) squared pixel distances
            g = torch.exp(-d2 / sig[s].square())
            out[sel] = g.amax(-1)
        return out

    def forward(self, raster: SurfaceRaster, camera: Camera, transforms: Tensor) -> Tensor:
        """(5, height, width) hand map of the raster's window (see :meth:`pixel_values`)."""
        return raster.image(self.pixel_values(raster, camera, transforms))
