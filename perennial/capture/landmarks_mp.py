"""Frames, person masks and landmarks of a video or an image folder, with MediaPipe.

This file runs as a script inside the side environment that ``make setup`` creates
(``.venv-mp``: ``mediapipe==0.10.21``, which bundles its models but needs ``numpy<2``
and ``protobuf<5``, so it cannot share the main environment). It imports only the
standard library, NumPy, OpenCV and MediaPipe; :mod:`perennial.capture.detect` runs it
in a subprocess and reads what it writes::

    OUT/frames/000000.png ...   the decoded frames (RGB, longest side at most --size px)
    OUT/masks/000000.png ...    person masks from BlazePose's segmentation (0 / 255)
    OUT/landmarks.npz           body (F, 33, 4) pixels x, y, relative depth, visibility;
                                body_world (F, 33, 3) metres, hip-centred (y down);
                                hands (F, 2, 21, 3) pixels + relative depth, person's left then right;
                                hand_score (F, 2) 0 where no hand was found;
                                face (F, 478, 3) pixels + relative depth; face_score (F,)
    OUT/meta.json               fps, frame count, source size, scale, source names

Hands and the face are small in a full-body frame, so each is searched in a crop around
BlazePose's wrist and hand points, or its head points; a hand is the person's left or right
by the BlazePose wrist it was found at, not by MediaPipe's handedness label (which assumes a
mirrored selfie image). Landmarks not found in a frame are NaN (body, face) or have score 0
(hands).

Usage: ``python landmarks_mp.py INPUT OUT [--size PX] [--max-frames N] [--stride K]``.
"""

import argparse
import json
import sys
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ERROR = "perennial-detector-error: "
"""Prefix of the one line that says why the script gave up (MediaPipe logs to stderr too)."""


def frames_of(src: Path, size: int, max_frames: int, stride: int):
    """Yield (name, RGB uint8 image) resized so that the longest side is at most ``size``."""
    def fit(img):
        h, w = img.shape[:2]
        s = min(1.0, size / max(h, w))
        if s < 1.0:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        return img, s

    count = 0
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for i, p in enumerate(files[::stride]):
            if count >= max_frames:
                return
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"{ERROR}{p}: not a readable image")
            yield (p.name, *fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            count += 1
        return
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise SystemExit(f"{ERROR}{src}: not a readable video")
    i = 0
    while count < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % stride == 0:
            yield (f"frame {i}", *fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            count += 1
        i += 1
    cap.release()


def crop(img, centre, side: float, res: int):
    """A ``res``-pixel square crop of ``img`` around ``centre`` (x, y) of ``side`` pixels (zero outside the
    image), and the map from crop pixels back to image pixels: ``image = crop * scale + offset``."""
    scale = side / res
    offset = np.asarray(centre, np.float64) - side / 2
    M = np.array([[1 / scale, 0, -offset[0] / scale], [0, 1 / scale, -offset[1] / scale]])
    return cv2.warpAffine(img, M, (res, res), flags=cv2.INTER_LINEAR), scale, offset


def detect_hands(hands, img, b):
    """Per side (person's left, right): 21 hand landmarks (pixels, relative depth) and a score. Hands found
    in the whole frame go to the nearer BlazePose wrist; a side still missing is searched in a crop around
    that wrist and BlazePose's hand points (small hands in a full-body frame are often missed)."""
    out, score = np.zeros((2, 21, 3), np.float32), np.zeros(2, np.float32)
    h, w = img.shape[:2]
    r = hands.process(img)
    for lm, cls in zip(r.multi_hand_landmarks or [], r.multi_handedness or []):
        pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm.landmark], np.float32)
        if not np.isfinite(b[[15, 16], :2]).all():
            continue
        side = int(np.linalg.norm(pts[0, :2] - b[16, :2]) < np.linalg.norm(pts[0, :2] - b[15, :2]))
        if cls.classification[0].score > score[side]:
            out[side], score[side] = pts, cls.classification[0].score
    for side, (wrist, tips) in enumerate(((15, (17, 19, 21)), (16, (18, 20, 22)))):
        pts = b[[wrist, *tips], :2]
        if score[side] > 0 or not np.isfinite(pts).all() or b[wrist, 3] < 0.3:
            continue
        centre = pts.mean(0)
        side_px = max(4.0 * np.linalg.norm(pts[1:] - pts[0], axis=1).max(), 32.0)
        c, s, o = crop(img, centre, side_px, 224)
        r = hands.process(c)
        if not r.multi_hand_landmarks:
            continue
        lm = r.multi_hand_landmarks[0].landmark
        out[side] = [(p.x * 224 * s + o[0], p.y * 224 * s + o[1], p.z * 224 * s) for p in lm]
        score[side] = r.multi_handedness[0].classification[0].score
    return out, score


