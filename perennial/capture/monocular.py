"""A person's own video (or folder of photos) to a ``perennial-capture``: landmarks, fitting, writing.

1. :func:`~perennial.capture.detect.detect` decodes the frames and finds the person's mask,
   body, hand and face landmarks with MediaPipe (in its side environment).
2. :func:`~perennial.capture.fit.fit_body` fits Anny: phenotype, per-frame pose with
   fingers, root motion, focal length.
3. The capture is written atomically: one camera ``cam00``, every ``test_every``-th frame held
   out. Its images hold the person over black (frame x mask), so an avatar learns and is scored
   on the person only; the original frames stay in ``source/`` (to composite renders over), the
   detector's output in ``landmarks.npz`` and the fit's figures in ``fit.json``, with
   ``overlay.png``, the fitted mesh's outline over a few frames, to look at.

Frames where no person was found are left out (``fit.json`` lists them).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from perennial.body.anny import load_template
from perennial.body.rig import PHENOTYPE_LABELS
from perennial.capture.capture import BodyParams, Capture
from perennial.capture.detect import detect
from perennial.capture.fit import (
    FitConfig,
    FitResult,
    Observations,
    fit_body,
    observations_from_npz,
)
from perennial.capture.masks import mask_iou, resize_masks
from perennial.capture.readers import temp_dir_near
from perennial.capture.writer import ViewData, write_capture
from perennial.errors import ConfigError, PerennialError
from perennial.naming import check_name
from perennial.render.camera import Camera
from perennial.render.image import contact_sheet, save_png, to_uint8
from perennial.render.raycast import render_hits


@dataclass
class MonocularConfig:
    """How to turn a video or a folder of images into a capture."""

    appearance: str = "own"
    """Appearance name of the capture (what the person wears)."""
    size: int = 512
    """Longest side of the capture's images, pixels (frames are scaled down to it)."""
    max_frames: int = 300
    """At most this many frames are used."""
    stride: int = 1
    """Use every n-th frame of the video or folder."""
    test_every: int = 5
    """Every n-th frame is held out for evaluation (0: none)."""

    def __post_init__(self) -> None:
        check_name(self.appearance, where="appearance")
        for k, lo in (("size", 64), ("max_frames", 1), ("stride", 1), ("test_every", 0)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{k} must be an integer >= {lo}, got {v!r}")


def _read_detection(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    meta = json.loads((folder / "meta.json").read_text())
    n = meta["frames"]
    frames = np.stack([np.asarray(Image.open(folder / "frames" / f"{k:06d}.png").convert("RGB")) for k in range(n)])
    masks = np.stack([np.asarray(Image.open(folder / "masks" / f"{k:06d}.png").convert("L")) for k in range(n)])
    return meta, frames, masks


def fitted_masks(template, fit: FitResult, width: int, height: int) -> np.ndarray:
    """(F, H, W) bool silhouettes of the fitted meshes seen by the fitted camera."""
    cam = Camera(K=fit.K, R=fit.R, t=fit.t, width=width, height=height)
    with torch.no_grad():
        verts = template(fit.rotvec, fit.translation, phenotype=fit.phenotype).vertices
    return np.stack([render_hits(v, template.faces, cam).mask.view(height, width).numpy() for v in verts])


def overlay_sheet(frames: np.ndarray, fitted: np.ndarray, count: int = 6) -> np.ndarray:
    """Frames with the fitted mesh's silhouette tinted and outlined, ``count`` of them side by side."""
    pick = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    tiles = []
    for k in pick:
        img = frames[k].astype(np.float32) / 255
        m = fitted[k]
        edge = m & ~(np.pad(m, 1)[2:, 1:-1] & np.pad(m, 1)[:-2, 1:-1] & np.pad(m, 1)[1:-1, 2:] & np.pad(m, 1)[1:-1, :-2])
        img[m] = 0.6 * img[m] + 0.4 * np.array([0.2, 0.6, 1.0])
        img[edge] = [1.0, 0.9, 0.1]
        tiles.append(to_uint8(img))
    return contact_sheet(tiles, cols=len(tiles))


def scale_intrinsics(K: np.ndarray, scale: float) -> torch.Tensor:
    """Intrinsics of an image scaled by ``scale`` (pixel centres at integer coordinates)."""
    K = np.array(K, np.float64)
    K[:2, :2] *= scale
    K[:2, 2] = (K[:2, 2] + 0.5) * scale - 0.5
    return torch.as_tensor(K, dtype=torch.float32)


def exif_intrinsics(src: Path, meta: dict) -> np.ndarray | None:
    """Intrinsics from the first photo's EXIF 35 mm-equivalent focal length (a 36 mm wide frame), if a folder
    of photos records one; None otherwise (videos rarely do)."""
    if not src.is_dir():
        return None
    first = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    try:
        with Image.open(first[0]) as im:
            w, h = im.size
            f35 = im.getexif().get_ifd(0x8769).get(41989)  # FocalLengthIn35mmFilm
    except (IndexError, OSError):
        return None
    if not f35 or float(f35) <= 0:
        return None
    f = float(f35) / 36.0 * max(w, h)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])


