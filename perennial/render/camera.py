"""Pinhole cameras in the OpenCV convention and ray generation.

World frame: Anny's, metres, Z up, the body faces -Y.
Camera frame: OpenCV, x right, y down, z forward. ``x_cam = R @ x_world + t``.
Pixel centres sit at integer coordinates: the ray of pixel (u, v) runs through
``K^-1 [u, v, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Camera:
    """One pinhole camera.

    Attributes:
        K: (3, 3) intrinsics in pixels.
        R: (3, 3) world-to-camera rotation.
        t: (3,) world-to-camera translation in metres.
        width: image width in pixels.
        height: image height in pixels.
    """

    K: Tensor
    R: Tensor
    t: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.K = torch.as_tensor(self.K, dtype=torch.float32)
        self.R = torch.as_tensor(self.R, dtype=torch.float32, device=self.K.device)
        self.t = torch.as_tensor(self.t, dtype=torch.float32, device=self.K.device).reshape(3)
        self.width, self.height = int(self.width), int(self.height)

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def center(self) -> Tensor:
        """(3,) camera centre in world metres: ``-R^T t``."""
        return -self.R.T @ self.t

    def to(self, device: torch.device | str) -> Camera:
        return Camera(self.K.to(device), self.R.to(device), self.t.to(device), self.width, self.height)

    def scaled(self, factor: float) -> Camera:
        """The same camera at ``factor`` times the resolution (pixel centres stay consistent)."""
        K = self.K.clone()
        K[:2, :2] *= factor
        # pixel centre u maps to (u + 0.5) * factor - 0.5
        K[:2, 2] = (K[:2, 2] + 0.5) * factor - 0.5
        return Camera(K, self.R, self.t, round(self.width * factor), round(self.height * factor))

    def world_to_camera(self, points: Tensor) -> Tensor:
        """(..., 3) world points -> (..., 3) camera-frame points."""
        return points @ self.R.T + self.t

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project (..., 3) world points to pixels.

        Returns:
            uv: (..., 2) pixel coordinates (pixel centres at integers).
            depth: (...,) z in the camera frame, metres.
        """
        pc = self.world_to_camera(points)
        z = pc[..., 2]
        uvw = pc @ self.K.T
        return uvw[..., :2] / uvw[..., 2:3], z

    def rays(self, pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """World-space rays.

        Args:
            pixels: optional (R, 2) float pixel coordinates (u, v); all pixels in
                row-major order when omitted.

        Returns:
            origins: (R, 3) world metres (the camera centre).
            dirs: (R, 3) unit directions in world space.
        """
        if pixels is None:
            v, u = torch.meshgrid(
                torch.arange(self.height, device=self.device, dtype=torch.float32),
                torch.arange(self.width, device=self.device, dtype=torch.float32),
                indexing="ij",
            )
            pixels = torch.stack([u.reshape(-1), v.reshape(-1)], -1)
        uv1 = torch.cat([pixels, torch.ones_like(pixels[:, :1])], -1)
        d_cam = uv1 @ torch.linalg.inv(self.K).T
        d_world = d_cam @ self.R  # R^T d for each row
        d_world = d_world / d_world.norm(dim=-1, keepdim=True)
        return self.center.expand_as(d_world), d_world

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }

    @staticmethod
    def look_at(
        eye: Tensor | list[float],
        target: Tensor | list[float],
        width: int,
        height: int,
        fov_deg: float = 40.0,
        up: tuple[float, float, float] = (0.0, 0.0, 1.0),
    ) -> Camera:
        """A camera at ``eye`` looking at ``target`` with world ``up`` (Z by default).

        ``fov_deg`` is the vertical field of view; the principal point is centred.
        """
        eye = torch.as_tensor(eye, dtype=torch.float32)
        target = torch.as_tensor(target, dtype=torch.float32)
        up_v = torch.tensor(up, dtype=torch.float32)
        z = target - eye
        z = z / z.norm()
        x = torch.linalg.cross(z, up_v)
        if x.norm() < 1e-6:
            raise ValueError("look_at: viewing direction is parallel to 'up'")
        x = x / x.norm()
        y = torch.linalg.cross(z, x)  # points down in the image
        R = torch.stack([x, y, z], 0)
        t = -R @ eye
        f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
        K = torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
        return Camera(K, R, t, width, height)
