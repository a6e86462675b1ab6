"""Figures and pictures that check a retargeted motion.

:func:`motion_figures` compares a :class:`MotionClip` posed on Anny with its
source BVH skeleton:

- ``mean_joint_error_cm``: mean distance between corresponding joints (hips,
  knees, ankles, shoulders, elbows, wrists, head; the bone map's ``evaluate``
  pairs) of the scaled source skeleton and the posed Anny, after removing the
  global offset *per frame* (the mean of the 13 differences in that frame), so
  only posture and proportions count, not where the root was placed;
- ``worst_foot_penetration_cm``: how far the lowest foot vertex of the posed
  mesh goes below the floor z = 0 in the worst frame (0 when never below);
- ``max_bone_rotation_deg``: the largest frame-to-frame change of any bone's
  world orientation (a flipped bone shows up as a jump towards 180 deg).

:func:`evaluate_bvh` reads, retargets (timed) and evaluates one file;
:func:`render_frame_strip` / :func:`write_frame_strip` draw a few frames of the
posed mesh as grey shaded figures on a checkered floor.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES
from perennial.motion.bonemap import BoneMap, resolve_bone_map
from perennial.motion.bvh import BVH, read_bvh
from perennial.motion.clip import MotionClip
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.rest import rest_info
from perennial.motion.retarget import retarget

BACKGROUND = 0.22

__all__ = [
    "bench_motion",
    "evaluate_bvh",
    "motion_figures",
    "render_frame_strip",
    "write_frame_strip",
]


def _template(template):
    if template is None:
        from perennial.body.anny import load_template

        return load_template()
    return template


def _pose_batches(template, clip: MotionClip, batch: int):
    for s in range(0, clip.num_frames, batch):
        with torch.no_grad():
            yield s, template(clip.rotvec[s : s + batch], clip.translation[s : s + batch])


def _source_joints_at(bvh: BVH, bmap: BoneMap, clip: MotionClip) -> np.ndarray:
    """(F_clip, K, 3) evaluation joints of the source in Anny axes and metres, at clip times."""
    idx = [bvh.index(s) for s in bmap.evaluate.values()]
    pos, _ = forward_kinematics(bvh)
    P = bmap.scale * pos[:, idx] @ bmap.axes().T
    if clip.num_frames == bvh.num_frames and abs(clip.fps - bvh.fps) < 1e-6 * bvh.fps:
        return P
    u = np.clip(np.arange(clip.num_frames) * (bvh.fps / clip.fps), 0, bvh.num_frames - 1)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, bvh.num_frames - 1)
    w = (u - i0)[:, None, None]
    return (1 - w) * P[i0] + w * P[i1]


def motion_figures(
    bvh: BVH,
    clip: MotionClip,
    template=None,
    bone_map: BoneMap | str | Path | None = None,
    batch: int = 128,
) -> dict[str, Any]:
    """Per-clip figures of a retargeted motion against its source (see module docstring).

    Args:
        bvh: the source motion (the clip may be resampled: the source is
            interpolated linearly at the clip's frame times).
        clip: the retargeted clip.
        template: Anny template (the shared one when None).
        bone_map: the map used for retargeting (CMU when None); its ``evaluate``
            pairs choose the joints.
        batch: frames per Anny forward call.

    Returns:
        dict with ``frames``, ``fps``, ``mean_joint_error_cm``, ``max_joint_error_cm``,
        ``joint_error_cm`` (per Anny bone), ``worst_foot_penetration_cm``,
        ``median_foot_height_cm`` (median over frames of the lowest foot vertex),
        ``max_bone_rotation_deg`` with ``max_rotation_bone`` and ``max_rotation_frame``,
        and ``source_max_joint_rotation_deg``: the largest frame-to-frame change of
        a mapped source joint's world orientation at the source's rate (for
        telling jumps in the data from jumps made by retargeting).
    """
    template = _template(template)
    bmap = resolve_bone_map(bone_map)
    names = list(bmap.evaluate)
    ai = torch.tensor([ANNY_BONES.index(b) for b in names])
    feet = torch.zeros(template.num_vertices, dtype=torch.bool)
    for part in ("foot.L", "foot.R"):
        feet |= template.part_labels.cpu() == template.part_names.index(part)
    joints, foot_z, rots = [], [], []
    for _, out in _pose_batches(template, clip, batch):
        joints.append(out.joints[:, ai].double().cpu())
        foot_z.append(out.vertices[:, feet.to(out.vertices.device), 2].amin(1).double().cpu())
        rots.append(out.bone_poses[..., :3, :3].double().cpu())
    A = torch.cat(joints).numpy()
    P = _source_joints_at(bvh, bmap, clip)
    d = A - P
    d = d - d.mean(1, keepdims=True)  # remove the per-frame global offset
    err = np.linalg.norm(d, axis=-1)  # (F, K)
    fz = torch.cat(foot_z).numpy()
    R = torch.cat(rots)
    if R.shape[0] > 1:
        # angle of R_t R_{t-1}^T from its trace
        tr = (R[1:] * R[:-1]).sum((-1, -2))
        ang = torch.rad2deg(torch.arccos(((tr - 1) / 2).clamp(-1, 1)))  # (F-1, J)
        flat = int(ang.argmax())
        f_max, b_max = divmod(flat, ang.shape[1])
        max_rot = float(ang.max())
    else:
        f_max, b_max, max_rot = 0, 0, 0.0
    # the same figure for the source's mapped joints, at the source's own rate
    _, Rs = forward_kinematics(bvh)
    Rs = Rs[:, sorted({bvh.index(j) for j in bmap.bones.values()})]
    if len(Rs) > 1:
        trs = np.einsum("fjab,fjab->fj", Rs[1:], Rs[:-1])
        src_rot = float(np.degrees(np.arccos(np.clip((trs - 1) / 2, -1, 1))).max())
    else:
        src_rot = 0.0
    return {
        "source": clip.source,
        "frames": clip.num_frames,
        "fps": clip.fps,
        "mean_joint_error_cm": float(err.mean() * 100),
        "max_joint_error_cm": float(err.max() * 100),
        "joint_error_cm": {n: float(e * 100) for n, e in zip(names, err.mean(0))},
        "worst_foot_penetration_cm": float(max(0.0, -fz.min()) * 100),
        "median_foot_height_cm": float(np.median(fz) * 100),
        "max_bone_rotation_deg": max_rot,
        "max_rotation_bone": ANNY_BONES[b_max],
        "max_rotation_frame": f_max + 1,
        "source_max_joint_rotation_deg": src_rot,
    }


def evaluate_bvh(
    path: str | Path,
    template=None,
    bone_map: BoneMap | str | Path | None = None,
    fps: float | None = None,
    frames: int | None = None,
) -> dict[str, Any]:
    """Read, retarget and evaluate one BVH file (what ``perennial bench motion`` prints).

    Args:
        path: the BVH file.
        template: Anny template (the shared one when None).
        bone_map: bone map (CMU when None).
        fps: resample the retargeted clip to this rate before evaluating.
        frames: only the first ``frames`` frames of the file.

    Returns:
        :func:`motion_figures`'s dict plus ``file``, ``retarget_seconds`` (reading
        excluded) and ``retarget_frames_per_s`` (source frames per second).
    """
    template = _template(template)
    bvh = read_bvh(path)
    if frames is not None:
        bvh = bvh.subset(slice(0, frames))
    rest = rest_info(template)
    t0 = time.perf_counter()
    clip = retarget(bvh, rest, fps=fps, bone_map=bone_map)
    dt = time.perf_counter() - t0
    figs = motion_figures(bvh, clip, template, bone_map)
    return {
        "file": str(path),
        **figs,
        "retarget_seconds": dt,
        "retarget_frames_per_s": bvh.num_frames / max(dt, 1e-9),
    }


def bench_motion(
    paths: list[str | Path],
    fps: float = 30.0,
    template=None,
    bone_map: BoneMap | str | Path | None = None,
    strip: str | Path | None = None,
) -> dict[str, Any]:
    """Everything ``perennial bench motion`` reports, for a list of BVH files.

    1. Per clip, at the file's own rate: :func:`evaluate_bvh` figures.
    2. Import speed: :func:`~perennial.motion.bank.import_bank` of all files at
       ``fps`` into a temporary directory; ``frames_per_second`` counts source
       frames per second of file work (reading, retargeting, resampling,
       writing), the one-time setup (``setup_seconds``) excluded.
    3. Optionally a frame strip of the first clip (with its source skeleton) at ``strip``.

    Returns:
        ``{"clips": [figures...], "import": report dict without entries, "strip": path or None}``.
    """
    import tempfile

    from perennial.motion.bank_import import import_bank

    template = _template(template)
    clips = [evaluate_bvh(p, template, bone_map) for p in paths]
    with tempfile.TemporaryDirectory(prefix="perennial-bank-") as tmp:
        report = import_bank(
            list(paths), Path(tmp) / "bank", fps=fps, progress=False, bone_map=bone_map
        )
    imp = {k: v for k, v in report.to_dict().items() if k != "entries"}
    imp["skipped_files"] = [{"source": e.source, "reason": e.reason} for e in report.skipped]
    strip_path = None
    if strip is not None and paths:
        bvh = read_bvh(paths[0])
        clip = retarget(bvh, rest_info(template), bone_map=bone_map)
        strip_path = str(
            write_frame_strip(clip, strip, template, 6, 192, bvh=bvh, bone_map=bone_map)
        )
    return {"clips": clips, "import": imp, "strip": strip_path}


# ---------------------------------------------------------------------------
# pictures


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
        bone_map: the map used for retargeting (CMU when None), for ``bvh``.

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
            bvh, resolve_bone_map(bone_map), clip, out.joints.double().cpu().numpy(), idx
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
    pos, _ = forward_kinematics(bvh)
    P = bmap.scale * pos @ bmap.axes().T  # (F, Js, 3)
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
