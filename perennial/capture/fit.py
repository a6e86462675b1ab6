"""Fit Anny to landmarks and masks: phenotype, per-frame pose and, for one camera, the focal length.

One image per frame (a video): the camera sits at the world origin looking along +Y with Z up
(``R`` maps world x, y, z to camera x, -z, y), so a person facing the camera faces Anny's -Y with
no root rotation, and its focal length is estimated unless given. Several known cameras per
frame (a multi-view capture): their own ``K``, ``R``, ``t``. The root's translation and
orientation move per frame. Three stages, each batched over frames with Adam:

1. **Keyframes** (up to ``keyframes`` frames spread over the clip): the phenotype (shared), the
   pose of every bone but fingers, toes and eyes, root translation and the focal length, with
   Anny's full forward (the phenotype changes the skeleton).
2. **All frames**, the phenotype fixed: each frame starts from its nearest keyframe and fits
   body, fingers and root against everything observed; forward kinematics and skinning of only
   the vertices the losses read.
3. **Face** (:mod:`perennial.capture.fit_face`): facial actions and the neck and head against the
   face mesh, where faces are large enough to read an expression from.

Losses: confidence-weighted 2D reprojection of the 23 body points and 2 x 21 hand points
(robust, in units of 1 % of the image diagonal); BlazePose's metric, hip-centred 3D
landmarks (positions relative to the hips, in camera axes); silhouette agreement (body vertices
projected outside the mask are pulled in by a distance map of the mask, strongly; the outline is
pulled to the body, weakly, as clothes may stand off it); an optional known stature; a pose prior (shrinkage of each bone's rotation, hinge
limits of knees and elbows); and temporal smoothness of the 3D points (videos only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from perennial.body.rig import ANNY_BONES
from perennial.capture.fit_face import fit_face
from perennial.capture.keypoints import BLAZE_OF_COCO, TORSO, AnnyLandmarks, skin_subset
from perennial.capture.masks import outline_points, outside_distance
from perennial.errors import ConfigError
from perennial.progress import progress as progress_bar

WORLD_TO_CAMERA = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation of the monocular camera: world x, y, z to camera x, -z, y (looking along +Y, Z up)."""
_FIXED = ("toe", "eye.")
_FINGER = ("finger", "metacarpal")


