"""Motion clips for the ``anny`` rig: in memory, on disk (.npz), resampled.

A :class:`MotionClip` holds per-frame bone rotations in Anny's ``local-ref``
parameterisation (rotation relative to the parent, in world-aligned axes;
``rotvec[:, 0]`` is the root's world orientation) and the root bone's world
position in metres (world frame: Z up, the body faces -Y, its left is +X). It is
exactly what :class:`perennial.body.anny.AnnyTemplate` takes.

On disk (``perennial-motion``, version 1) a clip is an ``.npz`` written without
pickles and read with ``allow_pickle=False``:

- ``format`` () str ``"perennial-motion"``, ``version`` () int
- ``bones`` (J,) str, the rig's bone names in model order
- ``rotvec`` (F, J, 3) float32, radians, ``local-ref``
- ``translation`` (F, 3) float32, metres
- ``fps`` () float64, frames per second
- ``source`` () str, where the clip came from (free text, e.g. a file path)

Reading a clip from a ``.bvh`` or ``.npz`` file, whichever it is, is
:func:`perennial.motion.load.load_motion`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perennial.body.rig import ANNY_BONES
from perennial.errors import ConfigError, PerennialError

__all__ = ["MOTION_FORMAT", "MOTION_VERSION", "MotionClip", "MotionFormatError"]

MOTION_FORMAT = "perennial-motion"
MOTION_VERSION = 1


class MotionFormatError(PerennialError):
    """A motion file that cannot be read; the message names the file and the field."""


@dataclass
class MotionClip:
    """A retargeted motion for the ``anny`` rig.

    Attributes:
        rotvec: (F, J, 3) float32 rotation vectors (radians), Anny ``local-ref``.
        translation: (F, 3) float32 root bone world position, metres.
        fps: frames per second.
        source: provenance (file path or description).
        bones: (J,) bone names in model order; ``ANNY_BONES`` by default.
    """

    rotvec: Tensor
    translation: Tensor
    fps: float
    source: str = ""
    bones: tuple[str, ...] = field(default=ANNY_BONES)

    def __post_init__(self) -> None:
        self.rotvec = torch.as_tensor(self.rotvec, dtype=torch.float32)
        self.translation = torch.as_tensor(self.translation, dtype=torch.float32)
        self.bones = tuple(str(b) for b in self.bones)
        self.fps = float(self.fps)
        F = self.rotvec.shape[0] if self.rotvec.ndim == 3 else -1
        if self.rotvec.ndim != 3 or self.rotvec.shape[1:] != (len(self.bones), 3):
            raise ValueError(
                f"rotvec must be (F, {len(self.bones)}, 3), got {tuple(self.rotvec.shape)}"
            )
        if self.translation.shape != (F, 3):
            raise ValueError(f"translation must be ({F}, 3), got {tuple(self.translation.shape)}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be positive, got {self.fps}")
        if F < 1:
            raise MotionFormatError(f"{self.source or 'motion clip'}: has no frames")
        bad = ~(torch.isfinite(self.rotvec).all(-1).all(-1) & torch.isfinite(self.translation).all(-1))
        if bad.any():
            raise MotionFormatError(f"{self.source or 'motion clip'}: frame {int(bad.nonzero()[0, 0])} "
                                    "holds NaN or infinite values")  # fmt: skip

    @property
    def num_frames(self) -> int:
        return int(self.rotvec.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds, ``num_frames / fps`` (each frame lasts ``1 / fps``)."""
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_frames

    def slice(self, start: int = 0, stop: int | None = None) -> MotionClip:
        """Frames ``[start, stop)`` as a new clip (same fps)."""
        return MotionClip(
            self.rotvec[start:stop].clone(),
            self.translation[start:stop].clone(),
            self.fps,
            self.source,
            self.bones,
        )

    # -- on disk -----------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the clip as ``perennial-motion`` .npz (atomically: temp file + rename).

        Returns:
            the path written (``.npz`` is appended when missing).
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                format=np.array(MOTION_FORMAT),
                version=np.array(MOTION_VERSION, dtype=np.int64),
                bones=np.array(self.bones),
                rotvec=self.rotvec.detach().cpu().numpy().astype(np.float32),
                translation=self.translation.detach().cpu().numpy().astype(np.float32),
                fps=np.array(self.fps, dtype=np.float64),
                source=np.array(self.source),
            )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> MotionClip:
        """Read a ``perennial-motion`` .npz.

        Raises:
            MotionFormatError: missing file or field, wrong format/version, wrong
                shapes, NaN, or bones that differ from Anny's rig (names the file
                and the field).
        """
        path = Path(path)

        def fail(msg: str) -> MotionFormatError:
            return MotionFormatError(f"{path}: {msg}")

        if not path.is_file():
            raise fail("no such file")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise fail(f"not a readable .npz file ({e})") from None
        for key in ("format", "version", "bones", "rotvec", "translation", "fps"):
            if key not in data:
                raise fail(f"missing field {key!r}")
        if str(data["format"]) != MOTION_FORMAT:
            raise fail(f"field 'format' is {str(data['format'])!r}, expected {MOTION_FORMAT!r}")
        if int(data["version"]) != MOTION_VERSION:
            raise fail(
                f"field 'version' is {int(data['version'])}, this reader supports {MOTION_VERSION}"
            )
        bones = tuple(str(b) for b in data["bones"])
        if bones != ANNY_BONES:
            unknown = [b for b in bones if b not in ANNY_BONES]
            detail = f"unknown bones {unknown[:5]}" if unknown else "different order or count"
            raise fail(f"field 'bones' does not match the anny rig ({detail})")
        rv, tr = data["rotvec"], data["translation"]
        if rv.ndim != 3 or rv.shape[1:] != (len(bones), 3):
            raise fail(f"field 'rotvec' must be (F, {len(bones)}, 3), got {rv.shape}")
        if tr.shape != (rv.shape[0], 3):
            raise fail(f"field 'translation' must be ({rv.shape[0]}, 3), got {tr.shape}")
        for key, arr in (("rotvec", rv), ("translation", tr)):
            if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise fail(f"field {key!r} must hold finite floats")
        fps = float(data["fps"])
        if not (math.isfinite(fps) and fps > 0):
            raise fail(f"field 'fps' must be positive, got {fps}")
        source = str(data["source"]) if "source" in data else str(path)
        return cls(
            torch.from_numpy(rv.astype(np.float32)),
            torch.from_numpy(tr.astype(np.float32)),
            fps,
            source,
            bones,
        )

    # -- time --------------------------------------------------------------------

    def resample(self, fps: float) -> MotionClip:
        """The clip at another frame rate, same duration.

        Frame ``k`` of the result shows time ``k / fps``; rotations are spherically
        interpolated per bone (quaternion slerp on the ``local-ref`` rotations),
        translations linearly. The result has ``max(1, round(F * fps / self.fps))``
        frames, so its duration is within half a frame of the original.

        Args:
            fps: target frames per second.
        """
        fps = float(fps)
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be positive, got {fps}")
        if abs(fps - self.fps) < 1e-9 * self.fps:
            return MotionClip(
                self.rotvec.clone(), self.translation.clone(), self.fps, self.source, self.bones
            )
        F = self.num_frames
        n = max(1, round(F * fps / self.fps))
        u = torch.arange(n, dtype=torch.float64) * (self.fps / fps)  # source frame coordinate
        u = u.clamp(0, F - 1)
        i0 = u.floor().long().clamp(max=F - 1)
        i1 = (i0 + 1).clamp(max=F - 1)
        w = (u - i0.double()).float()
        q = rotvec_to_quat(self.rotvec)  # (F, J, 4), xyzw
        rot = quat_to_rotvec(slerp(q[i0], q[i1], w[:, None]))
        tr = torch.lerp(self.translation[i0], self.translation[i1], w[:, None])
        return MotionClip(rot, tr, fps, self.source, self.bones)


