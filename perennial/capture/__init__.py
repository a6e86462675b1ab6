"""perennial.capture: captures in memory and on disk (``perennial-capture`` version 1).

Typical use::

    from perennial.capture import read_capture
    capture = read_capture("data/outfit-a")       # validates; raises CaptureError
    for view in capture.views_of("train"):
        rgb = capture.load_image(view)              # (H, W, 3) float32 in [0, 1]
        rotvec, translation, facial = capture.body_params(view.frame)
"""

from perennial.capture.capture import SPLITS, BodyParams, Capture, CaptureError, View
from perennial.capture.format import FORMAT, VERSION, read_capture
from perennial.capture.validate import KNOWN_TEMPLATES, PHENOTYPE_NAMES
from perennial.capture.writer import ViewData, write_capture

__all__ = [
    "FORMAT",
    "KNOWN_TEMPLATES",
    "PHENOTYPE_NAMES",
    "SPLITS",
    "VERSION",
    "BodyParams",
    "Capture",
    "CaptureError",
    "View",
    "ViewData",
    "read_capture",
    "write_capture",
]