@dataclass
class FitConfig:
    """How to fit Anny to a monocular clip."""

    fov_deg: float = 0.0
    """Vertical field of view of the camera, degrees; 0: estimate it (starting at 50 degrees)."""
    keyframes: int = 12
    """Frames that fit the phenotype (spread over the clip)."""
    key_steps: int = 300
    """Adam steps of the keyframe stage."""
    steps: int = 300
    """Adam steps of the all-frames stage."""
    silhouette: float = 1.0
    """Weight of the silhouette terms (0: ignore the masks)."""
    world: float = 20.0
    """Weight of BlazePose's metric 3D landmarks."""
    smooth: float = 50.0
    """Weight of temporal smoothness (videos only)."""
    prior: float = 1.0
    """Weight of the pose prior."""
    stature: float = 0.0
    """The person's height in metres, if known (0: estimate it; one camera cannot tell it from distance)."""
    face_steps: int = 150
    """Adam steps of the face stage (facial actions and head pose to the face mesh; 0: neutral faces)."""

    def __post_init__(self) -> None:
        for k in ("keyframes", "key_steps", "steps", "face_steps"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k == "keyframes" else 0):
                raise ConfigError(f"{k} must be an integer >= {1 if k == 'keyframes' else 0}, got {v!r}")
        for k in ("fov_deg", "stature", "silhouette", "world", "smooth", "prior"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{k} must be a number >= 0, got {v!r}")
        if self.fov_deg >= 170 or (self.stature and not 0.4 <= self.stature <= 2.6):
            raise ConfigError(f"fov_deg must be below 170 and stature 0 or 0.4-2.6 m, got {self.fov_deg}, "
                              f"{self.stature}")  # fmt: skip


@dataclass
class Observations:
    """What the detector saw, one row per image (pixels; NaN or confidence 0 where nothing was found).

    A monocular clip has one row per frame and an unknown focal length; a multi-view capture has one
    row per (frame, camera) with known cameras (``frame``, ``K``, ``R``, ``t``).
    """

    body: Tensor  # (N, 33, 4) x, y, depth, visibility
    body_world: Tensor  # (N, 33, 3) metres, hip-centred, camera axes
    hands: Tensor  # (N, 2, 21, 3) x, y, depth; person's left then right
    hand_score: Tensor  # (N, 2)
    masks: Tensor | None  # (N, H, W) bool
    width: int
    height: int
    video: bool = True
    frame: Tensor | None = None
    """(N,) frame of each row; None: row i is frame i."""
    K: Tensor | None = None
    """(N, 3, 3) known intrinsics; None: one unknown focal length, principal point at the centre."""
    R: Tensor | None = None
    """(N, 3, 3) world-to-camera rotations; None: :data:`WORLD_TO_CAMERA`."""
    t: Tensor | None = None
    """(N, 3) world-to-camera translations, metres; None: zero."""
    face: Tensor | None = None
    """(N, 478, 3) face-mesh points, pixels + relative depth; None: no face landmarks."""
    face_score: Tensor | None = None
    """(N,) 1 where the face mesh was found."""

    def __post_init__(self) -> None:
        n = len(self.body)
        self.frame = torch.arange(n) if self.frame is None else self.frame.long()
        self.R = WORLD_TO_CAMERA.expand(n, 3, 3).clone() if self.R is None else self.R.float()
        self.t = torch.zeros(n, 3) if self.t is None else self.t.float()

    @property
    def frames(self) -> int:
        return int(self.frame.max()) + 1


@dataclass
class FitResult:
    phenotype: Tensor  # (6,)
    rotvec: Tensor  # (F, J, 3)
    translation: Tensor  # (F, 3)
    K: Tensor  # (3, 3)
    R: Tensor  # (3, 3)
    t: Tensor  # (3,)
    timings: dict = field(default_factory=dict)
    residual_px: float = float("nan")
    facial_actions: Tensor | None = None  # (F, 52) in [0, 1]
    face_residual_px: float = float("nan")


def _targets(obs: Observations) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Body targets (F, 23, 2) with confidences (F, 23), world targets (F, 23, 3), hand confidences (F, 2, 21)."""
    idx = torch.tensor([max(i, 0) for i in BLAZE_OF_COCO])
    body = obs.body[:, idx]
    conf = torch.nan_to_num(body[..., 3], nan=0.0).clamp(0, 1) * torch.tensor([float(i >= 0) for i in BLAZE_OF_COCO])
    world = obs.body_world[:, idx]
    conf = conf * torch.isfinite(body[..., :2]).all(-1) * torch.isfinite(world).all(-1)
    hand_conf = obs.hand_score[..., None].expand(-1, -1, 21) * torch.isfinite(obs.hands[..., :2]).all(-1)
    return torch.nan_to_num(body[..., :2]), conf, torch.nan_to_num(world), hand_conf


def _intrinsics(obs: Observations, focal: Tensor | float) -> Tensor:
    """(N, 4) fx, fy, cx, cy of every row."""
    if obs.K is not None:
        return torch.stack([obs.K[:, 0, 0], obs.K[:, 1, 1], obs.K[:, 0, 2], obs.K[:, 1, 2]], -1)
    f = torch.as_tensor(focal).reshape(1).expand(len(obs.body))
    return torch.stack([f, f, torch.full_like(f, (obs.width - 1) / 2), torch.full_like(f, (obs.height - 1) / 2)], -1)


def _init_root(obs: Observations, focal: float) -> tuple[Tensor, Tensor]:
    """Per-frame root yaw (rotvec) and translation from the torso points (torso ~0.5 m from shoulders to
    hips; facing from BlazePose's metric shoulders). A frame's translation is the median of its rows'
    estimates, its yaw that of its most confident row; a frame no row saw well takes the clip's median."""
    b, w = obs.body, obs.body_world
    hips, shoulders = b[:, [23, 24], :2].mean(1), b[:, [11, 12], :2].mean(1)
    length = (hips - shoulders).norm(dim=-1)
    conf = b[:, [11, 12, 23, 24], 3].nan_to_num().amin(1) * torch.isfinite(length)
    ok = conf > 0.5
    k = _intrinsics(obs, focal)
    depth = k[:, 0] * 0.5 / length.nan_to_num(1.0).clamp_min(4.0)
    hips = torch.where(torch.isfinite(hips), hips, k[:, 2:])
    x_cam = torch.stack([(hips[:, 0] - k[:, 2]) * depth / k[:, 0], (hips[:, 1] - k[:, 3]) * depth / k[:, 1], depth], -1)
    trans_rows = torch.einsum("nji,nj->ni", obs.R, x_cam - obs.t)  # camera -> world
    d = torch.einsum("nji,nj->ni", obs.R, torch.nan_to_num(w[:, 11] - w[:, 12]))  # right -> left shoulder, world
    yaw_rows = torch.atan2(d[:, 1], d[:, 0])
    fallback = trans_rows[ok].median(0).values if ok.any() else torch.tensor([0.0, 3.0, 0.0])
    n = obs.frames
    translation, yaw = fallback.repeat(n, 1), torch.zeros(n)
    for f in range(n):
        mine = (obs.frame == f) & ok
        if mine.any():
            translation[f] = trans_rows[mine].median(0).values
            best = torch.where(obs.frame == f, conf, -1.0).argmax()
            yaw[f] = yaw_rows[best]
    # a frame 1 m from its neighbours' median (5 frames either side) is a bad detection, not a real jump
    typical = torch.stack([translation[max(0, f - 5) : f + 6].median(0).values for f in range(n)])
    far = (translation - typical).norm(dim=-1) > 1.0
    translation[far] = typical[far]
    return torch.stack([torch.zeros_like(yaw), torch.zeros_like(yaw), yaw], -1), translation


class _Objective:
    """The losses, given posed points of a batch of frames."""

    def __init__(self, obs: Observations, cfg: FitConfig, marks: AnnyLandmarks, sil_vertices: Tensor) -> None:
        self.obs, self.cfg, self.marks = obs, cfg, marks
        self.body, self.conf, self.world, self.hand_conf = _targets(obs)
        self.scale = math.hypot(obs.width, obs.height) / 100
        self.sil_vertices = sil_vertices
        if obs.masks is not None and cfg.silhouette > 0:
            self.outline, self.outline_valid = outline_points(obs.masks, 96)
            self.outside = outside_distance(obs.masks)
        n = len(ANNY_BONES)
        w = torch.full((n,), 0.02)
        for i, b in enumerate(ANNY_BONES):
            if b.startswith(("spine", "neck", "head", "clavicle", "shoulder", "pelvis")):
                w[i] = 0.2
            elif "02." in b:  # twist segments
                w[i] = 1.0
            elif b.startswith(_FINGER):
                w[i] = 0.005
        w[0] = 0.0
        self.prior_w = w
        self.knee = torch.tensor([ANNY_BONES.index(f"lowerleg01{s}") for s in (".L", ".R")])
        self.elbow = torch.tensor([ANNY_BONES.index(f"lowerarm01{s}") for s in (".L", ".R")])
        self.consecutive = False
        """Whether the frames of the current batch follow each other (smoothness applies)."""

    def camera(self, rows: Tensor, sel: Tensor, points: Tensor) -> Tensor:
        """World points of the rows' frames (P, ..., 3), ``sel`` (len(rows),) picking each row's frame, in the
        rows' camera frames."""
        x = points[sel]
        R, t = self.obs.R[rows], self.obs.t[rows]
        shape = x.shape
        x = torch.einsum("nij,nkj->nki", R, x.reshape(len(rows), -1, 3)) + t[:, None]
        return x.reshape(shape)

    def project(self, rows: Tensor, x_cam: Tensor, focal: Tensor) -> Tensor:
        k = _intrinsics(self.obs, focal)[rows].view(len(rows), *([1] * (x_cam.ndim - 2)), 4)
        z = x_cam[..., 2:].clamp_min(0.05)
        return torch.cat([k[..., :1] * x_cam[..., :1] / z + k[..., 2:3], k[..., 1:2] * x_cam[..., 1:2] / z
                          + k[..., 3:4]], -1)  # fmt: skip

    def __call__(self, rows: Tensor, sel: Tensor, body_pts: Tensor, hand_pts: Tensor | None,
                 sil_pts: Tensor | None, rotvec: Tensor, focal: Tensor) -> tuple[Tensor, dict]:  # fmt: skip
        """Total loss and its terms for observation ``rows``; the posed points are per frame (P, ...) in world
        metres and ``sel`` picks each row's frame among them."""
        cfg = self.cfg
        kp = self.camera(rows, sel, body_pts)  # (N, 23, 3)
        conf = self.conf[rows]
        err = (self.project(rows, kp, focal) - self.body[rows]).norm(dim=-1) / self.scale
        terms = {"body2d": (conf * F.huber_loss(err, torch.zeros_like(err), reduction="none", delta=1.0)).sum()
                 / conf.sum().clamp_min(1)}  # fmt: skip
        hips = kp[:, [11, 12]].mean(1, keepdim=True)
        world = self.world[rows] - self.world[rows][:, [11, 12]].mean(1, keepdim=True)
        terms["world"] = cfg.world * (conf[..., None] * (kp - hips - world) ** 2).sum() / conf.sum().clamp_min(1)
        if hand_pts is not None:
            hc = self.hand_conf[rows]
            huv = self.project(rows, self.camera(rows, sel, hand_pts), focal)
            herr = (huv - self.obs.hands[rows][..., :2].nan_to_num()).norm(dim=-1)
            terms["hands2d"] = (hc * F.huber_loss(herr / self.scale, torch.zeros_like(herr), reduction="none")).sum() \
                / hc.sum().clamp_min(1)  # fmt: skip
        if sil_pts is not None and self.obs.masks is not None and cfg.silhouette > 0:
            terms |= self._silhouette(rows, self.project(rows, self.camera(rows, sel, sil_pts), focal))
        rv = rotvec[:, 1:]
        terms["prior"] = cfg.prior * (self.prior_w[1:, None] * rv**2).sum(-1).sum(-1).mean()
        knee, elbow = rotvec[:, self.knee], rotvec[:, self.elbow]
        terms["limits"] = cfg.prior * (F.relu(-knee[..., 0]) ** 2 + knee[..., 1:].pow(2).sum(-1) * 0.5
                                       + F.relu(elbow[..., 0]) ** 2).sum(-1).mean()  # fmt: skip
        if self.obs.video and len(body_pts) > 2 and self.consecutive:
            acc = body_pts[2:] - 2 * body_pts[1:-1] + body_pts[:-2]
            terms["smooth"] = cfg.smooth * acc.pow(2).sum(-1).mean()
        return sum(terms.values()), terms

    def _silhouette(self, rows: Tensor, uv: Tensor) -> dict:
        """Vertices outside the mask: their distance to it, read bilinearly from a distance map (strong); the
        mask's outline: its distance to the nearest of the first 400 vertices (weak)."""
        H, W = self.obs.masks.shape[1:]
        grid = torch.stack([(uv[..., 0] + 0.5) / W * 2 - 1, (uv[..., 1] + 0.5) / H * 2 - 1], -1)
        d_out = F.grid_sample(self.outside[rows], grid[:, None], align_corners=False, padding_mode="border")
        d_out = d_out[:, 0, 0] / self.scale  # (B, V), 0 inside the mask
        outline, valid = self.outline[rows], self.outline_valid[rows]
        d = torch.cdist(outline, uv[:, :400]).min(2).values / self.scale  # (B, P)
        cover = (d * valid).sum() / valid.sum().clamp_min(1)
        return {"sil_out": self.cfg.silhouette * 2.0 * d_out.mean(), "sil_cover": self.cfg.silhouette * 0.1 * cover}


def _keyframes(obs: Observations, conf: Tensor, count: int) -> Tensor:
    """Up to ``count`` frames spread over the clip among those whose torso was seen in some row."""
    seen = torch.zeros(obs.frames, dtype=torch.bool)
    seen[obs.frame[(conf[:, list(TORSO)] > 0.5).all(1)]] = True
    ok = seen.nonzero()[:, 0]
    ok = ok if len(ok) else torch.arange(obs.frames)
    pick = torch.linspace(0, len(ok) - 1, min(count, len(ok))).round().long()
    return ok[pick].unique()


def fit_body(template, obs: Observations, cfg: FitConfig | None = None, progress: bool = True) -> FitResult:
    """Fit Anny to ``obs`` (one camera with an unknown focal length, or known cameras); see the module."""
    cfg = cfg or FitConfig()
    marks = AnnyLandmarks(template)
    n_frames, J = obs.frames, len(ANNY_BONES)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    focal0 = (obs.height / 2) / math.tan(math.radians(cfg.fov_deg or 50.0) / 2)
    log_focal = torch.tensor(math.log(focal0), requires_grad=not cfg.fov_deg and obs.K is None)
    root, translation = _init_root(obs, focal0)
    g = torch.Generator().manual_seed(0)
    sil_vertices = torch.randperm(template.num_vertices, generator=g)[:800]
    objective = _Objective(obs, cfg, marks, sil_vertices)
    body_mask = torch.tensor([not b.startswith(_FIXED + _FINGER) for b in ANNY_BONES], dtype=torch.float32)
    body_mask[0] = 0.0
    tips = marks.hand_tips.clamp_min(0).reshape(-1)

    # stage 1: keyframes, phenotype and body with Anny's full forward
    keys = _keyframes(obs, objective.conf, cfg.keyframes)
    slot = torch.full((n_frames,), -1, dtype=torch.long)
    slot[keys] = torch.arange(len(keys))
    rows = (slot[obs.frame] >= 0).nonzero()[:, 0]
    sel = slot[obs.frame[rows]]
    pheno_logit = torch.zeros(6, requires_grad=True)
    k_rot = torch.zeros(len(keys), J, 3, requires_grad=True)
    k_root = root[keys].clone().requires_grad_(True)
    k_trans = translation[keys].clone().requires_grad_(True)
    params = [{"params": [k_rot, k_root], "lr": 0.03}, {"params": [k_trans], "lr": 0.02}, {"params": [pheno_logit], "lr": 0.01},
              {"params": [log_focal], "lr": 0.005}]  # fmt: skip
    opt = torch.optim.Adam([p for p in params if p["params"][0].requires_grad])
    bar = progress_bar(total=cfg.key_steps + cfg.steps + cfg.face_steps, desc="fit", unit="step", enabled=progress)
    objective.consecutive = False
    for step in range(cfg.key_steps):
        warm = step < cfg.key_steps // 5  # root and translation first
        rv = torch.cat([k_root[:, None], (k_rot * body_mask[:, None])[:, 1:] * (0.0 if warm else 1.0)], 1)
        out = template(rv, k_trans, phenotype=torch.sigmoid(pheno_logit)[None].expand(len(keys), -1))
        body = marks.body(out.vertices[:, marks.body_vertices])
        loss, _ = objective(rows, sel, body, None, None, rv, log_focal.exp())
        loss = loss + 0.01 * pheno_logit.pow(2).sum()  # the phenotype stays near the average without evidence
        if cfg.stature:  # a known height fixes the scale one camera cannot see
            standing = template(*template.rest_pose(1), phenotype=torch.sigmoid(pheno_logit)[None]).vertices[0, :, 2]
            loss = loss + 100.0 * (standing.max() - standing.min() - cfg.stature) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update()
    timings["keyframes_s"] = time.perf_counter() - t0

    # stage 2: every frame, the phenotype fixed; start from the nearest keyframe
    t1 = time.perf_counter()
    phenotype = torch.sigmoid(pheno_logit.detach())
    rest = template.rest_state(phenotype)
    nearest = (torch.arange(n_frames)[:, None] - keys[None]).abs().argmin(1)
    rot = (k_rot.detach() * body_mask[:, None])[nearest].clone().requires_grad_(True)
    root_all = root.clone()
    root_all[keys] = k_root.detach()
    root_all = root_all.requires_grad_(True)
    trans = translation.clone()
    trans[keys] = k_trans.detach()
    trans = trans.requires_grad_(True)
    support = torch.cat([marks.body_vertices, tips, sil_vertices])
    n_body, n_tip = len(marks.body_vertices), len(tips)
    opt = torch.optim.Adam([{"params": [rot, root_all], "lr": 0.02}, {"params": [trans], "lr": 0.005}]
                           + ([{"params": [log_focal], "lr": 0.002}] if log_focal.requires_grad else []))  # fmt: skip
    free = torch.tensor([not b.startswith(_FIXED) for b in ANNY_BONES], dtype=torch.float32)[:, None]
    rows = torch.arange(len(obs.body))
    objective.consecutive = True
    for _ in range(cfg.steps):
        rv = torch.cat([root_all[:, None], (rot * free)[:, 1:]], 1)
        _, T = template.pose_rest(rv, trans, rest, vertices=False)
        pts = skin_subset(template, rest.vertices[support], T, support)
        joints = (T[..., :3, :3] @ rest.bone_poses[:, :3, 3, None])[..., 0] + T[..., :3, 3]
        hand_pts = marks.hands(joints, pts[:, n_body : n_body + n_tip].view(-1, 2, 21, 3))
        loss, terms = objective(rows, obs.frame, marks.body(pts[:, :n_body]), hand_pts, pts[:, n_body + n_tip :], rv,
                                log_focal.exp())  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update()
    timings["all_frames_s"] = time.perf_counter() - t1
    with torch.no_grad():
        kp = objective.camera(rows, obs.frame, marks.body(pts[:, :n_body]))
        err = (objective.project(rows, kp, log_focal.exp()) - objective.body).norm(dim=-1)
        good = objective.conf > 0.5
        residual = float(err[good].median()) if good.any() else float("nan")
    rv = torch.cat([root_all[:, None], (rot * free)[:, 1:]], 1).detach()
    facial, face_res = None, float("nan")
    if obs.face is not None and obs.face_score is not None and bool((obs.face_score > 0).any()) and cfg.face_steps:
        t2 = time.perf_counter()
        rv, facial, face_res = fit_face(template, obs, cfg, objective, rest, rv, trans.detach(), log_focal.detach().exp(),
                                         bar)  # fmt: skip
        timings["face_s"] = time.perf_counter() - t2
    f = float(log_focal.detach().exp())
    K = torch.tensor([[f, 0, (obs.width - 1) / 2], [0, f, (obs.height - 1) / 2], [0, 0, 1]]) if obs.K is None else obs.K[0]
    bar.close()
    timings["per_frame_s"] = (time.perf_counter() - t0) / n_frames
    return FitResult(phenotype=phenotype, rotvec=rv, translation=trans.detach(), K=K, R=obs.R[0].clone(),
                     t=obs.t[0].clone(), timings=timings, residual_px=residual, facial_actions=facial,
                     face_residual_px=face_res)  # fmt: skip


def observations_from_npz(path, masks: np.ndarray | None, width: int, height: int, video: bool) -> Observations:
    """:class:`Observations` from the detector's ``landmarks.npz`` and the masks (F, H, W) uint8."""
    d = np.load(path)
    return Observations(
        body=torch.from_numpy(d["body"]).float(), body_world=torch.from_numpy(d["body_world"]).float(),
        hands=torch.from_numpy(d["hands"]).float(), hand_score=torch.from_numpy(d["hand_score"]).float(),
        masks=None if masks is None else torch.from_numpy(masks > 127), width=width, height=height, video=video,
        face=torch.from_numpy(d["face"]).float(), face_score=torch.from_numpy(d["face_score"]).float(),
    )  # fmt: skip