# ---------------------------------------------------------------------------
# quaternion helpers (xyzw, like roma)


def rotvec_to_quat(rotvec: Tensor) -> Tensor:
    """(..., 3) rotation vectors (radians) -> (..., 4) unit quaternions (x, y, z, w)."""
    angle = rotvec.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(a/2)/a -> 1/2 - a^2/48 for small a
    k = torch.where(angle > 1e-6, torch.sin(half) / angle.clamp_min(1e-12), 0.5 - angle**2 / 48)
    return torch.cat([rotvec * k, torch.cos(half)], -1)


def quat_to_rotvec(q: Tensor) -> Tensor:
    """(..., 4) unit quaternions (x, y, z, w) -> (..., 3) rotation vectors, angle in [0, pi]."""
    q = torch.where(q[..., 3:] < 0, -q, q)
    s = q[..., :3].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., 3:])
    k = torch.where(s > 1e-6, angle / s.clamp_min(1e-12), 2.0 + s**2 / 3)
    return q[..., :3] * k


def rotmat_to_quat(R: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w), w >= 0.

    Shepperd's method: each quaternion is computed from the largest of its four
    squared components, which keeps it accurate for every rotation angle.
    """
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # 4 q_k^2 for k = x, y, z, w
    sq = torch.stack(
        [1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], -1
    )
    k = sq.argmax(-1, keepdim=True)
    big = 0.5 * sq.gather(-1, k).clamp_min(1e-12).sqrt()  # the largest |q_k|
    d21, d02, d10 = (
        R[..., 2, 1] - R[..., 1, 2],
        R[..., 0, 2] - R[..., 2, 0],
        R[..., 1, 0] - R[..., 0, 1],
    )
    s01, s02, s12 = (
        R[..., 0, 1] + R[..., 1, 0],
        R[..., 0, 2] + R[..., 2, 0],
        R[..., 1, 2] + R[..., 2, 1],
    )
    # candidate quaternions times 4 q_k, one per choice of k (rows: x, y, z, w)
    cand = torch.stack(
        [
            torch.stack([sq[..., 0], s01, s02, d21], -1),
            torch.stack([s01, sq[..., 1], s12, d02], -1),
            torch.stack([s02, s12, sq[..., 2], d10], -1),
            torch.stack([d21, d02, d10, sq[..., 3]], -1),
        ],
        -2,
    )
    q = cand.gather(-2, k[..., None].expand(*k.shape[:-1], 1, 4))[..., 0, :] / (4 * big)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def slerp(q0: Tensor, q1: Tensor, w: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions along the shorter arc.

    Args:
        q0, q1: (..., 4) unit quaternions.
        w: weights broadcastable to (...,), 0 gives ``q0``, 1 gives ``q1``.
    """
    w = torch.as_tensor(w, dtype=q0.dtype).unsqueeze(-1)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    near = sin < 1e-6
    a = torch.where(near, 1 - w, torch.sin((1 - w) * theta) / sin.clamp_min(1e-12))
    b = torch.where(near, w, torch.sin(w * theta) / sin.clamp_min(1e-12))
    q = a * q0 + b * q1
    return q / q.norm(dim=-1, keepdim=True)
