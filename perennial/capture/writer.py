"""Writing a ``perennial-capture`` (v1) atomically: into a temporary sibling, validated, renamed.

:func:`write_capture` writes every file into a hidden temporary sibling of the
destination, reads it back with :func:`~perennial.capture.format.read_capture`
(so a written capture is always a valid one) and only then renames it into place.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from perennial.capture.capture import BodyParams, Capture
from perennial.capture.format import FORMAT, VERSION, read_capture
from perennial.capture.validate import SAFE_NAME
from perennial.errors import OutputExistsError
from perennial.render.camera import Camera

__all__ = ["ViewData", "write_capture"]


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
        if not SAFE_NAME.match(name):
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
