"""The on-disk capture format ``perennial-capture``, version 1: the reader.

Layout (see ``DESIGN.md``, "Capture on disk")::

    <capture>/
      capture.json
      body.npz
      images/<camera>/<frame:06d>.png   RGB, 8 bit
      masks/<camera>/<frame:06d>.png    8 bit, 0 background, 255 person

:func:`read_capture` validates everything that can be checked without decoding
pixels (PNG sizes and modes come from the headers; the validators live in
:mod:`perennial.capture.validate`) and raises one
:class:`~perennial.capture.capture.CaptureError` whose message starts with the
file and names the field. The writer is :mod:`perennial.capture.writer`.
"""

from __future__ import annotations

import json
from pathlib import Path

from perennial.capture.capture import Capture, CaptureError, check_png
from perennial.capture.validate import (
    TOP_KEYS,
    cameras_of,
    check_keys,
    fail,
    parse_body_info,
    parse_camera,
    parse_frames,
    parse_views,
    read_body,
    string,
)
from perennial.errors import PerennialError
from perennial.naming import check_name

FORMAT = "perennial-capture"
VERSION = 1

__all__ = ["FORMAT", "VERSION", "read_capture"]


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

    body_info, bones_of_rig = parse_body_info(doc["body"])
    cameras = {name: parse_camera(cam, f"cameras.{name}") for name, cam in cameras_of(doc)}
    frames = parse_frames(doc["frames"])
    views = parse_views(doc["views"], cameras, {f["index"] for f in frames})
    body = read_body(root / "body.npz", body_info["rig"], bones_of_rig, frames)
    for view in views:
        check_png(root, view.image, "RGB", cameras[view.camera], view.camera)
        if view.mask is not None:
            check_png(root, view.mask, "L", cameras[view.camera], view.camera)
    return Capture(root, doc["appearance"], body_info, cameras, frames, views, body)


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
        raise fail("format", f"is {doc['format']!r}, expected {FORMAT!r}")
    if "version" not in doc:
        raise CaptureError("capture.json: missing required field version")
    version = doc["version"]
    if isinstance(version, bool) or version != VERSION:
        raise fail("version", f"{version!r} is unknown (this reader knows version {VERSION})")
    check_keys(doc, "", TOP_KEYS)
    string(doc["appearance"], "appearance")
    try:
        check_name(doc["appearance"], what="appearance", where="capture.json")
    except PerennialError as e:
        raise CaptureError(str(e)) from None
    return doc
