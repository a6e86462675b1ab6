"""``perennial capture``: a person's own video or photos to a capture (see :mod:`perennial.capture.monocular`)."""

from __future__ import annotations

import argparse
import json

from perennial.config import add_options, options_given, override


def _cmd_capture(a: argparse.Namespace) -> int:
    from perennial.capture.fit import FitConfig
    from perennial.capture.monocular import MonocularConfig, capture_from_video

    given = options_given(a)
    cfg = override(MonocularConfig(), {k: v for k, v in given.items() if k in MonocularConfig.__dataclass_fields__})
    fit = override(FitConfig(), {k: v for k, v in given.items() if k in FitConfig.__dataclass_fields__})
    cap = capture_from_video(a.source, a.out, cfg, fit, overwrite=a.overwrite, progress=not a.quiet)
    if not a.quiet:
        rep = json.loads((cap.root / "fit.json").read_text())
        print(f"wrote {a.out}: {len(rep['used'])} frames ({len(rep['dropped'])} without a person left out), "
              f"focal {rep['focal_px']:.0f} px, reprojection {rep['reprojection_px_median']:.1f} px (median), "
              f"mask IoU {rep['mask_iou_vs_detector']:.3f} against the detector's, "
              f"{rep['seconds']['total']:.0f} s; look at {a.out}/overlay.png")  # fmt: skip
    return 0


def add_capture_commands(sub) -> None:
    from perennial.capture.fit import FitConfig
    from perennial.capture.monocular import MonocularConfig

    c = sub.add_parser("capture", help="turn a video or a folder of photos of a person into a capture",
                       description="Find the person's mask, body, hand and face landmarks in every frame "
                                   "(MediaPipe, in the .venv-mp side environment that make setup creates), fit "
                                   "the Anny body to them (phenotype, pose with fingers, root motion, focal "
                                   "length) and write a perennial-capture with one camera, every n-th frame "
                                   "held out; then `perennial create AVATAR --capture OUT`.")  # fmt: skip
    c.add_argument("source", help="video file (mp4, mov, avi, mkv, webm) or folder of images")
    c.add_argument("out", help="output capture folder (must not exist or be empty)")
    add_options(c, MonocularConfig(), ["appearance", "size", "max_frames", "stride", "test_every"])
    add_options(c, FitConfig(), ["fov_deg", "keyframes", "key_steps", "steps", "silhouette", "world", "smooth",
                                 "prior"])  # fmt: skip
    c.add_argument("--overwrite", action="store_true", help="replace an existing capture at OUT")
    c.add_argument("--quiet", action="store_true", help="no progress or summary")
    c.set_defaults(func=_cmd_capture)
