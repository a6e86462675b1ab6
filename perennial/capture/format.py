"""The on-disk capture format ``perennial-capture``, version 1: reader, writer, validation.

Layout (see ``DESIGN.md``, "Capture on disk")::

    <capture>/
      capture.json
      body.npz
      images/<camera>/<frame:06d>.png   RGB, 8 bit
      masks/<camera>/<frame:06d>.png    8 bit, 0 background, 255 person

:func:`read_capture` validates everything that can be checked without decoding
pixels (PNG sizes and modes come from the headers) and raises one
:class:`~perennial.capture.capture.CaptureError` whose message starts with the
file and names the field. :func:`write_capture` writes into a temporary sibling
directory, validates it with the reader, and only then renames it into place.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from perennial.capture.capture import SPLITS, BodyParams, Capture, CaptureError, View, check_png
from perennial.errors import OutputExistsError
from perennial.render.camera import Camera

FORMAT = "perennial-capture"
VERSION = 1
KNOWN_TEMPLATES = ("anny",)
"""Body templates this reader knows; ``body.template`` must be one of them."""
PHENOTYPE_NAMES = (
    "gender", "age", "muscle", "weight", "height", "proportions",
    "cupsize", "firmness", "african", "asian", "caucasian",
)  # fmt: skip
"""Anny's phenotype parameters (each in [0, 1]); the first six are the defaults."""
NUM_FACIAL_ACTIONS = 52
ORTHONORMAL_TOL = 1e-4
"""Largest allowed ``max |R R^T - I|`` for a camera rotation."""

_TOP_KEYS = ("format", "version", "appearance", "body", "cameras", "frames", "views")
_NPZ_REQUIRED = ("bones", "rotvec", "translation")
_NPZ_OPTIONAL = ("facial_actions", "facial_action_labels")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- writer


@dataclass
class ViewData:
    """One view to write: its identity and its pixels.

    Attributes:
        camera: camera name (a key of ``cameras``); letters, digits, ``_ . -``.
        frame: frame index (an ``index`` of ``frames``), >= 0.
        split: ``"train"`` or ``"test"``.
        image: (H, W, 3) RGB, uint8, or float in [0, 1] (numpy or torch).
        mask: (H, W) uint8 (0 background, 255 person) or float in [0, 1], or None
            (test views only).
    """

    camera: str
    frame: int
    split: str
    image: Any
    mask: Any = None


def write_capture(
    root: str | Path,
    *,
    appearance: str,
    body_info: Mapping[str, Any],
    cameras: Mapping[str, Camera],
    frames: Sequence[Mapping[str, Any]],
    views_with_arrays: Sequence[ViewData],
    body: BodyParams,
    overwrite: bool = False,
) -> Capture:
    """Write a capture atomically and return it as read back from disk.

    Everything is written to a hidden temporary sibling of ``root``, validated
    with :func:`read_capture`, and then renamed to ``root``; an interrupted or
    invalid write leaves nothing at ``root``.

    Args:
        root: destination directory; must not exist, or be empty, unless ``overwrite``.
        appearance: appearance (outfit) name.
        body_info: ``{"template": "anny", "rig": "anny", "phenotype": {name: value in [0, 1]}}``.
        cameras: camera name -> Camera (world-to-camera, OpenCV, metres, pixels).
        frames: ``[{"index": int >= 0, "time": seconds}, ...]``; entry ``f`` owns row
            ``f`` of ``body``.
        views_with_arrays: the views and their pixels; image files are named
            ``images/<camera>/<frame:06d>.png`` (masks likewise under ``masks/``).
        body: per-frame body parameters with ``body.num_frames == len(frames)``.
        overwrite: replace an existing non-empty ``root``.

    Returns:
        The written capture, read back from ``root``.

    Raises:
        OutputExistsError: (a FileExistsError) ``root`` exists, is not empty, and ``overwrite`` is False
            (or ``root`` is a file).
        CaptureError: the data do not form a valid capture (nothing is written).
        TypeError, ValueError: an image or mask array has the wrong shape or dtype.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise OutputExistsError(f"{root}: exists and is not empty (pass --overwrite / overwrite=True to replace it)")
    for name in cameras:
        if not _SAFE_NAME.match(name):
            raise ValueError(f"camera name {name!r} is not usable as a directory name")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        view_docs = [_write_view_pixels(tmp, vd) for vd in views_with_arrays]
        _write_body(tmp / "body.npz", body)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "appearance": appearance,
            "body": _body_info_doc(body_info),
            "cameras": {name: cam.to_dict() for name, cam in cameras.items()},
            "frames": [{"index": int(f["index"]), "time": float(f["time"])} for f in frames],
            "views": view_docs,
        }
        (tmp / "capture.json").write_text(json.dumps(doc, indent=1) + "\n")
        read_capture(tmp)  # never rename an invalid capture into place
        _move_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_capture(root)


def _body_info_doc(body_info: Mapping[str, Any]) -> dict:
    """``body_info`` as JSON data; missing or unknown keys are left for the reader to report."""
    doc = dict(body_info)
    if isinstance(doc.get("phenotype"), Mapping):
        doc["phenotype"] = {str(k): float(v) for k, v in doc["phenotype"].items()}
    return doc


def _to_uint8(array: Any, shape_desc: str, ndim: int, what: str) -> np.ndarray:
    """uint8 numpy copy of an image-like array; floats in [0, 1] are scaled by 255."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"{what}: shape {array.shape}, expected {shape_desc}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"{what}: float pixels must be finite and in [0, 1]")
        return np.round(array * 255.0).astype(np.uint8)
    raise TypeError(f"{what}: dtype {array.dtype}, expected uint8 or float in [0, 1]")


