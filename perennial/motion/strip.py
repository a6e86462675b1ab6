"""Pictures of a retargeted motion: the posed mesh as grey shaded figures on a checkered
floor, optionally with the source skeleton drawn over it (:func:`render_frame_strip`,
:func:`write_frame_strip`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES
from perennial.motion.bonemap import BoneMap
from perennial.motion.bvh import BVH
from perennial.motion.clip import MotionClip
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.skeleton_detect import bone_map_for

__all__ = ["render_frame_strip", "write_frame_strip"]

BACKGROUND = 0.22


def _template(template):
    if template is None:
        from perennial.body.anny import load_template

        return load_template()
    return template


def _normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) area-weighted unit vertex normals."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def render_frame_strip(
    clip: MotionClip,
    template=None,
    frames: int | list[int] = 6,
    size: int = 192,
    azimuth_deg: float = 30.0,
    labels: bool = True,
    bvh: BVH | None = None,
    bone_map: BoneMap | str | Path | None = None,
) -> np.ndarray:
    """A row of rendered frames of the posed mesh: grey shaded figure, checkered floor.

    Each tile has its own camera that follows the pelvis horizontally, 2.9 m away
    at hip height, turned ``azimuth_deg`` from the front (-Y) towards the body's
    left. The floor is z = 0 with 0.5 m checks, so floating or sunken feet show.

    Args:
        clip: the motion.
        template: Anny template (the shared one when None).
        frames: number of evenly spaced frames, or explicit frame indices.
        size: tile size in pixels.
        azimuth_deg: camera azimuth from the front.
        labels: write the frame index and time in each tile.
        bvh: optionally the source motion: its skeleton (scaled, in Anny's axes,
            moved by the per-frame offset that the joint error removes) is drawn
            over the figure in orange, its evaluation joints as dots.
        bone_map: the map used for retargeting (the detected one when None), for ``bvh``.

    Returns:
        (H, W, 3) uint8 image.
    """
    from perennial.render.camera import Camera
    from perennial.render.image import contact_sheet
    from perennial.render.raycast import WarpMeshCaster, render_hits

    template = _template(template)
    if isinstance(frames, int):
        idx = np.linspace(0, clip.num_frames - 1, max(1, frames)).round().astype(int).tolist()
    else:
        idx = [int(f) for f in frames]
    with torch.no_grad():
        out = template(clip.rotvec[idx], clip.translation[idx])
    faces = template.faces
    caster = WarpMeshCaster(out.rest_vertices[0].float(), faces)
    az = math.radians(azimuth_deg)
    view = torch.tensor([math.sin(az), -math.cos(az), 0.12])
    light = torch.tensor([0.4, -0.8, 0.6])
    light = light / light.norm()
    skel = None
    if bvh is not None:
        skel = _source_skeleton(
            bvh, bone_map_for(bvh, bone_map), clip, out.joints.double().cpu().numpy(), idx
        )
    tiles, text = [], []
    for k, f in enumerate(idx):
        verts = out.vertices[k].float()
        root = clip.translation[f]
        target = torch.tensor([float(root[0]), float(root[1]), 0.9])
        cam = Camera.look_at(target + 2.9 * view, target, size, size, fov_deg=40.0)
        hit = render_hits(verts, faces, cam, caster=caster)
        origins, dirs = cam.rays()
        img = torch.full((size * size, 3), BACKGROUND)
        # floor: checks of 0.5 m where a ray that misses the body meets z = 0
        t = -origins[:, 2] / dirs[:, 2].clamp(max=-1e-6)
        p = origins + t[:, None] * dirs
        floor = (dirs[:, 2] < -1e-6) & ~hit.mask
        check = ((p[:, 0] / 0.5).floor() + (p[:, 1] / 0.5).floor()).remainder(2) == 0
        shade = torch.where(check, 0.36, 0.46)
        fade = torch.exp(-t / 12.0)  # fade checks with distance
        img[floor] = (shade * fade + BACKGROUND * (1 - fade))[floor, None].expand(-1, 3)
        m = hit.mask
        if m.any():
            tri = faces[hit.face[m]]
            n = torch.einsum("nk,nkc->nc", hit.bary[m], _normals(verts, faces)[tri])
            n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            n = torch.where((n * dirs[m]).sum(-1, keepdim=True) > 0, -n, n)
            lam = (
                0.25 + 0.55 * (n @ light).clamp_min(0) + 0.2 * (-(n * dirs[m]).sum(-1)).clamp_min(0)
            )
            img[m] = lam[:, None] * torch.tensor([0.78, 0.78, 0.8])
        tile = (img.reshape(size, size, 3).clamp(0, 1) * 255 + 0.5).byte().numpy()
        if skel is not None:
            tile = _draw_skeleton(tile, cam, skel[0][k], skel[1], skel[2][k])
        tiles.append(tile)
        text.append(f"{f} ({f / clip.fps:.2f} s)")
    return contact_sheet(tiles, cols=len(tiles), labels=text if labels else None)


def _source_skeleton(
    bvh: BVH, bmap: BoneMap, clip: MotionClip, anny_joints: np.ndarray, idx: list[int]
):
    """Source joints at the drawn frames, offset like the joint error, plus bones and eval dots."""
    from perennial.motion.rest import rest_info
    from perennial.motion.retarget_plan import body_scale

    pos, _ = forward_kinematics(bvh)
    P = bmap.scale * body_scale(bvh, bmap, rest_info()) * pos @ bmap.axes().T  # (F, Js, 3), Anny's size
    u = np.clip(np.asarray(idx) * (bvh.fps / clip.fps), 0, bvh.num_frames - 1).round().astype(int)
    P = P[u]
    ev_s = [bvh.index(s) for s in bmap.evaluate.values()]
    ev_a = [ANNY_BONES.index(b) for b in bmap.evaluate]
    if ev_s:
        P = P + (anny_joints[:, ev_a] - P[:, ev_s]).mean(1, keepdims=True)
    bones = [(j, p) for j, p in enumerate(bvh.parents) if p >= 0]
    return P, bones, P[:, ev_s]


def _draw_skeleton(
    tile: np.ndarray, cam, joints: np.ndarray, bones, dots: np.ndarray
) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(tile)
    draw = ImageDraw.Draw(img)
    uv, z = cam.project(torch.as_tensor(joints, dtype=torch.float32))
    uv, z = uv.tolist(), z.tolist()
    for j, p in bones:
        if z[j] > 0 and z[p] > 0:
            draw.line(
                [tuple(uv[p]), tuple(uv[j])], fill=(255, 140, 0), width=max(1, tile.shape[0] // 160)
            )
    duv, dz = cam.project(torch.as_tensor(dots, dtype=torch.float32))
    r = max(1.5, tile.shape[0] / 120)
    for (x, y), d in zip(duv.tolist(), dz.tolist()):
        if d > 0:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 60, 0))
    return np.asarray(img)


def write_frame_strip(
    clip: MotionClip,
    path: str | Path,
    template=None,
    frames: int | list[int] = 6,
    size: int = 192,
    bvh: BVH | None = None,
    bone_map: BoneMap | str | Path | None = None,
) -> Path:
    """Render :func:`render_frame_strip` and save it as PNG; returns the path."""
    from perennial.render.image import save_png

    img = render_frame_strip(clip, template, frames, size, bvh=bvh, bone_map=bone_map)
    return save_png(path, img)
