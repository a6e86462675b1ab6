"""Validation of the pieces of a ``perennial-capture`` (v1): JSON fields, cameras, frames, views, ``body.npz``.

Each check raises one :class:`~perennial.capture.capture.CaptureError` whose message
starts with the file (``capture.json``, ``body.npz``) and names the field. Used by the
reader (:func:`perennial.capture.format.read_capture`) and, through it, by the writer.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from perennial.capture.capture import SPLITS, BodyParams, CaptureError, View
from perennial.render.camera import Camera

KNOWN_TEMPLATES = ("anny",)
"""Body templates this reader knows; ``body.template`` must be one of them."""
PHENOTYPE_NAMES = (
    "gender", "age", "muscle", "weight", "height", "proportions",
    "cupsize", "firmness", "african", "asian", "caucasian",
)  # fmt: skip
"""Anny's phenotype parameters (each in [0, 1]); the first six are the defaults."""
NUM_FACIAL_ACTIONS = 52
MIN_IMAGE_SIZE = 8
"""Smallest image width and height, pixels (SSIM's window is 7; smaller images teach nothing)."""
ORTHONORMAL_TOL = 1e-4
"""Largest allowed ``max |R R^T - I|`` for a camera rotation."""
TOP_KEYS = ("format", "version", "appearance", "body", "cameras", "frames", "views")
NPZ_REQUIRED = ("bones", "rotvec", "translation")
NPZ_OPTIONAL = ("facial_actions", "facial_action_labels")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
"""Camera names (they become folder names): letters, digits, ``_ . -``, not starting with ``.`` or ``-``."""


def fail(field: str, problem: str) -> CaptureError:
    return CaptureError(f"capture.json: {field} {problem}")


