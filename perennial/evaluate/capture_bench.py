"""``perennial bench capture``: how well ``perennial capture`` recovers a person from one video.

Each case renders a synthetic video of Anny (``perennial synth`` with one camera: known pose,
phenotype, camera) in a procedural outfit over a photographic background (the LPIPS
repository's example photos in ``../shared/data/lpips``, scaled up, where present; a
procedural gradient with noise otherwise), encodes it as MP4 when imageio-ffmpeg is installed
(a folder of PNGs otherwise), runs the whole pipeline on it and compares with the truth:

- body MPJPE after Procrustes (cm; the main body joints, fingers, toes and eyes excluded);
- hand joints relative to the wrist (cm; MediaPipe's 21 points per hand after a Procrustes
  alignment of each hand, and without it);
- silhouette IoU of the fitted mesh against the true body mask (and, for scale, that of the
  detector's person mask the fit was given);
- reprojection error (px): the 23 body keypoints through the fitted camera against the truth
  through the true camera;
- stature error (cm) and focal-length error (%);
- the expression: mean distance of the face's vertices between the fitted and the true facial
  actions (mm), next to that of a neutral face (the error if nothing were fitted);
- seconds per frame (landmarks and fitting).

Cases differ in motion (turning in place, waving, walking, squatting) and phenotype.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from perennial.body.anny import load_template
from perennial.body.rig import ANNY_BONES
from perennial.capture.fit import FitConfig
from perennial.capture.keypoints import AnnyLandmarks
from perennial.capture.masks import mask_iou
from perennial.capture.monocular import MonocularConfig, capture_from_video, fitted_masks
from perennial.capture.synth import SynthConfig, synthesize
from perennial.numerics import numeric_path

BODY_JOINTS = [i for i, b in enumerate(ANNY_BONES) if not b.startswith(("toe", "finger", "metacarpal", "eye"))]
PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "lpips"
CASES = (
    ("turn", {"gender": 0.2, "age": 0.5, "muscle": 0.5, "weight": 0.5, "height": 0.4, "proportions": 0.5}),
    ("wave", {"gender": 0.9, "age": 0.6, "muscle": 0.7, "weight": 0.4, "height": 0.7, "proportions": 0.5}),
    ("walk", {"gender": 0.5, "age": 0.45, "muscle": 0.3, "weight": 0.7, "height": 0.5, "proportions": 0.6}),
    ("squat", {"gender": 0.7, "age": 0.8, "muscle": 0.5, "weight": 0.5, "height": 0.3, "proportions": 0.4}),
)  # fmt: skip


@dataclass
class CaptureBenchConfig:
    """What ``bench capture`` runs."""

    cases: int = 4
    """How many of the cases (turn, wave, walk, squat; each with its own phenotype)."""
    frames: int = 60
    """Frames per video (30 fps)."""
    size: int = 512
    """Video width and height, pixels."""
    fov_deg: float = 45.0
    """Vertical field of view of the camera, degrees (a phone's main camera: 40-55)."""
    distance: float = 3.2
    """Camera distance, metres: with 45 degrees the person fills about two thirds of the frame's height, as in
    a phone video of the whole body (BlazePose misses people who fill the frame edge to edge)."""
    fit: FitConfig = field(default_factory=FitConfig)
    """The fitting settings."""

    @classmethod
    def quick(cls) -> CaptureBenchConfig:
        return cls(cases=2, frames=20, size=512)


def background(size: int, seed: int) -> np.ndarray:
    """(size, size, 3) float background: one of the example photos scaled up, or a procedural one."""
    photos = sorted(PHOTOS.glob("*.png")) if PHOTOS.is_dir() else []
    if photos:
        img = Image.open(photos[seed % len(photos)]).convert("RGB").resize((size, size), Image.BICUBIC)
        return np.asarray(img, np.float32) / 255
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.3 + 0.4 * x, 0.35 + 0.3 * y, 0.5 - 0.2 * x * y], -1)
    return np.clip(base + 0.05 * g.standard_normal((size, size, 3)), 0, 1).astype(np.float32)


