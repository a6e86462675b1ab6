"""``perennial capture``: a person's own video or photos to a capture (see :mod:`perennial.capture.monocular`)."""

from __future__ import annotations

import argparse
import json

from perennial.config import add_options, options_given, override


def _cmd_capture(a: argparse.Namespace) -> int:
    from perennial.capture.fit import FitConfig
    from perennial.capture.monocular import MonocularConfig
    from perennial.capture.sources import capture_from_source

    given = options_given(a)
    cfg = override(MonocularConfig(), {k: v for k, v in given.items() if k in MonocularConfig.__dataclass_fields__})
    fit = override(FitConfig(), {k: v for k, v in given.items() if k in FitConfig.__dataclass_fields__})
    cap, layout = capture_from_source(a.source, a.out, cfg, fit, layout=a.layout, overwrite=a.overwrite,
                                      progress=not a.quiet)  # fmt: skip
    if not a.quiet:
        rep = json.loads((cap.root / "fit.json").read_text())
        if layout == "zju-mocap":
            ious = ", ".join(f"{k} {v:.3f}" for k, v in rep["mask_iou_vs_masks"].items())
            what = f"{rep['frames']} frames x {len(rep['cameras'])} cameras, mask IoU {ious}"
        else:
            what = (f"{len(rep['used'])} frames ({len(rep['dropped'])} without a person left out), focal "
                    f"{rep['focal_px']:.0f} px, mask IoU {rep['mask_iou']:.3f}")  # fmt: skip
        print(f"wrote {a.out} ({layout}): {what}, reprojection {rep['reprojection_px_median']:.1f} px (median), "
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
    c.add_argument("source", help="video file (mp4, mov, avi, mkv, webm), folder of images, or a dataset folder in "
                                  "the ZJU-MoCap (annots.npy) or People-Snapshot (camera.pkl, masks.hdf5) layout")
    c.add_argument("--layout", default="auto", choices=["auto", "video", "zju-mocap", "people-snapshot"],
                   help="how to read SOURCE (default: auto, from the files it holds)")
    c.add_argument("out", help="output capture folder (must not exist or be empty)")
    add_options(c, MonocularConfig(), ["appearance", "size", "max_frames", "stride", "test_every"])
    add_options(c, FitConfig(), ["fov_deg", "stature", "keyframes", "key_steps", "steps", "face_steps", "silhouette",
                                 "world", "smooth", "prior"])  # fmt: skip
    c.add_argument("--overwrite", action="store_true", help="replace an existing capture at OUT")
    c.add_argument("--quiet", action="store_true", help="no progress or summary")
    c.set_defaults(func=_cmd_capture)