def _write_view_pixels(tmp: Path, vd: ViewData) -> dict:
    """Save one view's PNGs under ``tmp`` and return its ``views`` entry."""
    name = f"{vd.camera}/{int(vd.frame):06d}.png"
    image = _to_uint8(vd.image, "(H, W, 3)", 3, f"image of view {name}")
    entry = {"camera": vd.camera, "frame": int(vd.frame), "split": vd.split}
    entry["image"] = f"images/{name}"
    (tmp / "images" / vd.camera).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(tmp / entry["image"], compress_level=3)
    if vd.mask is not None:
        mask = _to_uint8(vd.mask, "(H, W)", 2, f"mask of view {name}")
        entry["mask"] = f"masks/{name}"
        (tmp / "masks" / vd.camera).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, "L").save(tmp / entry["mask"], compress_level=3)
    return entry


def _write_body(path: Path, body: BodyParams) -> None:
    """Save ``body.npz`` with plain (unpickled) arrays."""
    arrays = {
        "bones": np.array(body.bones, dtype=np.str_),
        "rotvec": body.rotvec.detach().cpu().numpy().astype(np.float32),
        "translation": body.translation.detach().cpu().numpy().astype(np.float32),
    }
    if body.facial_actions is not None:
        arrays["facial_actions"] = body.facial_actions.detach().cpu().numpy().astype(np.float32)
        arrays["facial_action_labels"] = np.array(body.facial_action_labels, dtype=np.str_)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``, first moving an existing ``root`` aside."""
    if not root.exists():
        tmp.rename(root)
        return
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    root.rename(old)
    try:
        tmp.rename(root)
    except BaseException:
        old.rename(root)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- reader


def read_capture(root: str | Path) -> Capture:
    """Read and validate a ``perennial-capture`` version 1 directory.

    Image and mask sizes and modes are checked from PNG headers only; pixels
    are decoded later by :meth:`Capture.load_image` / :meth:`Capture.load_mask`.

    Args:
        root: the capture directory.

    Returns:
        The capture, with images not yet loaded.

    Raises:
        CaptureError: anything is missing or malformed; the message starts with
            the file (``capture.json``, ``body.npz``, ``images/...``) and names the field.
    """
    root = Path(root)
    if not root.exists():
        raise CaptureError(f"{root}: not a perennial capture (directory does not exist)")
    if not root.is_dir():
        raise CaptureError(f"{root}: not a perennial capture (not a directory)")
    if not (root / "capture.json").is_file():
        raise CaptureError(f"{root}: not a perennial capture (no capture.json)")
    doc = _load_json(root / "capture.json")

    body_info, bones_of_rig = _parse_body_info(doc["body"])
    cameras = {name: _parse_camera(cam, f"cameras.{name}") for name, cam in _cameras_of(doc)}
    frames = _parse_frames(doc["frames"])
    views = _parse_views(doc["views"], cameras, {f["index"] for f in frames})
    body = _read_body(root / "body.npz", body_info["rig"], bones_of_rig, frames)
    for view in views:
        check_png(root, view.image, "RGB", cameras[view.camera], view.camera)
        if view.mask is not None:
            check_png(root, view.mask, "L", cameras[view.camera], view.camera)
    return Capture(root, doc["appearance"], body_info, cameras, frames, views, body)


def _fail(field: str, problem: str) -> CaptureError:
    return CaptureError(f"capture.json: {field} {problem}")


def _load_json(path: Path) -> dict:
    """Parse capture.json and check the header fields and top-level keys."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CaptureError(
            f"capture.json: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except UnicodeDecodeError as err:
        raise CaptureError(f"capture.json: not UTF-8 text ({err})") from err
    if not isinstance(doc, dict):
        raise CaptureError("capture.json: top level must be a JSON object")
    if doc.get("format") != FORMAT:
        if "format" not in doc:
            raise CaptureError("capture.json: missing required field format")
        raise _fail("format", f"is {doc['format']!r}, expected {FORMAT!r}")
    if "version" not in doc:
        raise CaptureError("capture.json: missing required field version")
    version = doc["version"]
    if isinstance(version, bool) or version != VERSION:
        raise _fail("version", f"{version!r} is unknown (this reader knows version {VERSION})")
    _check_keys(doc, "", _TOP_KEYS)
    _string(doc["appearance"], "appearance")
    return doc