def detect_face(face, img, b):
    """478 face-mesh landmarks (pixels, relative depth) found in a crop around BlazePose's head points (in the
    whole image where BlazePose found no body: a close-up), and a score (1 found, 0 not)."""
    pts = b[[0, 2, 5, 7, 8], :2]  # nose, eyes, ears
    f = np.full((478, 3), np.nan, np.float32)
    if not np.isfinite(pts).all():
        h, w = img.shape[:2]
        r = face.process(img)
        if not r.multi_face_landmarks:
            return f, 0.0
        f[:] = [(p.x * w, p.y * h, p.z * w) for p in r.multi_face_landmarks[0].landmark]
        return f, 1.0
    side_px = max(3.0 * np.linalg.norm(pts[3] - pts[4]), 3.0 * np.ptp(pts, axis=0).max(), 32.0)
    c, s, o = crop(img, pts.mean(0), side_px, 256)
    r = face.process(c)
    if not r.multi_face_landmarks:
        return f, 0.0
    f[:] = [(p.x * 256 * s + o[0], p.y * 256 * s + o[1], p.z * 256 * s) for p in r.multi_face_landmarks[0].landmark]
    return f, 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-frames", type=int, default=100000)
    ap.add_argument("--stride", type=int, default=1)
    a = ap.parse_args()
    src, out = Path(a.input), Path(a.out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    video = not src.is_dir()
    fps = 0.0
    if video:
        cap = cv2.VideoCapture(str(src))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        cap.release()
    static = not video  # a folder may hold unrelated photos: no tracking between them
    pose = mp.solutions.pose.Pose(static_image_mode=static, model_complexity=1, enable_segmentation=True,
                                  min_detection_confidence=0.3)
    # hands and face are found in crops around BlazePose's points, each crop on its own (static mode)
    hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                     min_detection_confidence=0.3)
    face = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                           min_detection_confidence=0.3)
    body, body_world, hand, hand_score, face_pts, face_score, names = [], [], [], [], [], [], []
    scale, shape = 1.0, None
    for k, (name, img, s) in enumerate(frames_of(src, a.size, a.max_frames, a.stride)):
        scale, shape = s, img.shape[:2]
        h, w = shape
        cv2.imwrite(str(out / "frames" / f"{k:06d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        r = pose.process(img)
        b = np.full((33, 4), np.nan, np.float32)
        bw = np.full((33, 3), np.nan, np.float32)
        mask = np.zeros((h, w), np.uint8)
        if r.pose_landmarks:
            b[:] = [(p.x * w, p.y * h, p.z * w, p.visibility) for p in r.pose_landmarks.landmark]
            bw[:] = [(p.x, p.y, p.z) for p in r.pose_world_landmarks.landmark]
        if r.segmentation_mask is not None:
            mask = (r.segmentation_mask > 0.5).astype(np.uint8) * 255
        cv2.imwrite(str(out / "masks" / f"{k:06d}.png"), mask)
        hh, hs = detect_hands(hands, img, b)
        f, fs = detect_face(face, img, b)
        body.append(b), body_world.append(bw), hand.append(hh), hand_score.append(hs)
        face_pts.append(f), face_score.append(fs), names.append(name)
        print(f"frame {k + 1}", flush=True)
    if not names:
        raise SystemExit(f"{ERROR}{src}: no frames")
    np.savez_compressed(out / "landmarks.npz", body=np.stack(body), body_world=np.stack(body_world),
                        hands=np.stack(hand), hand_score=np.stack(hand_score), face=np.stack(face_pts),
                        face_score=np.array(face_score, np.float32))
    meta = {"source": str(src), "video": video, "fps": fps, "frames": len(names), "names": names,
            "width": int(shape[1]), "height": int(shape[0]), "scale": scale, "mediapipe": mp.__version__}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
