"""Run the MediaPipe landmark detector (:mod:`perennial.capture.landmarks_mp`) in its own environment.

``mediapipe==0.10.21`` bundles its models (BlazePose full with segmentation, hands, face
mesh) but needs ``numpy<2`` and ``protobuf<5``, so ``make setup`` installs it into a side
environment, ``.venv-mp`` beside the main one. Its interpreter is found at
``$PERENNIAL_MEDIAPIPE_PYTHON`` or ``<repository>/.venv-mp/bin/python``; the detector runs
there as a subprocess and hands over its results as files.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from perennial.errors import PerennialError
from perennial.progress import progress as progress_bar

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SCRIPT = Path(__file__).with_name("landmarks_mp.py")
ERROR = "perennial-detector-error: "  # the script's prefix for why it gave up (landmarks_mp.ERROR)


def detector_python() -> Path:
    """The side environment's Python interpreter, or a :class:`PerennialError` that says how to make it."""
    env = os.environ.get("PERENNIAL_MEDIAPIPE_PYTHON")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".venv-mp" / "bin" / "python"
    if not path.exists():
        raise PerennialError(f"{path}: the landmark detector's environment is missing; `make setup` creates it "
                             "(.venv-mp with mediapipe 0.10.21), or set PERENNIAL_MEDIAPIPE_PYTHON to a Python that "
                             "has mediapipe==0.10.21")  # fmt: skip
    return path


def check_source(src: Path) -> int:
    """Raise a clear error unless ``src`` is a video file or a folder with images; return the image count
    (0 for a video)."""
    if not src.exists():
        raise PerennialError(f"{src}: no such video or image folder")
    if src.is_dir():
        n = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in src.iterdir())
        if n == 0:
            raise PerennialError(f"{src}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
        return n
    if src.suffix.lower() not in VIDEO_SUFFIXES:
        raise PerennialError(f"{src}: not a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of images")
    return 0


def detect(src: str | Path, out: str | Path, size: int = 512, max_frames: int = 100000, stride: int = 1,
           progress: bool = True) -> Path:  # fmt: skip
    """Decode ``src`` (video or image folder) into ``out``: frames, person masks, landmarks (see
    :mod:`perennial.capture.landmarks_mp` for the files). Returns ``out``."""
    src, out = Path(src), Path(out)
    images = check_source(src)
    python = detector_python()
    cmd = [str(python), str(SCRIPT), str(src), str(out), "--size", str(size), "--max-frames", str(max_frames),
           "--stride", str(stride)]  # fmt: skip
    total = min(max_frames, -(-images // stride)) if images else None
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2", OMP_WAIT_POLICY="PASSIVE")
    bar = progress_bar(total=total, desc="landmarks", unit="frame", enabled=progress)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("frame "):
            bar.update()
    err = proc.stderr.read()
    proc.wait()
    bar.close()
    if proc.returncode != 0:
        why = [x[len(ERROR):] for x in err.splitlines() if x.startswith(ERROR)]  # MediaPipe logs there too
        raise PerennialError(why[-1] if why else f"{src}: the landmark detector failed (exit {proc.returncode})")
    return out
