"""First hits of rays on a triangle mesh (:class:`Hit`), and the input checks both casters share.

Frames: vertices, ray origins and hit points are in world metres; ray directions
are unit vectors in world space. ``depth`` is the distance along the unit ray (not
the camera-frame z). The casters are :mod:`perennial.render.raycast` (warp) and
:mod:`perennial.render.rasterize` (its plain-torch twin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Hit", "check_mesh", "check_rays", "no_hits", "shape_str"]


@dataclass
class Hit:
    """First hits of R rays on a triangle mesh.

    Attributes:
        face: (R,) int64 index of the hit triangle, -1 for a miss.
        bary: (R, 3) float32 barycentric weights of the face's three vertices, so
            the hit point is ``sum_i bary[:, i] * vertices[faces[face, i]]``; zeros for a miss.
        depth: (R,) float32 distance in metres along the unit ray, ``inf`` for a miss.
    """

    face: Tensor
    bary: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:
        """(R,) bool, True where the ray hit the mesh."""
        return self.face >= 0

    def __len__(self) -> int:
        return self.face.shape[0]

    def points(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """Hit points rebuilt from barycentrics.

        Args:
            vertices: (V, 3) world metres, the mesh that was cast against.
            faces: (F, 3) vertex indices.

        Returns:
            (R, 3) world metres; NaN for misses.
        """
        tri = faces[self.face.clamp_min(0)].long()  # (R, 3)
        # p[r, k] = sum_i bary[r, i] * vertices[tri[r, i], k]
        p = torch.einsum("ri,rik->rk", self.bary.to(vertices.dtype), vertices[tri])
        return p.masked_fill(~self.mask[:, None], float("nan"))


def check_mesh(vertices: Tensor, faces: Tensor) -> None:
    """Raise ``ValueError`` unless the mesh is well formed.

    Well formed: ``vertices`` a (V, 3) floating-point tensor, ``faces`` a non-empty
    (F, 3) integer tensor of indices in ``[0, V)``.
    """
    if not isinstance(vertices, Tensor) or vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be a (V, 3) tensor, got {shape_str(vertices)}")
    if not vertices.is_floating_point():
        raise ValueError(f"vertices must be floating point, got {vertices.dtype}")
    if not isinstance(faces, Tensor) or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be an (F, 3) tensor, got {shape_str(faces)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces must hold integer vertex indices, got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError("faces is empty: the mesh needs at least one triangle")
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise ValueError(
            f"faces index vertices outside [0, {vertices.shape[0]}): "
            f"min {int(faces.min())}, max {int(faces.max())}"
        )


def check_rays(origins: Tensor, dirs: Tensor) -> None:
    """Raise ``ValueError`` unless ``origins`` and ``dirs`` are both (R, 3)."""
    for name, x in (("origins", origins), ("dirs", dirs)):
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"{name} must be an (R, 3) tensor, got {shape_str(x)}")
    if origins.shape != dirs.shape:
        raise ValueError(
            f"origins and dirs must have the same shape, got {tuple(origins.shape)} "
            f"and {tuple(dirs.shape)}"
        )


def shape_str(x: object) -> str:
    """``"shape (R, 3)"`` for a tensor, else its type's name (for error messages)."""
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def no_hits(n: int, device: torch.device) -> Hit:
    """A :class:`Hit` of ``n`` rays that all miss."""
    return Hit(
        face=torch.full((n,), -1, dtype=torch.int64, device=device),
        bary=torch.zeros(n, 3, dtype=torch.float32, device=device),
        depth=torch.full((n,), math.inf, dtype=torch.float32, device=device),
    )
