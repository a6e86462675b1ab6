"""A browser's camera as a perennial :class:`~perennial.render.camera.Camera`.

The browser (viser) reports a camera as its centre ``position`` (world metres), an
orientation quaternion ``wxyz`` that rotates camera axes into world axes (OpenCV
axes: x right, y down, z forward, so it is ``R_world_camera``), a vertical field of
view in radians and the canvas aspect (width / height). perennial's cameras map the
other way, world to camera: ``R = R_world_camera^T``, ``t = -R @ position``. The
world is the same in both: Anny's, Z up, metres (the scene's up direction is +Z).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from perennial.render.camera import Camera

__all__ = ["camera_from_view", "quat_to_matrix", "view_size"]


def quat_to_matrix(wxyz) -> np.ndarray:
    """(3, 3) rotation matrix of a unit quaternion (w, x, y, z); the quaternion is normalised first."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def view_size(height: int, aspect: float) -> tuple[int, int]:
    """(width, height) in pixels of a render ``height`` pixels high with the canvas' aspect (width / height).

    The width is clamped to [8, 4 * height] so a degenerate canvas still renders.
    """
    aspect = aspect if math.isfinite(aspect) and aspect > 0 else 1.0
    width = min(max(8, round(height * aspect)), 4 * height)
    return int(width), int(height)


def camera_from_view(wxyz, position, fov: float, aspect: float, height: int) -> Camera:
    """The perennial camera that sees what the browser's camera sees.

    Args:
        wxyz: (4,) quaternion, camera-to-world rotation (OpenCV camera axes).
        position: (3,) camera centre, world metres.
        fov: vertical field of view, radians, in (0, pi).
        aspect: canvas width / height.
        height: render height, pixels; the width follows ``aspect`` (:func:`view_size`).

    Returns:
        A pinhole camera, world-to-camera, OpenCV convention, principal point centred.
    """
    width, height = view_size(height, aspect)
    R_wc = quat_to_matrix(wxyz)
    R = R_wc.T
    t = -R @ np.asarray(position, dtype=np.float64)
    fov = min(max(float(fov), 1e-3), math.pi - 1e-3)
    f = 0.5 * height / math.tan(fov / 2)
    K = [[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]]
    return Camera(torch.tensor(K), torch.from_numpy(R).float(), torch.from_numpy(t).float(), width, height)