def write_video(frames: list[np.ndarray], out: Path, fps: float) -> Path:
    """``out``.mp4 of the frames (:func:`perennial.render.video.write_video`), or a folder of PNGs where
    imageio-ffmpeg is not installed."""
    from perennial.render.video import write_video as mp4

    try:
        return mp4(out.with_suffix(".mp4"), frames, fps=fps)
    except ValueError:  # no imageio-ffmpeg
        out.mkdir(parents=True, exist_ok=True)
        for k, f in enumerate(frames):
            Image.fromarray(f).save(out / f"{k:06d}.png")
        return out


def _procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` aligned to ``a`` (rotation, scale, translation), both (N, 3)."""
    ma, mb = a.mean(0), b.mean(0)
    A, B = a - ma, b - mb
    U, S, Vt = np.linalg.svd(B.T @ A)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = (S * np.diag(D)).sum() / max((B**2).sum(), 1e-12)
    return s * B @ R + ma


def _stature(template, phenotype) -> float:
    with torch.no_grad():
        v = template(*template.rest_pose(1), phenotype=phenotype).vertices[0]
    return float(v[:, 2].max() - v[:, 2].min())


def score_case(template, marks: AnnyLandmarks, truth_dir: Path, cap_dir: Path) -> dict:
    """Figures of one fitted capture against the synthetic truth."""
    from perennial.capture import read_capture

    truth, fitted = read_capture(truth_dir), read_capture(cap_dir)
    used = json.loads((cap_dir / "fit.json").read_text())["used"]
    gt_cam, fit_cam = truth.cameras["cam00"], fitted.cameras["cam00"]
    tb, fb = truth.body, fitted.body
    gt_ph, fit_ph = truth.body_info["phenotype"], fitted.body_info["phenotype"]
    with torch.no_grad():
        gt = template(tb.rotvec[used], tb.translation[used], phenotype=gt_ph,
                      facial_actions=None if tb.facial_actions is None else tb.facial_actions[used])  # fmt: skip
        fit = template(fb.rotvec, fb.translation, phenotype=fit_ph)
    cam_pts = {}
    for name, out, cam in (("gt", gt, gt_cam), ("fit", fit, fit_cam)):
        joints = out.joints @ cam.R.T + cam.t
        tips = out.vertices[:, marks.hand_tips.clamp_min(0).reshape(-1)].view(-1, 2, 21, 3)
        hands = marks.hands(out.joints, tips) @ cam.R.T + cam.t
        kp = marks.body(out.vertices[:, marks.body_vertices])
        uv, _ = cam.project(kp.reshape(-1, 3))
        cam_pts[name] = (joints[:, BODY_JOINTS].numpy(), hands.numpy(), uv.view(len(kp), -1, 2).numpy())
    (gj, gh, guv), (fj, fh, fuv) = cam_pts["gt"], cam_pts["fit"]
    mpjpe = [np.linalg.norm(_procrustes(gj[f], fj[f]) - gj[f], axis=1).mean() for f in range(len(gj))]
    hand_rel, hand_pa = [], []
    for f in range(len(gh)):
        for s in range(2):
            g, h = gh[f, s] - gh[f, s, :1], fh[f, s] - fh[f, s, :1]
            hand_rel.append(np.linalg.norm(g - h, axis=1)[1:].mean())
            hand_pa.append(np.linalg.norm(_procrustes(g, h) - g, axis=1)[1:].mean())
    W, H = gt_cam.width, gt_cam.height
    truth_masks = np.stack([np.asarray(Image.open(truth.root / truth.views[f].mask)) > 127 for f in used])
    from perennial.capture.fit import FitResult

    fit_res = FitResult(phenotype=torch.tensor(list(fit_ph.values())), rotvec=fb.rotvec, translation=fb.translation,
                        K=fit_cam.K, R=fit_cam.R, t=fit_cam.t)  # fmt: skip
    iou = mask_iou(fitted_masks(template, fit_res, W, H), truth_masks)
    detector = np.stack([np.asarray(Image.open(fitted.root / v.mask)) > 127 for v in fitted.views])
    report = json.loads((cap_dir / "fit.json").read_text())
    basis = template.facial_basis(template.rest_state(gt_ph))
    basis = basis[:, basis.norm(dim=-1).amax(0) > 1e-4]  # the face's vertices
    gt_fa = tb.facial_actions[used] if tb.facial_actions is not None else torch.zeros(len(used), len(basis))
    fit_fa = fb.facial_actions if fb.facial_actions is not None else torch.zeros_like(gt_fa)

    def face_mm(a: torch.Tensor) -> float:
        return 1000 * float(torch.einsum("fa,avc->fvc", a, basis).norm(dim=-1).mean())

    return {
        "frames": len(used),
        "mpjpe_pa_cm": 100 * float(np.median(mpjpe)),
        "hand_rel_wrist_cm": 100 * float(np.median(hand_rel)),
        "hand_pa_cm": 100 * float(np.median(hand_pa)),
        "mask_iou": float(np.median(iou)),
        "detector_mask_iou": float(np.median(mask_iou(detector, truth_masks))),
        "reprojection_px": float(np.median(np.linalg.norm(guv - fuv, axis=-1))),
        "stature_error_cm": 100 * abs(_stature(template, gt_ph) - _stature(template, fit_ph)),
        "focal_error_pct": 100 * abs(float(fit_cam.K[0, 0] / gt_cam.K[0, 0]) - 1),
        "face_expression_mm": face_mm(fit_fa - gt_fa),
        "face_expression_mm_neutral": face_mm(gt_fa),
        "seconds_per_frame": report["seconds"]["total"] / len(used),
        "landmarks_s_per_frame": report["seconds"]["landmarks"] / len(used),
    }


def run_capture_bench(out: str | Path, cfg: CaptureBenchConfig, progress: bool = True) -> dict:
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    template = load_template("anny")
    marks = AnnyLandmarks(template)
    t0 = time.perf_counter()
    cases = {}
    for k, (motion, phenotype) in enumerate(CASES[: cfg.cases]):
        name = f"{motion}"
        truth = out / f"{name}-truth"
        synthesize(truth, SynthConfig(appearance=f"bench-{k}", seed=k, cameras=1, frames=cfg.frames, size=cfg.size,
                                      motion=motion, phenotype=phenotype, test_camera_every=0, test_frame_every=0,
                                      supersample=2, fov_deg=cfg.fov_deg, radius=cfg.distance), progress=False)  # fmt: skip
        bg = background(cfg.size, k)
        frames = []
        for v in sorted(read_views(truth), key=lambda v: v[0]):
            rgb = np.asarray(Image.open(v[1]), np.float32) / 255
            alpha = np.asarray(Image.open(v[2]), np.float32)[..., None] / 255
            frames.append((np.clip(rgb + bg * (1 - alpha), 0, 1) * 255 + 0.5).astype(np.uint8))
        video = write_video(frames, out / f"{name}-video", fps=30.0)
        cap = out / f"{name}-capture"
        capture_from_video(video, cap, MonocularConfig(size=cfg.size), cfg.fit, progress=progress)
        cases[name] = score_case(template, marks, truth, cap) | {"video": video.name}
        print(f"{name}: " + ", ".join(f"{a} {b:.3g}" if isinstance(b, float) else f"{a} {b}" for a, b in cases[name].items()))
    keys = [k for k in next(iter(cases.values())) if k != "video"]
    summary = {k: float(statistics.median(c[k] for c in cases.values())) for k in keys}
    res = {"numeric_path": numeric_path(), "config": {"cases": cfg.cases, "frames": cfg.frames, "size": cfg.size},
           "background": "photos" if sorted(PHOTOS.glob("*.png")) else "procedural",
           "cases": cases, "median": summary, "seconds": time.perf_counter() - t0}  # fmt: skip
    (out / "capture.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def read_views(capture_dir: Path) -> list[tuple[int, Path, Path]]:
    """(frame, image path, mask path) of every view of a capture."""
    from perennial.capture import read_capture

    cap = read_capture(capture_dir)
    return [(v.frame, cap.root / v.image, cap.root / v.mask) for v in cap.views]


def bench_cli(args) -> dict:
    """``perennial bench capture [--quick] [--out DIR] [--json FILE]``: flat figures (the CLI prints them)."""
    cfg = CaptureBenchConfig.quick() if args.quick else CaptureBenchConfig()
    out = args.out or "out/bench-capture"
    res = run_capture_bench(out, cfg)
    print(f"wrote {out}/capture.json; background: {res['background']}; targets: MPJPE-PA <= 5 cm, hands <= 2 cm, "
          "IoU >= 0.9, reprojection <= 3 px at 512 px, stature <= 3 cm")  # fmt: skip
    return {f"median.{k}": v for k, v in res["median"].items()} | {"seconds": res["seconds"]}


