"""Figures that check a retargeted motion against its source (``perennial bench motion``).

:func:`motion_figures` compares a :class:`MotionClip` posed on Anny with its source
skeleton (scaled to metres and to Anny's leg length, turned into Anny's axes by the
bone map, as retargeting does: :func:`~perennial.motion.retarget_plan.body_scale`):

- ``mean_joint_error_cm``: mean distance between corresponding joints (hips, knees,
  ankles, shoulders, elbows, wrists, head; the bone map's ``evaluate`` pairs) after
  removing the global offset *per frame* (the mean of the differences in that frame),
  so only posture and proportions count, not where the root was placed;
- ``worst_foot_penetration_cm``: how far the lowest foot vertex of the posed mesh goes
  below the floor z = 0 in the worst frame (0 when never below);
- ``torso_lean_deg``: the angle between Anny's hip-centre -> neck direction and the
  source's, mean over frames (``torso_lean_max_deg`` the worst frame); the neck is the
  joint that drives ``neck01`` (else the first mapped of neck02, neck03, spine01);
- ``foot_skating_cm_s``: horizontal speed of Anny's feet while the source's feet touch
  the floor, mean over contacts; each foot has two points, the ankle and the toe base
  (when mapped), a point touches the floor when the source's point is within
  :data:`CONTACT_CM` of its lowest height in the clip (5th percentile), and speed is
  measured over :data:`SKATE_WINDOW_S` (so the frame rate and marker jitter matter
  little). ``source_foot_skating_cm_s`` is the same figure for the source's points
  (mocap feet slide too);
- ``max_bone_rotation_deg``: the largest frame-to-frame change of any bone's world
  orientation (a flipped bone shows up as a jump towards 180 deg).

:func:`evaluate_file` reads (BVH or ASF/AMC), recognises, retargets (timed) and
evaluates one file; :func:`bench_motion` does it for many files and sums up per
convention. Pictures are :mod:`perennial.motion.strip`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES
from perennial.motion.bonemap import BoneMap
from perennial.motion.bvh import BVH
from perennial.motion.clip import MotionClip
from perennial.motion.kinematics import forward_kinematics
from perennial.motion.load import read_skeleton_motion
from perennial.motion.rest import rest_info
from perennial.motion.retarget import retarget
from perennial.motion.retarget_plan import body_scale
from perennial.motion.skeleton_detect import bone_map_for
from perennial.motion.strip import render_frame_strip, write_frame_strip

__all__ = [
    "bench_motion",
    "evaluate_bvh",
    "evaluate_file",
    "motion_figures",
    "render_frame_strip",
    "write_frame_strip",
]

CONTACT_CM = 2.0
"""A foot point within this height of its lowest (5th percentile) height touches the floor."""
SKATE_WINDOW_S = 1 / 30
"""Foot speed is measured over this time (frames f and f + round(window * fps))."""


def _template(template):
    if template is None:
        from perennial.body.anny import load_template

        return load_template()
    return template


def _pose_batches(template, clip: MotionClip, batch: int):
    for s in range(0, clip.num_frames, batch):
        with torch.no_grad():
            yield s, template(clip.rotvec[s : s + batch], clip.translation[s : s + batch])


def _source_points_at(bvh: BVH, bmap: BoneMap, clip: MotionClip, idx: list[int]) -> np.ndarray:
    """(F_clip, K, 3) source joints ``idx`` in Anny axes and metres at Anny's size
    (:func:`~perennial.motion.retarget_plan.body_scale`), at the clip's frame times."""
    pos, _ = forward_kinematics(bvh)
    P = bmap.scale * body_scale(bvh, bmap, rest_info()) * pos[:, idx] @ bmap.axes().T
    if clip.num_frames == bvh.num_frames and abs(clip.fps - bvh.fps) < 1e-6 * bvh.fps:
        return P
    u = np.clip(np.arange(clip.num_frames) * (bvh.fps / clip.fps), 0, bvh.num_frames - 1)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, bvh.num_frames - 1)
    w = (u - i0)[:, None, None]
    return (1 - w) * P[i0] + w * P[i1]


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)).clip(1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def foot_contacts(points: np.ndarray) -> np.ndarray:
    """(F, K) True where a foot point (F, K, 3; metres, Z up) is within :data:`CONTACT_CM`
    of its lowest height in the clip (5th percentile over frames)."""
    z = points[..., 2]
    return z <= np.percentile(z, 5, axis=0) + CONTACT_CM / 100


def skating_cm_s(points: np.ndarray, fps: float, contact: np.ndarray | None = None) -> float:
    """Mean horizontal speed (cm/s) of foot points while they touch the floor.

    Args:
        points: (F, K, 3) foot points, metres, Z up.
        fps: frames per second.
        contact: (F, K) when each point touches the floor (:func:`foot_contacts` of
            ``points`` when None); speed counts where it touches at both ends of the window.
    """
    k = max(1, round(SKATE_WINDOW_S * fps))
    if points.shape[0] <= k:
        return 0.0
    contact = foot_contacts(points) if contact is None else contact
    both = contact[k:] & contact[:-k]
    if not both.any():
        return 0.0
    v = np.linalg.norm(points[k:, :, :2] - points[:-k, :, :2], axis=-1) * (fps / k)
    return float(v[both].mean() * 100)


def _neck_bone(bmap: BoneMap) -> str | None:
    return next((b for b in ("neck01", "neck02", "neck03", "spine01") if b in bmap.bones), None)


def _foot_points(bmap: BoneMap) -> tuple[list[str], list[str]]:
    """Anny bones and source joints of the feet's floor points (ankles and toe bases)."""
    anny, src = [], []
    for s in "LR":
        for b in (f"foot.{s}", f"toe3-1.{s}"):
            if b in bmap.bones:
                anny.append(b)
                src.append(bmap.evaluate.get(b, bmap.bones[b]))
    return anny, src


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
        bone_map: the map used for retargeting (the detected one when None); its
            ``evaluate`` pairs choose the joints.
        batch: frames per Anny forward call.

    Returns:
        dict with ``frames``, ``fps``, ``mean_joint_error_cm``, ``max_joint_error_cm``,
        ``joint_error_cm`` (per Anny bone), ``worst_foot_penetration_cm``,
        ``median_foot_height_cm`` (median over frames of the lowest foot vertex),
        ``torso_lean_deg``, ``torso_lean_max_deg``, ``foot_skating_cm_s``,
        ``source_foot_skating_cm_s``, ``max_bone_rotation_deg`` with
        ``max_rotation_bone`` and ``max_rotation_frame``, and
        ``source_max_joint_rotation_deg``: the largest frame-to-frame change of a mapped
        source joint's world orientation at the source's rate (for telling jumps in
        the data from jumps made by retargeting).
    """
    template = _template(template)
    bmap = bone_map_for(bvh, bone_map)
    names = list(bmap.evaluate)
    neck = _neck_bone(bmap)
    feet_a, feet_s = _foot_points(bmap)
    extra = ["root", "root"] + ([neck] if neck else []) + feet_a
    ai = torch.tensor([ANNY_BONES.index(b) for b in names + extra])
    feet = torch.zeros(template.num_vertices, dtype=torch.bool)
    for part in ("foot.L", "foot.R"):
        feet |= template.part_labels.cpu() == template.part_names.index(part)
    joints, foot_z, rots = [], [], []
    for _, out in _pose_batches(template, clip, batch):
        joints.append(out.joints[:, ai].double().cpu())
        foot_z.append(out.vertices[:, feet.to(out.vertices.device), 2].amin(1).double().cpu())
        rots.append(out.bone_poses[..., :3, :3].double().cpu())
    A_all = torch.cat(joints).numpy()
    K = len(names)
    A = A_all[:, :K]
    src_idx = [bvh.index(bmap.evaluate[b]) for b in names]
    src_extra = [bvh.index(bmap.evaluate.get(h, bmap.bones.get(h, ""))) for h in extra[:2]]
    src_extra += [bvh.index(bmap.bones[neck])] if neck else []
    src_extra += [bvh.index(j) for j in feet_s]
    P_all = _source_points_at(bvh, bmap, clip, src_idx + src_extra)
    P = P_all[:, :K]
    d = A - P
    d = d - d.mean(1, keepdims=True)  # remove the per-frame global offset
    err = np.linalg.norm(d, axis=-1)  # (F, K)
    figs_lean = {"torso_lean_deg": float("nan"), "torso_lean_max_deg": float("nan")}
    if neck:
        lean = _angle_deg(A_all[:, K + 2] - A_all[:, K : K + 2].mean(1), P_all[:, K + 2] - P_all[:, K : K + 2].mean(1))
        figs_lean = {"torso_lean_deg": float(lean.mean()), "torso_lean_max_deg": float(lean.max())}
    nf = len(feet_a)
    skate = src_skate = float("nan")
    if nf:  # both at the frames where the source's feet touch its floor
        contact = foot_contacts(P_all[:, -nf:])
        skate = skating_cm_s(A_all[:, -nf:], clip.fps, contact)
        src_skate = skating_cm_s(P_all[:, -nf:], clip.fps, contact)
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
        **figs_lean,
        "foot_skating_cm_s": skate,
        "source_foot_skating_cm_s": src_skate,
        "max_bone_rotation_deg": max_rot,
        "max_rotation_bone": ANNY_BONES[b_max],
        "max_rotation_frame": f_max + 1,
        "source_max_joint_rotation_deg": src_rot,
    }


def evaluate_file(
    path: str | Path,
    template=None,
    bone_map: BoneMap | str | Path | None = None,
    fps: float | None = None,
    frames: int | None = None,
    asf: str | Path | None = None,
) -> dict[str, Any]:
    """Read, recognise, retarget and evaluate one ``.bvh`` or ``.amc`` file.

    Args:
        path: the file.
        template: Anny template (the shared one when None).
        bone_map: bone map (recognised from the file when None).
        fps: resample the retargeted clip to this rate before evaluating.
        frames: only the first ``frames`` frames of the file.
        asf: the skeleton of an ``.amc`` file (found beside it when None).

    Returns:
        :func:`motion_figures`'s dict plus ``file``, ``convention`` (the bone map's name),
        ``retarget_seconds`` (skeleton recognition and retargeting, reading excluded),
        ``retarget_frames_per_s`` and ``import_frames_per_s`` (source frames per second
        of reading, recognising and retargeting).
    """
    template = _template(template)
    t0 = time.perf_counter()
    bvh = read_skeleton_motion(path, asf)
    if frames is not None:
        bvh = bvh.subset(slice(0, frames))
    t1 = time.perf_counter()
    rest = rest_info(template)
    bmap = bone_map_for(bvh, bone_map, rest)
    clip = retarget(bvh, rest, fps=fps, bone_map=bmap)
    t2 = time.perf_counter()
    figs = motion_figures(bvh, clip, template, bmap)
    return {
        "file": str(path),
        "convention": bmap.name,
        **figs,
        "source_frames": bvh.num_frames,
        "retarget_seconds": t2 - t1,
        "retarget_frames_per_s": bvh.num_frames / max(t2 - t1, 1e-9),
        "import_frames_per_s": bvh.num_frames / max(t2 - t0, 1e-9),
        "_seconds": t2 - t0,
    }


def evaluate_bvh(path, template=None, bone_map=None, fps=None, frames=None) -> dict[str, Any]:
    """:func:`evaluate_file` (kept for callers of the BVH-only name)."""
    return evaluate_file(path, template, bone_map, fps, frames)


SUMMED = ("mean_joint_error_cm", "torso_lean_deg", "foot_skating_cm_s", "source_foot_skating_cm_s")


def summarise(clips: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per convention: clips, frames, frame-weighted means of the :data:`SUMMED` figures,
    the worst clip's joint error and floor penetration, the worst lean, and import
    frames/s (all source frames / all reading + recognising + retargeting time)."""
    out: dict[str, dict[str, Any]] = {}
    for conv in sorted({c["convention"] for c in clips}):
        cs = [c for c in clips if c["convention"] == conv]
        w = np.array([c["frames"] for c in cs], dtype=np.float64)
        row: dict[str, Any] = {"clips": len(cs), "frames": int(sum(c["source_frames"] for c in cs))}
        for k in SUMMED:
            v = np.array([c[k] for c in cs], dtype=np.float64)
            ok = np.isfinite(v)
            row[k] = float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")
        row["worst_clip_joint_error_cm"] = max(c["mean_joint_error_cm"] for c in cs)
        row["worst_foot_penetration_cm"] = max(c["worst_foot_penetration_cm"] for c in cs)
        row["worst_clip_lean_deg"] = max(c["torso_lean_deg"] for c in cs)
        row["import_frames_per_s"] = row["frames"] / max(sum(c["_seconds"] for c in cs), 1e-9)
        out[conv] = row
    return out