def capture_from_video(src: str | Path, out: str | Path, config: MonocularConfig | None = None,
                       fit_config: FitConfig | None = None, overwrite: bool = False, progress: bool = True,
                       intrinsics: np.ndarray | None = None, masks: np.ndarray | None = None) -> Capture:  # fmt: skip
    """Write a capture of the person in ``src`` (video file or image folder) to ``out``; see the module.

    ``intrinsics`` (3, 3) and ``masks`` (F, H, W) bool of every source frame, where known (a dataset's
    calibration and masks), replace the estimated focal length and the detector's masks."""
    cfg, fit_cfg = config or MonocularConfig(), fit_config or FitConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PerennialError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    given_K = intrinsics is not None
    t0 = time.perf_counter()
    with temp_dir_near(out) as tmp:
        folder = detect(src, Path(tmp) / "det", cfg.size, cfg.max_frames, cfg.stride, progress)
        meta, frames, found = _read_detection(folder)
        t_detect = time.perf_counter() - t0
        masks_given = masks
        if masks is None:
            masks = found
        else:
            given = masks[:: cfg.stride][: len(frames)]
            if len(given) < len(frames):
                raise PerennialError(f"{src}: {len(frames)} frames but masks for only {len(given)} of them")
            masks = resize_masks(given, meta["width"], meta["height"])
        obs = observations_from_npz(folder / "landmarks.npz", masks, meta["width"], meta["height"], meta["video"])
        if intrinsics is None and not fit_cfg.fov_deg:
            intrinsics = exif_intrinsics(Path(src), meta)
        if intrinsics is not None:
            obs.K = scale_intrinsics(intrinsics, meta["scale"]).expand(len(obs.body), 3, 3).clone()
        seen = _person_seen(obs)
        if seen.sum() < 1:
            raise PerennialError(f"{src}: no person found in any frame")
        keep = np.flatnonzero(seen)
        obs = _subset(obs, keep)
        template = load_template("anny")
        fit = fit_body(template, obs, fit_cfg, progress=progress)
        capture = _write(out, cfg, fit, frames[keep], masks[keep], meta, overwrite)
        shutil.copy(folder / "landmarks.npz", out / "landmarks.npz")
    fitted = fitted_masks(template, fit, meta["width"], meta["height"])
    iou = mask_iou(fitted, masks[keep] > 127)
    save_png(out / "overlay.png", overlay_sheet(frames[keep], fitted))
    exif = intrinsics is not None and not given_K
    focal_from = "given" if given_K else "fov_deg" if fit_cfg.fov_deg else "exif" if exif else "estimated"
    report = {
        "source": str(src), "frames": int(meta["frames"]), "used": keep.tolist(),
        "dropped": sorted(set(range(meta["frames"])) - set(keep.tolist())), "fps": meta["fps"],
        "focal_px": float(fit.K[0, 0]), "focal_from": focal_from,
        "phenotype": dict(zip(PHENOTYPE_LABELS, fit.phenotype.tolist())),
        "reprojection_px_median": fit.residual_px, "face_reprojection_px_median": fit.face_residual_px,
        "mask_iou": float(iou.mean()),
        "masks": "detector" if masks_given is None else "dataset",
        "seconds": {"landmarks": t_detect, **fit.timings, "total": time.perf_counter() - t0},
        "config": asdict(cfg), "fit_config": asdict(fit_cfg), "mediapipe": meta.get("mediapipe"),
    }  # fmt: skip
    (out / "fit.json").write_text(json.dumps(report, indent=1) + "\n")
    return capture