def _check_keys(
    obj: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """``obj`` must be an object with all ``required`` keys and no others."""
    if not isinstance(obj, dict):
        raise _fail(where, f"must be a JSON object, got {type(obj).__name__}")
    prefix = f"{where}." if where else ""
    for key in required:
        if key not in obj:
            raise CaptureError(f"capture.json: missing required field {prefix}{key}")
    for key in obj:
        if key not in required and key not in optional:
            raise _fail(f"{prefix}{key}", "is not a known field")


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(field, f"must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(field, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _fail(field, f"is not finite ({value})")
    return float(value)


def _integer(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _matrix(value: Any, field: str, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float64 array of exactly ``shape`` from nested JSON lists."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(field, f"must be a {'x'.join(map(str, shape))} array of numbers") from None
    if array.shape != shape:
        raise _fail(field, f"has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise _fail(field, "contains NaN or inf")
    return array


def _parse_body_info(body: Any) -> tuple[dict, tuple[str, ...]]:
    """Validate ``body`` and return it with the rig's bone names."""
    _check_keys(body, "body", ("template", "rig", "phenotype"))
    template = _string(body["template"], "body.template")
    if template not in KNOWN_TEMPLATES:
        known = ", ".join(KNOWN_TEMPLATES)
        raise _fail("body.template", f"{template!r} is unknown (known: {known})")
    rig = _string(body["rig"], "body.rig")
    from perennial.body.rig import bone_names  # imported late: body/ is built alongside

    try:
        bones = tuple(bone_names(rig))
    except (KeyError, ValueError) as err:
        raise _fail("body.rig", f"{rig!r} is unknown for template {template} ({err})") from None
    phenotype = body["phenotype"]
    if not isinstance(phenotype, dict):
        raise _fail("body.phenotype", "must be a JSON object")
    for name, value in phenotype.items():
        if name not in PHENOTYPE_NAMES:
            raise _fail(f"body.phenotype.{name}", "is not a known phenotype parameter")
        if not 0.0 <= _number(value, f"body.phenotype.{name}") <= 1.0:
            raise _fail(f"body.phenotype.{name}", f"is {value}, must be in [0, 1]")
    phenotype = {k: float(v) for k, v in phenotype.items()}
    return {"template": template, "rig": rig, "phenotype": phenotype}, bones


def _cameras_of(doc: dict) -> list[tuple[str, Any]]:
    cameras = doc["cameras"]
    if not isinstance(cameras, dict) or not cameras:
        raise _fail("cameras", "must be a non-empty JSON object")
    return list(cameras.items())


def _parse_camera(cam: Any, where: str) -> Camera:
    """Validate one camera entry (pinhole, world-to-camera, OpenCV)."""
    _check_keys(cam, where, ("width", "height", "K", "R", "t"))
    width = _integer(cam["width"], f"{where}.width", 1)
    height = _integer(cam["height"], f"{where}.height", 1)
    K = _matrix(cam["K"], f"{where}.K", (3, 3))
    R = _matrix(cam["R"], f"{where}.R", (3, 3))
    t = _matrix(cam["t"], f"{where}.t", (3,))
    if not np.array_equal(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise _fail(f"{where}.K", "must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    if K[0, 0] <= 0.0 or K[1, 1] <= 0.0:
        raise _fail(f"{where}.K", f"focal lengths must be positive (fx={K[0, 0]}, fy={K[1, 1]})")
    error = float(np.abs(R @ R.T - np.eye(3)).max())
    if error > ORTHONORMAL_TOL:
        raise _fail(f"{where}.R", f"is not orthonormal (|R R^T - I| = {error:.3g})")
    det = float(np.linalg.det(R))
    if det < 0.0:
        raise _fail(f"{where}.R", f"has det {det:+.3f}, must be +1 (a reflection, not a rotation)")
    return Camera(torch.from_numpy(K), torch.from_numpy(R), torch.from_numpy(t), width, height)


def _parse_frames(frames: Any) -> list[dict]:
    if not isinstance(frames, list) or not frames:
        raise _fail("frames", "must be a non-empty JSON array")
    out, seen = [], set()
    for i, frame in enumerate(frames):
        _check_keys(frame, f"frames[{i}]", ("index", "time"))
        index = _integer(frame["index"], f"frames[{i}].index", 0)
        if index in seen:
            raise _fail(f"frames[{i}].index", f"{index} appears twice")
        seen.add(index)
        out.append({"index": index, "time": _number(frame["time"], f"frames[{i}].time")})
    return out


def _relative_path(value: Any, field: str) -> str:
    """A path inside the capture, relative, with ``/`` separators."""
    text = _string(value, field)
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or "\\" in text:
        raise _fail(field, f"{text!r} must be a relative path inside the capture")
    return text


def _parse_views(views: Any, cameras: dict[str, Camera], frame_indices: set[int]) -> list[View]:
    if not isinstance(views, list) or not views:
        raise _fail("views", "must be a non-empty JSON array")
    out, seen = [], set()
    for i, entry in enumerate(views):
        where = f"views[{i}]"
        _check_keys(entry, where, ("camera", "frame", "split", "image"), ("mask",))
        camera = _string(entry["camera"], f"{where}.camera")
        if camera not in cameras:
            raise _fail(f"{where}.camera", f"{camera!r} is not in cameras")
        frame = _integer(entry["frame"], f"{where}.frame", 0)
        if frame not in frame_indices:
            raise _fail(f"{where}.frame", f"{frame} is not in frames")
        if (camera, frame) in seen:
            raise _fail(where, f"repeats camera {camera} frame {frame}")
        seen.add((camera, frame))
        split = entry["split"]
        if split not in SPLITS:
            raise _fail(f"{where}.split", f"is {split!r}, must be 'train' or 'test'")
        image = _relative_path(entry["image"], f"{where}.image")
        mask = entry.get("mask")
        if mask is None and split == "train":
            raise _fail(f"{where}.mask", "is missing; a train view needs a mask")
        mask = None if mask is None else _relative_path(mask, f"{where}.mask")
        out.append(View(camera, frame, split, image, mask))
    return out


def _read_body(path: Path, rig: str, rig_bones: tuple[str, ...], frames: list[dict]) -> BodyParams:
    """Load and validate ``body.npz`` (plain arrays only, no pickles)."""
    if not path.is_file():
        raise CaptureError("body.npz: file is missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CaptureError(f"body.npz: cannot be read without pickles ({err})") from None
    for key in _NPZ_REQUIRED:
        if key not in arrays:
            raise CaptureError(f"body.npz: missing required field {key}")
    for key in arrays:
        if key not in _NPZ_REQUIRED + _NPZ_OPTIONAL:
            raise CaptureError(f"body.npz: {key} is not a known field")

    bones = _string_array(arrays["bones"], "bones")
    known = set(rig_bones)
    for j, bone in enumerate(bones):
        if bone not in known:
            raise CaptureError(f"body.npz: bones[{j}] {bone!r} is not a bone of rig {rig}")
    if len(set(bones)) != len(bones):
        raise CaptureError("body.npz: bones contains a name twice")

    rotvec = _float_array(arrays["rotvec"], "rotvec")
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
    translation = _float_array(arrays["translation"], "translation")
    if translation.shape != (num, 3):
        raise CaptureError(
            f"body.npz: translation has shape {translation.shape}, expected ({num}, 3)"
        )

    facial = labels = None
    if ("facial_actions" in arrays) != ("facial_action_labels" in arrays):
        raise CaptureError("body.npz: facial_actions and facial_action_labels must come together")
    if "facial_actions" in arrays:
        facial = _float_array(arrays["facial_actions"], "facial_actions")
        if facial.shape != (num, NUM_FACIAL_ACTIONS):
            raise CaptureError(
                f"body.npz: facial_actions has shape {facial.shape}, "
                f"expected ({num}, {NUM_FACIAL_ACTIONS})"
            )
        if facial.min(initial=0.0) < 0.0 or facial.max(initial=0.0) > 1.0:
            raise CaptureError("body.npz: facial_actions has values outside [0, 1]")
        labels = _string_array(arrays["facial_action_labels"], "facial_action_labels")
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


def _string_array(array: np.ndarray, key: str) -> list[str]:
    if array.dtype.kind != "U" or array.ndim != 1:
        raise CaptureError(
            f"body.npz: {key} must be a 1-D unicode string array (got {array.dtype} {array.shape})"
        )
    return [str(s) for s in array]


def _float_array(array: np.ndarray, key: str) -> np.ndarray:
    """float32 copy of a floating array; NaN or inf is an error naming the first bad index."""
    if array.dtype.kind != "f":
        raise CaptureError(f"body.npz: {key} must be a float array (got {array.dtype})")
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CaptureError(f"body.npz: {key} contains NaN or inf (first at {list(first)})")
    return np.ascontiguousarray(array, dtype=np.float32)


__all__ = [
    "FORMAT",
    "KNOWN_TEMPLATES",
    "PHENOTYPE_NAMES",
    "VERSION",
    "ViewData",
    "read_capture",
    "write_capture",
]