def bench_motion(
    paths: list[str | Path],
    fps: float | None = None,
    template=None,
    bone_map: BoneMap | str | Path | None = None,
    strip: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Everything ``perennial bench motion`` reports, for a list of ``.bvh``/``.amc`` files.

    1. Per clip: :func:`evaluate_file` figures (at ``fps`` when given, else the file's rate);
       a file that cannot be read or mapped is listed under ``"failed"`` with its reason.
    2. Per convention: :func:`summarise`.
    3. Optionally a frame strip of the first clip (with its source skeleton) at ``strip``.

    Returns:
        ``{"clips": [...], "conventions": {...}, "failed": [...], "import": {"frames_in",
        "seconds", "frames_per_second"}, "strip": path or None}``.
    """
    from perennial.errors import PerennialError
    from perennial.progress import progress as progress_bar

    template = _template(template)
    clips, failed = [], []
    for p in progress_bar(list(paths), desc="bench motion", unit="file", enabled=progress):
        try:
            clips.append(evaluate_file(p, template, bone_map, fps))
        except PerennialError as e:
            failed.append({"source": str(p), "reason": str(e)})
    frames = sum(c["source_frames"] for c in clips)
    seconds = sum(c["_seconds"] for c in clips)
    imp = {"files": len(clips) + len(failed), "imported": len(clips), "frames_in": frames, "seconds": seconds,
           "frames_per_second": frames / max(seconds, 1e-9)}  # fmt: skip
    strip_path = None
    if strip is not None and clips:
        bvh = read_skeleton_motion(clips[0]["file"])
        bmap = bone_map_for(bvh, bone_map)
        clip = retarget(bvh, rest_info(template), bone_map=bmap)
        strip_path = str(write_frame_strip(clip, strip, template, 6, 192, bvh=bvh, bone_map=bmap))
    conventions = summarise(clips)
    for c in clips:
        c.pop("_seconds")
    return {"clips": clips, "conventions": conventions, "failed": failed, "import": imp, "strip": strip_path}
