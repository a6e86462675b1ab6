"""One entry point for every source ``perennial capture`` takes: a video, a folder of images, or a dataset
folder in the ZJU-MoCap or People-Snapshot layout (:mod:`perennial.capture.readers`)."""

from __future__ import annotations

from pathlib import Path

from perennial.capture.capture import Capture
from perennial.capture.detect import check_source
from perennial.capture.fit import FitConfig
from perennial.capture.monocular import MonocularConfig, capture_from_video
from perennial.capture.multiview import capture_from_zju
from perennial.capture.readers import LAYOUTS, detect_layout, people_snapshot_source
from perennial.errors import PerennialError


def capture_from_source(src: str | Path, out: str | Path, config: MonocularConfig | None = None,
                        fit_config: FitConfig | None = None, layout: str = "auto", overwrite: bool = False,
                        progress: bool = True) -> tuple[Capture, str]:  # fmt: skip
    """Write a capture of the person in ``src`` to ``out``; returns it and the layout that was read."""
    src = Path(src)
    if layout not in LAYOUTS:
        raise PerennialError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if not src.exists():
        raise PerennialError(f"{src}: no such video, image folder or dataset folder")
    layout = detect_layout(src) if layout == "auto" else layout
    if layout == "zju-mocap":
        return capture_from_zju(src, out, config, fit_config, overwrite, progress), layout
    if layout == "people-snapshot":
        video, masks, K = people_snapshot_source(src)
        return capture_from_video(video, out, config, fit_config, overwrite, progress, intrinsics=K,
                                  masks=masks), layout  # fmt: skip
    check_source(src)
    return capture_from_video(src, out, config, fit_config, overwrite, progress), layout