def check_keys(
    obj: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """``obj`` must be an object with all ``required`` keys and no others."""
    if not isinstance(obj, dict):
        raise fail(where, f"must be a JSON object, got {type(obj).__name__}")
    prefix = f"{where}." if where else ""
    for key in required:
        if key not in obj:
            raise CaptureError(f"capture.json: missing required field {prefix}{key}")
    for key in obj:
        if key not in required and key not in optional:
            raise fail(f"{prefix}{key}", "is not a known field")


def string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise fail(field, f"must be a non-empty string, got {value!r}")
    return value


def number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(field, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise fail(field, f"is not finite ({value})")
    return float(value)


def integer(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


def matrix(value: Any, field: str, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float64 array of exactly ``shape`` from nested JSON lists."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(field, f"must be a {'x'.join(map(str, shape))} array of numbers") from None
    if array.shape != shape:
        raise fail(field, f"has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise fail(field, "contains NaN or inf")
    return array


def parse_body_info(body: Any) -> tuple[dict, tuple[str, ...]]:
    """Validate ``body`` and return it with the rig's bone names."""
    check_keys(body, "body", ("template", "rig", "phenotype"))
    template = string(body["template"], "body.template")
    if template not in KNOWN_TEMPLATES:
        known = ", ".join(KNOWN_TEMPLATES)
        raise fail("body.template", f"{template!r} is unknown (known: {known})")
    rig = string(body["rig"], "body.rig")
    from perennial.body.rig import bone_names  # imported late: body/ is built alongside

    try:
        bones = tuple(bone_names(rig))
    except (KeyError, ValueError) as err:
        raise fail("body.rig", f"{rig!r} is unknown for template {template} ({err})") from None
    phenotype = body["phenotype"]
    if not isinstance(phenotype, dict):
        raise fail("body.phenotype", "must be a JSON object")
    for name, value in phenotype.items():
        if name not in PHENOTYPE_NAMES:
            raise fail(f"body.phenotype.{name}", "is not a known phenotype parameter")
        if not 0.0 <= number(value, f"body.phenotype.{name}") <= 1.0:
            raise fail(f"body.phenotype.{name}", f"is {value}, must be in [0, 1]")
    phenotype = {k: float(v) for k, v in phenotype.items()}
    return {"template": template, "rig": rig, "phenotype": phenotype}, bones


def cameras_of(doc: dict) -> list[tuple[str, Any]]:
    cameras = doc["cameras"]
    if not isinstance(cameras, dict) or not cameras:
        raise fail("cameras", "must be a non-empty JSON object")
    return list(cameras.items())


def parse_camera(cam: Any, where: str) -> Camera:
    """Validate one camera entry (pinhole, world-to-camera, OpenCV)."""
    check_keys(cam, where, ("width", "height", "K", "R", "t"))
    width = integer(cam["width"], f"{where}.width", MIN_IMAGE_SIZE)
    height = integer(cam["height"], f"{where}.height", MIN_IMAGE_SIZE)
    K = matrix(cam["K"], f"{where}.K", (3, 3))
    R = matrix(cam["R"], f"{where}.R", (3, 3))
    t = matrix(cam["t"], f"{where}.t", (3,))
    if not np.array_equal(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise fail(f"{where}.K", "must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    if K[0, 0] <= 0.0 or K[1, 1] <= 0.0:
        raise fail(f"{where}.K", f"focal lengths must be positive (fx={K[0, 0]}, fy={K[1, 1]})")
    error = float(np.abs(R @ R.T - np.eye(3)).max())
    if error > ORTHONORMAL_TOL:
        raise fail(f"{where}.R", f"is not orthonormal (|R R^T - I| = {error:.3g})")
    det = float(np.linalg.det(R))
    if det < 0.0:
        raise fail(f"{where}.R", f"has det {det:+.3f}, must be +1 (a reflection, not a rotation)")
    return Camera(torch.from_numpy(K), torch.from_numpy(R), torch.from_numpy(t), width, height)


def parse_frames(frames: Any) -> list[dict]:
    if not isinstance(frames, list) or not frames:
        raise fail("frames", "must be a non-empty JSON array")
    out, seen = [], set()
    for i, frame in enumerate(frames):
        check_keys(frame, f"frames[{i}]", ("index", "time"))
        index = integer(frame["index"], f"frames[{i}].index", 0)
        if index in seen:
            raise fail(f"frames[{i}].index", f"{index} appears twice")
        seen.add(index)
        out.append({"index": index, "time": number(frame["time"], f"frames[{i}].time")})
    return out


def relative_path(value: Any, field: str) -> str:
    """A path inside the capture, relative, with ``/`` separators."""
    text = string(value, field)
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or "\\" in text:
        raise fail(field, f"{text!r} must be a relative path inside the capture")
    return text


def parse_views(views: Any, cameras: dict[str, Camera], frame_indices: set[int]) -> list[View]:
    if not isinstance(views, list) or not views:
        raise fail("views", "must be a non-empty JSON array")
    out, seen = [], set()
    for i, entry in enumerate(views):
        where = f"views[{i}]"
        check_keys(entry, where, ("camera", "frame", "split", "image"), ("mask",))
        camera = string(entry["camera"], f"{where}.camera")
        if camera not in cameras:
            raise fail(f"{where}.camera", f"{camera!r} is not in cameras")
        frame = integer(entry["frame"], f"{where}.frame", 0)
        if frame not in frame_indices:
            raise fail(f"{where}.frame", f"{frame} is not in frames")
        if (camera, frame) in seen:
            raise fail(where, f"repeats camera {camera} frame {frame}")
        seen.add((camera, frame))
        split = entry["split"]
        if split not in SPLITS:
            raise fail(f"{where}.split", f"is {split!r}, must be 'train' or 'test'")
        image = relative_path(entry["image"], f"{where}.image")
        mask = entry.get("mask")
        if mask is None and split == "train":
            raise fail(f"{where}.mask", "is missing; a train view needs a mask")
        mask = None if mask is None else relative_path(mask, f"{where}.mask")
        out.append(View(camera, frame, split, image, mask))
    return out


def read_body(path: Path, rig: str, rig_bones: tuple[str, ...], frames: list[dict]) -> BodyParams:
    """Load and validate ``body.npz`` (plain arrays only, no pickles)."""
    if not path.is_file():
        raise CaptureError("body.npz: file is missing")
    if not zipfile.is_zipfile(path):
        raise CaptureError("body.npz: not a .npz file (a zip archive of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CaptureError(f"body.npz: cannot be read without pickles ({err})") from None
    for key in NPZ_REQUIRED:
        if key not in arrays:
            raise CaptureError(f"body.npz: missing required field {key}")
    for key in arrays:
        if key not in NPZ_REQUIRED + NPZ_OPTIONAL:
            raise CaptureError(f"body.npz: {key} is not a known field")

    bones = string_array(arrays["bones"], "bones")
    known = set(rig_bones)
    for j, bone in enumerate(bones):
        if bone not in known:
            raise CaptureError(f"body.npz: bones[{j}] {bone!r} is not a bone of rig {rig}")
    if len(set(bones)) != len(bones):
        raise CaptureError("body.npz: bones contains a name twice")

    rotvec = float_array(arrays["rotvec"], "rotvec")
    if rotvec.ndim != 3 or rotvec.shape[1:] != (len(bones), 3):
        raise CaptureError(
            f"body.npz: rotvec has shape {rotvec.shape}, expected (F, J, 3) with "
            f"J = len(bones) = {len(bones)}"
        )
    num = rotvec.shape[0]
    if num < len(frames):
        missing = frames[num]
        raise CaptureError(
            f"body.npz: rotvec has {num} rows but capture.json has {len(frames)} frames; "
            f"frame {missing['index']} (frames[{num}]) has no body parameters"
        )
    if num > len(frames):
        raise CaptureError(
            f"body.npz: rotvec has {num} rows but capture.json has {len(frames)} frames; "
            f"rows {len(frames)}..{num - 1} belong to no frame"
        )
    translation = float_array(arrays["translation"], "translation")
    if translation.shape != (num, 3):
        raise CaptureError(
            f"body.npz: translation has shape {translation.shape}, expected ({num}, 3)"
        )

    facial = labels = None
    if ("facial_actions" in arrays) != ("facial_action_labels" in arrays):
        raise CaptureError("body.npz: facial_actions and facial_action_labels must come together")
    if "facial_actions" in arrays:
        facial = float_array(arrays["facial_actions"], "facial_actions")
        if facial.shape != (num, NUM_FACIAL_ACTIONS):
            raise CaptureError(
                f"body.npz: facial_actions has shape {facial.shape}, "
                f"expected ({num}, {NUM_FACIAL_ACTIONS})"
            )
        if facial.min(initial=0.0) < 0.0 or facial.max(initial=0.0) > 1.0:
            raise CaptureError("body.npz: facial_actions has values outside [0, 1]")
        labels = string_array(arrays["facial_action_labels"], "facial_action_labels")
        if len(labels) != NUM_FACIAL_ACTIONS or len(set(labels)) != len(labels):
            raise CaptureError(
                f"body.npz: facial_action_labels must be {NUM_FACIAL_ACTIONS} distinct names"
            )
    return BodyParams(
        bones,
        torch.from_numpy(rotvec),
        torch.from_numpy(translation),
        None if facial is None else torch.from_numpy(facial),
        labels,
    )


def string_array(array: np.ndarray, key: str) -> list[str]:
    if array.dtype.kind != "U" or array.ndim != 1:
        raise CaptureError(
            f"body.npz: {key} must be a 1-D unicode string array (got {array.dtype} {array.shape})"
        )
    return [str(s) for s in array]


def float_array(array: np.ndarray, key: str) -> np.ndarray:
    """float32 copy of a floating array; NaN or inf is an error naming the first bad index."""
    if array.dtype.kind != "f":
        raise CaptureError(f"body.npz: {key} must be a float array (got {array.dtype})")
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CaptureError(f"body.npz: {key} contains NaN or inf (first at {list(first)})")
    return np.ascontiguousarray(array, dtype=np.float32)