def _person_seen(obs: Observations) -> np.ndarray:
    torso = obs.body[:, [11, 12, 23, 24]]
    return (torch.isfinite(torso[..., :2]).all(-1).all(-1) & (torso[..., 3].nan_to_num() > 0.3).all(-1)).numpy()


def _subset(obs: Observations, keep: np.ndarray) -> Observations:
    k = torch.from_numpy(keep)
    return Observations(body=obs.body[k], body_world=obs.body_world[k], hands=obs.hands[k],
                        hand_score=obs.hand_score[k], masks=None if obs.masks is None else obs.masks[k],
                        width=obs.width, height=obs.height, video=obs.video,
                        K=None if obs.K is None else obs.K[k], face=None if obs.face is None else obs.face[k],
                        face_score=None if obs.face_score is None else obs.face_score[k])  # fmt: skip


def person_over_black(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A capture's image: the frame (H, W, 3) uint8 where the mask (H, W) is set, black elsewhere."""
    return (frame.astype(np.float32) * (mask[..., None] > 127)).astype(np.uint8)


def fitted_body(fit: FitResult) -> tuple[BodyParams, dict]:
    """A fit's per-frame body parameters and ``body_info`` for :func:`write_capture`."""
    template = load_template("anny")
    labels = list(template.facial_action_names)
    actions = fit.facial_actions if fit.facial_actions is not None else torch.zeros(len(fit.rotvec), len(labels))
    body = BodyParams(bones=list(template.bone_names), rotvec=fit.rotvec, translation=fit.translation,
                      facial_actions=actions, facial_action_labels=labels)  # fmt: skip
    return body, {"template": "anny", "rig": "anny", "phenotype": dict(zip(PHENOTYPE_LABELS, fit.phenotype.tolist()))}


def _write(out: Path, cfg: MonocularConfig, fit: FitResult, frames: np.ndarray, masks: np.ndarray, meta: dict,
           overwrite: bool) -> Capture:  # fmt: skip
    cam = Camera(K=fit.K, R=fit.R, t=fit.t, width=meta["width"], height=meta["height"])
    fps = meta["fps"] or 30.0
    views = []
    for f in range(len(frames)):
        split = "test" if cfg.test_every and f % cfg.test_every == cfg.test_every - 1 else "train"
        views.append(ViewData(camera="cam00", frame=f, split=split, image=person_over_black(frames[f], masks[f]),
                              mask=masks[f]))  # fmt: skip
    body, body_info = fitted_body(fit)
    capture = write_capture(out, appearance=cfg.appearance, body_info=body_info, cameras={"cam00": cam},
                            frames=[{"index": f, "time": f * (cfg.stride / fps if meta["video"] else 1.0)}
                                    for f in range(len(frames))],
                            views_with_arrays=views, body=body, overwrite=overwrite)  # fmt: skip
    src = out / "source"
    src.mkdir()
    for f in range(len(frames)):
        Image.fromarray(frames[f]).save(src / f"{f:06d}.png")
    return capture
