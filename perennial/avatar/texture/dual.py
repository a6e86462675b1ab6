"""The maps the dual attention reads, and the state a causal clip render carries.

:class:`AttentionMaps` rasterises, on the generator window's grid reduced ``reduction`` times,
the body map, the normal-expanded map and the previous frame's body map
(:mod:`~perennial.avatar.texture.attention`), runs the attention and returns its residual
upsampled to the window. The low-res rasters cost ``1 / reduction^2`` of the full one.

Rendering a clip is causal: frame ``t`` needs only frame ``t - 1``'s posed vertices, which the
caller carries as a :class:`ClipState` (``TextureAvatar.render_image(..., previous=state)``
returns the next one). The state also keeps frame ``t - 1``'s low-res body map with the camera
and window it was made for; when frame ``t`` has the same camera and window it is reused
instead of rasterised again. Without a state (the first frame, or a single image) the previous
frame is the current one: a still frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from perennial.avatar.texture.attention import DualAttention, expanded_vertices
from perennial.avatar.texture.raster import SurfaceRasterizer, crop_camera
from perennial.render.camera import Camera

__all__ = ["AttentionMaps", "ClipState"]


@dataclass
class ClipState:
    """What frame ``t`` of a causal clip render needs from frame ``t - 1``.

    Attributes:
        vertices: (V, 3) the previous frame's posed vertices, world metres.
        body_map: its low-res body map (C, h1, w1) in ``camera`` and ``window``, or None.
        camera: the camera of ``body_map``.
        window: the generator window ``(x0, y0, w, h)`` of ``body_map``, pixels.
    """

    vertices: Tensor
    body_map: Tensor | None = None
    camera: Camera | None = None
    window: tuple[int, int, int, int] | None = None

    def map_for(self, camera: Camera, window: tuple[int, int, int, int]) -> Tensor | None:
        """The carried body map if it was made for this camera and window, else None."""
        if self.body_map is None or self.window != window or self.camera is None:
            return None
        c = self.camera
        same = (c.width, c.height) == (camera.width, camera.height) and all(
            torch.equal(a, b) for a, b in ((c.K, camera.K), (c.R, camera.R), (c.t, camera.t)))  # fmt: skip
        return self.body_map if same else None


class AttentionMaps:
    """Low-res rasters of the body, the expanded body and the previous frame, and the attention on them.

    Args:
        rest_vertices, faces, uvs, uv_faces: the avatar's mesh (as :class:`SurfaceRasterizer`).
        reduction: the maps' grid is the window's divided by this.
        expand: how far the expanded mesh is pushed out along the normals, metres.
        backend: raster path, ``"warp"`` or ``"torch"``.
    """

    def __init__(self, rest_vertices: Tensor, faces: Tensor, uvs: Tensor, uv_faces: Tensor, reduction: int,
                 expand: float, backend: str) -> None:  # fmt: skip
        self.body = SurfaceRasterizer(rest_vertices, faces, uvs, uv_faces)
        self.outer = SurfaceRasterizer(rest_vertices, faces, uvs, uv_faces)  # its own BVH: no refit ping-pong
        self.faces = faces
        self.reduction, self.expand, self.backend = reduction, expand, backend

    def low_camera(self, camera: Camera, window: tuple[int, int, int, int]) -> Camera:
        """The window's camera at ``1 / reduction`` of its resolution (at least 1 pixel a side)."""
        cam = crop_camera(camera, window)
        s = 1.0 / self.reduction
        K = cam.K.clone()
        K[:2, :2] *= s
        K[:2, 2] = (K[:2, 2] + 0.5) * s - 0.5  # pixel centres stay consistent (Camera.scaled)
        w, h = max(1, -(-window[2] // self.reduction)), max(1, -(-window[3] // self.reduction))
        return Camera(K, cam.R, cam.t, w, h)

    def surface_map(self, rasterizer: SurfaceRasterizer, vertices: Tensor, cam: Camera, texture, center: Tensor,
                    half_extent: Tensor, rays: tuple[Tensor, Tensor] | None = None) -> Tensor:  # fmt: skip
        """(C + 1, h1, w1): the texture and a coverage channel on the mesh seen by ``cam`` (``rays``: its rays)."""
        r = rasterizer(vertices, cam, backend=self.backend, whole=True, rays=rays)  # a small window: cast all of it
        tex = texture(r.uv, (r.canonical - center) / half_extent)
        return r.image(torch.cat([tex, tex.new_ones(len(r), 1)], 1))

    def __call__(self, attention: DualAttention, texture, camera: Camera, window: tuple[int, int, int, int],
                 vertices: Tensor, previous: ClipState | None, center: Tensor,
                 half_extent: Tensor) -> tuple[Tensor, ClipState]:  # fmt: skip
        """The attention's residual on the window, (C + 1, h, w), and the state for the next frame."""
        low = self.low_camera(camera, window)
        rays = low.to(vertices.device).rays()  # one set of rays for the three maps
        body = self.surface_map(self.body, vertices, low, texture, center, half_extent, rays)
        expanded = prev = None
        if attention.spatial is not None:
            outer = expanded_vertices(vertices, self.faces, self.expand)
            expanded = self.surface_map(self.outer, outer, low, texture, center, half_extent, rays)
        if attention.temporal is not None and previous is not None:
            prev = previous.map_for(camera, window)
            if prev is None:
                prev = self.surface_map(self.body, previous.vertices, low, texture, center, half_extent, rays)
        res = attention(body[None], None if expanded is None else expanded[None], None if prev is None else prev[None])
        res = F.interpolate(res, size=(window[3], window[2]), mode="bilinear", align_corners=False)[0]
        return res, ClipState(vertices.detach(), body.detach(), camera, window)
