"""In-memory capture: cameras, frames, views and per-frame body parameters.

A :class:`Capture` is what :func:`perennial.capture.format.read_capture` returns
after validating a ``perennial-capture`` directory (see ``DESIGN.md``). It holds
the small things (cameras, frame list, body parameters) in memory and loads
images and masks lazily, one view at a time.

Frames of reference: cameras are world-to-camera, OpenCV, metres (see
:mod:`perennial.render.camera`); the world is Anny's (metres, Z up, the body
faces -Y). Body rotations are Anny ``local-ref`` rotation vectors in radians.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from perennial.errors import PerennialError
from perennial.progress import progress as progress_bar
from perennial.render.camera import Camera
from perennial.util import sha256_file

SPLITS = ("train", "test")
"""The allowed values of :attr:`View.split`."""

_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError
)  # fmt: skip
"""What Pillow raises for a missing, truncated or corrupt PNG."""


class CaptureError(PerennialError):
    """A capture on disk is malformed; the message names the file and the field."""


@dataclass
class BodyParams:
    """Per-frame body parameters of one capture (the contents of ``body.npz``).

    Attributes:
        bones: (J,) bone names of the template's rig, in the order of ``rotvec``'s
            second axis.
        rotvec: (F, J, 3) float32 per-bone rotation vectors in radians, Anny
            ``local-ref`` parameterisation; ``rotvec[:, 0]`` is the root's
            orientation in the world frame.
        translation: (F, 3) float32 root bone position in world metres.
        facial_actions: optional (F, 52) float32 ARKit facial-action weights in [0, 1].
        facial_action_labels: optional (52,) names of the facial-action columns.
    """

    bones: list[str]
    rotvec: Tensor
    translation: Tensor
    facial_actions: Tensor | None = None
    facial_action_labels: list[str] | None = None

    def __post_init__(self) -> None:
        self.bones = [str(b) for b in self.bones]
        self.rotvec = torch.as_tensor(self.rotvec, dtype=torch.float32)
        self.translation = torch.as_tensor(self.translation, dtype=torch.float32)
        if self.facial_actions is not None:
            self.facial_actions = torch.as_tensor(self.facial_actions, dtype=torch.float32)
        if self.facial_action_labels is not None:
            self.facial_action_labels = [str(s) for s in self.facial_action_labels]
        if self.rotvec.ndim != 3 or self.rotvec.shape[1:] != (len(self.bones), 3):
            raise ValueError(
                f"rotvec has shape {tuple(self.rotvec.shape)}, expected (F, {len(self.bones)}, 3)"
            )
        frames = self.rotvec.shape[0]
        if tuple(self.translation.shape) != (frames, 3):
            raise ValueError(
                f"translation has shape {tuple(self.translation.shape)}, expected ({frames}, 3)"
            )
        if (self.facial_actions is None) != (self.facial_action_labels is None):
            raise ValueError("facial_actions and facial_action_labels must be given together")
        if self.facial_actions is not None:
            labels = len(self.facial_action_labels)
            if tuple(self.facial_actions.shape) != (frames, labels):
                raise ValueError(
                    f"facial_actions has shape {tuple(self.facial_actions.shape)}, "
                    f"expected ({frames}, {labels})"
                )

    @property
    def num_frames(self) -> int:
        """F, the number of frames (rows)."""
        return int(self.rotvec.shape[0])


@dataclass(frozen=True)
class View:
    """One image of one frame seen by one camera.

    Attributes:
        camera: camera name, a key of :attr:`Capture.cameras`.
        frame: frame index (the ``index`` of an entry of :attr:`Capture.frames`,
            not a row number).
        split: ``"train"`` or ``"test"``.
        image: path of the RGB PNG, relative to the capture root, with ``/``.
        mask: path of the 8-bit mask PNG relative to the capture root, or None
            (allowed for test views only).
    """

    camera: str
    frame: int
    split: str
    image: str
    mask: str | None = None


@dataclass
class ViewPixels:
    """A view with its decoded pixels.

    Attributes:
        view: the view.
        rgb: (H, W, 3) float32 in [0, 1].
        mask: (H, W) float32 in [0, 1] (1 = person), or None (test views only).
    """

    view: View
    rgb: Tensor
    mask: Tensor | None


@dataclass
class Capture:
    """A validated capture; images and masks are read from ``root`` on demand.

    Attributes:
        root: the capture directory.
        appearance: name of the appearance (outfit) this capture shows.
        body_info: ``{"template": str, "rig": str, "phenotype": {name: float}}``.
        cameras: camera name -> :class:`~perennial.render.camera.Camera`
            (world-to-camera, OpenCV, metres).
        frames: ``[{"index": int, "time": float (seconds)}, ...]``; entry ``f``
            owns row ``f`` of the body parameters.
        views: every view, in file order.
        body: per-frame body parameters.
    """

    root: Path
    appearance: str
    body_info: dict
    cameras: dict[str, Camera]
    frames: list[dict]
    views: list[View]
    body: BodyParams
    _rows: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._rows = {int(f["index"]): row for row, f in enumerate(self.frames)}

    def views_of(self, split: str) -> list[View]:
        """The views of one split (``"train"`` or ``"test"``), in file order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [v for v in self.views if v.split == split]

    def frame_row(self, frame_index: int) -> int:
        """Row of ``body.npz`` that holds the parameters of frame ``frame_index``.

        Raises:
            KeyError: no frame has this index.
        """
        try:
            return self._rows[int(frame_index)]
        except KeyError:
            raise KeyError(f"capture has no frame with index {frame_index}") from None

    def body_params(self, frame_index: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Body parameters of one frame.

        Returns:
            rotvec: (J, 3) local-ref rotation vectors, radians.
            translation: (3,) root position, world metres.
            facial_actions: (52,) weights in [0, 1], or None if the capture has none.
        """
        row = self.frame_row(frame_index)
        facial = None if self.body.facial_actions is None else self.body.facial_actions[row]
        return self.body.rotvec[row], self.body.translation[row], facial

    def load_image(self, view: View) -> Tensor:
        """The view's image as a float32 (H, W, 3) tensor in [0, 1].

        Raises:
            CaptureError: the file is missing, corrupt, or not an RGB image of the
                camera's size.
        """
        pixels = read_png(self.root, view.image, "RGB", self.cameras[view.camera], view.camera)
        return torch.from_numpy(pixels).to(torch.float32).div_(255.0)

    def load_mask(self, view: View) -> Tensor | None:
        """The view's mask as a float32 (H, W) tensor in [0, 1] (1 = person), or None."""
        if view.mask is None:
            return None
        pixels = read_png(self.root, view.mask, "L", self.cameras[view.camera], view.camera)
        return torch.from_numpy(pixels).to(torch.float32).div_(255.0)

    def read_split(self, split: str = "train", progress: bool = False) -> tuple[list[ViewPixels], str]:
        """Decode every image and mask of one split once, and hash the capture in the same pass.

        Each file of the capture is read once: the split's PNGs are hashed and
        decoded from the same bytes, the others only hashed. A corrupt, truncated
        or mis-sized PNG fails here, before anything is trained or written.

        Returns:
            (the split's views with their pixels in view order, :meth:`content_hash`).

        Raises:
            CaptureError: naming the capture folder, the file and what is wrong.
        """
        views = self.views_of(split)
        wanted = {p for v in views for p in (v.image, v.mask) if p is not None}
        digest, blobs = self.stream_files(wanted)
        out = []
        for v in progress_bar(views, desc=f"decoding {split} views", unit="view", enabled=progress, leave=False):
            cam = self.cameras[v.camera]
            try:
                rgb = read_png(self.root, v.image, "RGB", cam, v.camera, blobs[v.image])
                mask = None if v.mask is None else read_png(self.root, v.mask, "L", cam, v.camera, blobs[v.mask])
            except CaptureError as e:
                raise CaptureError(f"{str(self.root).rstrip('/')}/{e}") from None
            out.append(ViewPixels(v, torch.from_numpy(rgb).to(torch.float32).div_(255.0),
                                  None if mask is None else torch.from_numpy(mask).to(torch.float32).div_(255.0)))  # fmt: skip
        return out, digest

    def content_hash(self) -> str:
        """SHA-256 (hex) of ``capture.json``, ``body.npz`` and every view's image and mask.

        Files are streamed in a fixed order (capture.json, body.npz, then each
        view's image and mask in view order); each contributes its relative
        path and size before its bytes, so renames and moved bytes change it.
        """
        return self.stream_files()[0]

    def stream_files(self, keep: Collection[str] = ()) -> tuple[str, dict[str, bytes]]:
        """Read every file of the capture once: the content hash, and the bytes of ``keep``.

        Args:
            keep: relative paths whose bytes are returned (e.g. the training PNGs,
                to be decoded without reading them again).

        Returns:
            (:meth:`content_hash`, ``{relative path: bytes}`` of the kept files).
        """
        names = ["capture.json", "body.npz"]
        for v in self.views:
            names.extend(p for p in (v.image, v.mask) if p is not None)
        digest = hashlib.sha256()
        kept: dict[str, bytes] = {}
        seen: set[str] = set()
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            path = self.root / name
            try:
                size = path.stat().st_size
                digest.update(f"{name}\0{size}\0".encode())
                if name in keep:
                    kept[name] = path.read_bytes()
                    digest.update(kept[name])
                else:
                    sha256_file(path, digest)
            except OSError as e:
                raise CaptureError(f"{self.root / name}: cannot read ({e.strerror or e})") from None
        return digest.hexdigest(), kept


def png_header(root: Path, rel: str) -> tuple[tuple[int, int], str]:
    """Size ``(width, height)`` and PIL mode of a PNG, reading its header only.

    Raises:
        CaptureError: the file is missing or not a PNG.
    """
    path = root / rel
    if not path.is_file():
        raise CaptureError(f"{rel}: file is missing")
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise CaptureError(f"{rel}: is a {im.format} file, expected PNG")
            return im.size, im.mode
    except _DECODE_ERRORS as err:
        raise CaptureError(f"{rel}: cannot read PNG header ({err})") from err


def check_png(root: Path, rel: str, mode: str, camera: Camera, camera_name: str) -> None:
    """Check a PNG's size and mode against its camera from the header alone.

    Args:
        root: capture directory.
        rel: path relative to ``root``.
        mode: expected PIL mode, ``"RGB"`` for images or ``"L"`` for masks.
        camera: the view's camera; the image must be ``camera.width x camera.height``.
        camera_name: the camera's name, for the message.

    Raises:
        CaptureError: naming the file and what is wrong.
    """
    (width, height), found = png_header(root, rel)
    _check_header(rel, "PNG", (width, height), found, mode, camera, camera_name)


def _check_header(rel: str, fmt: str | None, size: tuple[int, int], found: str, mode: str,
                  camera: Camera, camera_name: str) -> None:  # fmt: skip
    if fmt != "PNG":
        raise CaptureError(f"{rel}: is a {fmt} file, expected PNG")
    width, height = size
    if (width, height) != (camera.width, camera.height):
        raise CaptureError(
            f"{rel}: size {width}x{height} differs from camera {camera_name} "
            f"({camera.width}x{camera.height})"
        )
    if found != mode:
        expected = "8-bit RGB" if mode == "RGB" else "8-bit grayscale (L)"
        raise CaptureError(f"{rel}: mode {found}, expected {expected}")


def read_png(root: Path, rel: str, mode: str, camera: Camera, camera_name: str,
             data: bytes | None = None) -> np.ndarray:  # fmt: skip
    """Decode a PNG, checking its format, size and mode; uint8 (H, W, 3) for RGB, (H, W) for L.

    Args:
        root, rel, mode, camera, camera_name: as in :func:`check_png`.
        data: the file's bytes when they were read already (see :meth:`Capture.stream_files`).

    Raises:
        CaptureError: the file is missing, truncated or corrupt, or has the wrong
            size or mode.
    """
    if data is None:
        check_png(root, rel, mode, camera, camera_name)
        source = root / rel
    else:
        source = io.BytesIO(data)
    try:
        with Image.open(source) as im:
            if data is not None:
                _check_header(rel, im.format, im.size, im.mode, mode, camera, camera_name)
            im.load()
            return np.array(im, dtype=np.uint8)
    except _DECODE_ERRORS as err:
        raise CaptureError(f"{rel}: corrupt or truncated PNG ({err})") from err
