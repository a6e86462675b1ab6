"""Surface raster: which point of the body surface every pixel sees.

For a posed mesh and a camera (or a pixel window of it, ``crop``), every covered
pixel gets the triangle it sees first, its barycentrics and depth, and from them
the surface coordinates the neural texture reads: Anny's texture coordinates
(per corner, through ``uv_faces``, so seams stay seams) and the rest-space
(canonical) position.

Two paths give the same pixels (``tests/test_texture_raster.py``):

- ``"warp"``: a :class:`~perennial.render.raycast.WarpMeshCaster` (BVH refit per
  frame) casts only the pixels inside the projected body box (:func:`body_box`);
- ``"torch"``: the plain-torch z-buffer :func:`~perennial.render.rasterize.rasterize_torch`
  over the window, the twin.

A crop ``(x0, y0, w, h)`` is the same camera with its principal point moved by
``(-x0, -y0)`` and size ``w x h``: both paths see exactly the window's pixels.

Measured on the shared 2-core CPU (AMD EPYC, AVX512-BF16; quiet), the walking body of
``perennial.evaluate.bench_texture`` seen from 3 m, interleaved medians of 20 frames,
surface coordinates included (``bench_texture_raster``): 256^2 (7.4 k covered pixels):
warp 10.9 ms, torch 13.8 ms; 512^2 (29.5 k): warp 21.0 ms, torch 20.1 ms. Over four
such runs warp was 1.2-1.4x faster at 256^2 and 0.9-1.35x at 512^2 (equal within the
noise), so the fast path is warp (``TextureConfig.raster``). Warp runs a CPU kernel on
one thread; the cast is split in chunks over torch's threads (ctypes releases the GIL):
5.2 -> 4.0 ms at 256^2, 22.9 -> 12.9 ms at 512^2, the same hits bit for bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from perennial.render.camera import Camera
from perennial.render.rasterize import rasterize_torch
from perennial.render.raycast import Hit, WarpMeshCaster

__all__ = ["BACKENDS", "SurfaceRaster", "SurfaceRasterizer", "body_box", "crop_camera"]

BACKENDS = ("warp", "torch")


def crop_camera(camera: Camera, crop: tuple[int, int, int, int] | None) -> Camera:
    """The camera of a pixel window ``(x0, y0, w, h)`` of ``camera`` (itself for ``None``).

    Pixel ``(u, v)`` of the window is pixel ``(x0 + u, y0 + v)`` of the camera.

    Raises:
        ValueError: a window that is empty or not inside the image.
    """
    if crop is None:
        return camera
    x0, y0, w, h = (int(c) for c in crop)
    if w < 1 or h < 1 or x0 < 0 or y0 < 0 or x0 + w > camera.width or y0 + h > camera.height:
        raise ValueError(
            f"crop {tuple(crop)} must be (x0, y0, w, h) with w, h >= 1 inside the "
            f"{camera.width}x{camera.height} image"
        )
    K = camera.K.clone()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return Camera(K, camera.R, camera.t, w, h)


def body_box(camera: Camera, vertices: Tensor) -> tuple[int, int, int, int] | None:
    """Pixel box ``(u0, v0, u1, v1)`` (inclusive) holding every pixel centre the mesh can cover.

    The projected vertices' bounding box, widened to whole pixels and clipped to the
    image (triangles lie inside their vertices' convex hull); the whole image when a
    vertex is behind the camera; ``None`` when the box misses the image.
    """
    uv, z = camera.project(vertices)
    if bool((z <= 1e-6).any()):
        return 0, 0, camera.width - 1, camera.height - 1
    lo = uv.min(0).values.floor()
    hi = uv.max(0).values.ceil()
    u0, v0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    u1, v1 = min(int(hi[0]), camera.width - 1), min(int(hi[1]), camera.height - 1)
    if u0 > u1 or v0 > v1:
        return None
    return u0, v0, u1, v1


@dataclass
class SurfaceRaster:
    """The visible surface of one frame in an ``height x width`` window, N covered pixels.

    Per covered pixel (row-major order of the window):

    Attributes:
        height: window height, pixels.
        width: window width, pixels.
        pixel: (N,) int64 row-major index ``v * width + u`` in the window.
        face: (N,) int64 triangle id.
        bary: (N, 3) float32 barycentrics of the triangle's vertices (perspective-correct).
        depth: (N,) float32 distance along the unit ray, metres.
        uv: (N, 2) float32 texture coordinates in [0, 1] (Anny's, per corner).
        canonical: (N, 3) float32 rest-space position, metres (neutral face).
    """

    height: int
    width: int
    pixel: Tensor
    face: Tensor
    bary: Tensor
    depth: Tensor
    uv: Tensor
    canonical: Tensor

    def __len__(self) -> int:
        return int(self.pixel.shape[0])

    def image(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """(N, C) per-pixel values -> (C, height, width), ``fill`` where nothing is covered.

        Differentiable w.r.t. ``values``.
        """
        C = values.shape[1]
        out = values.new_full((self.height * self.width, C), fill)
        out = out.index_copy(0, self.pixel, values)
        return out.t().reshape(C, self.height, self.width)

    @property
    def mask(self) -> Tensor:
        """(height, width) bool coverage."""
        m = torch.zeros(self.height * self.width, dtype=torch.bool, device=self.pixel.device)
        m[self.pixel] = True
        return m.view(self.height, self.width)

    @property
    def face_map(self) -> Tensor:
        """(height, width) int64 triangle ids, -1 where nothing is covered."""
        f = torch.full((self.height * self.width,), -1, dtype=torch.int64, device=self.pixel.device)
        f[self.pixel] = self.face
        return f.view(self.height, self.width)

    @property
    def uv_map(self) -> Tensor:
        """(height, width, 2) texture coordinates, 0 where nothing is covered."""
        return self.image(self.uv).permute(1, 2, 0)

    @property
    def canonical_map(self) -> Tensor:
        """(height, width, 3) rest-space positions (metres), 0 where nothing is covered."""
        return self.image(self.canonical).permute(1, 2, 0)

    @property
    def bary_map(self) -> Tensor:
        """(height, width, 3) barycentrics, 0 where nothing is covered."""
        return self.image(self.bary).permute(1, 2, 0)

    def box(self) -> tuple[int, int, int, int] | None:
        """``(x0, y0, x1, y1)`` (inclusive) of the covered pixels; None when nothing is covered."""
        if len(self) == 0:
            return None
        u = self.pixel % self.width
        v = torch.div(self.pixel, self.width, rounding_mode="floor")
        return int(u.min()), int(v.min()), int(u.max()), int(v.max())

    def window(self, x0: int, y0: int, w: int, h: int) -> SurfaceRaster:
        """The same surface in the sub-window ``(x0, y0, w, h)``, which must hold every covered pixel."""
        u = self.pixel % self.width - x0
        v = torch.div(self.pixel, self.width, rounding_mode="floor") - y0
        if len(self) and (int(u.min()) < 0 or int(v.min()) < 0 or int(u.max()) >= w or int(v.max()) >= h):
            raise ValueError(f"window {(x0, y0, w, h)} does not hold every covered pixel")
        return SurfaceRaster(height=h, width=w, pixel=v * w + u, face=self.face, bary=self.bary,
                             depth=self.depth, uv=self.uv, canonical=self.canonical)  # fmt: skip

    def interpolate(self, vertex_values: Tensor, faces: Tensor) -> Tensor:
        """(V, C) per-vertex values -> (N, C) at the covered pixels (barycentric)."""
        tri = faces.index_select(0, self.face)  # (N, 3)
        vals = vertex_values.index_select(0, tri.reshape(-1)).view(*tri.shape, vertex_values.shape[1])  # (N, 3, C)
        # out[n, c] = sum_i bary[n, i] * vals[n, i, c]
        return torch.einsum("ni,nic->nc", self.bary.to(vals.dtype), vals)


_POOL: ThreadPoolExecutor | None = None
_MIN_RAYS_PER_THREAD = 4096


def _cast_parallel(caster: WarpMeshCaster, origins: Tensor, dirs: Tensor) -> Hit:
    """``caster.cast`` split over torch's CPU threads (warp runs a CPU kernel on one thread).

    Each chunk is one warp launch; warp calls the compiled kernel through ctypes, which
    releases the GIL, so the chunks run at the same time. Results are those of one cast.
    """
    global _POOL
    threads = torch.get_num_threads()
    n = origins.shape[0]
    if origins.device.type != "cpu" or threads < 2 or n < 2 * _MIN_RAYS_PER_THREAD:
        return caster.cast(origins, dirs)
    if _POOL is None or _POOL._max_workers != threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="perennial-cast")
    chunks = min(2 * threads, n // _MIN_RAYS_PER_THREAD)  # more chunks than threads: balance
    bounds = [n * i // chunks for i in range(chunks + 1)]
    futures = [_POOL.submit(caster.cast, origins[a:b], dirs[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    hits = [f.result() for f in futures]
    return Hit(face=torch.cat([h.face for h in hits]), bary=torch.cat([h.bary for h in hits]),
               depth=torch.cat([h.depth for h in hits]))  # fmt: skip


class SurfaceRasterizer:
    """Rasterises one body topology's surface coordinates; keeps the warp BVH across frames.

    Args:
        rest_vertices: (V, 3) rest mesh, metres (the canonical positions; also builds the BVH).
        faces: (F, 3) triangles.
        uvs: (T, 2) texture coordinates.
        uv_faces: (F, 3) indices into ``uvs`` per triangle corner.
    """

    def __init__(self, rest_vertices: Tensor, faces: Tensor, uvs: Tensor, uv_faces: Tensor) -> None:
        self.rest_vertices = rest_vertices.detach().float()
        self.faces = faces.long()
        self.uvs = uvs.float()
        self.uv_faces = uv_faces.long()
        self._caster: WarpMeshCaster | None = None

    @property
    def caster(self) -> WarpMeshCaster:
        """The warp caster (built on first use from the rest mesh)."""
        if self._caster is None or self._caster.device != self.rest_vertices.device:
            self._caster = WarpMeshCaster(self.rest_vertices, self.faces)
        return self._caster

    def __call__(
        self,
        vertices: Tensor,
        camera: Camera,
        crop: tuple[int, int, int, int] | None = None,
        backend: str = "warp",
        whole: bool = False,
        rays: tuple[Tensor, Tensor] | None = None,
    ) -> SurfaceRaster:
        """The visible surface of the posed mesh in the camera's window.

        Args:
            vertices: (V, 3) posed vertices, world metres (no gradient is kept).
            camera: pinhole camera (OpenCV, world-to-camera).
            crop: optional pixel window ``(x0, y0, w, h)`` of the camera.
            backend: ``"warp"`` (fast) or ``"torch"`` (the twin).
            whole: warp: cast every pixel of the window instead of projecting the mesh for its box
                (cheaper for a small window, e.g. the dual attention's low-res maps).
            rays: with ``whole``: the window's rays (origins, directions; row-major, as
                ``camera.rays()``), when the caller casts several meshes through one window.

        Returns:
            :class:`SurfaceRaster` of the window.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        cam = crop_camera(camera, crop).to(vertices.device)
        vertices = vertices.detach().float()
        if backend == "torch":
            hit = rasterize_torch(vertices, self.faces, cam)
            pixel = hit.mask.nonzero()[:, 0]
            face, bary, depth = hit.face[pixel], hit.bary[pixel], hit.depth[pixel]
        else:
            pixel, face, bary, depth = self._cast(vertices, cam, whole, rays if whole else None)
        return self._surface(cam, pixel, face, bary, depth)

    def _cast(self, vertices: Tensor, cam: Camera, whole: bool = False,
              rays: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        """Warp: cast the pixels of the projected body box (or of the whole window); keep the hits."""
        dev = vertices.device
        box = (0, 0, cam.width - 1, cam.height - 1) if whole else body_box(cam, vertices)
        if box is None:
            empty = torch.zeros(0, dtype=torch.int64, device=dev)
            return empty, empty, torch.zeros(0, 3, device=dev), torch.zeros(0, device=dev)
        u0, v0, u1, v1 = box
        v, u = torch.meshgrid(torch.arange(v0, v1 + 1, device=dev), torch.arange(u0, u1 + 1, device=dev),
                              indexing="ij")  # fmt: skip
        u, v = u.reshape(-1), v.reshape(-1)
        origins, dirs = rays if rays is not None else cam.rays(torch.stack([u, v], -1).float())
        caster = self.caster
        caster.update(vertices)
        hit = _cast_parallel(caster, origins, dirs)
        ok = hit.mask.nonzero()[:, 0]
        pixel = v[ok] * cam.width + u[ok]
        return pixel, hit.face[ok], hit.bary[ok], hit.depth[ok]

    def _surface(self, cam: Camera, pixel: Tensor, face: Tensor, bary: Tensor, depth: Tensor) -> SurfaceRaster:
        """Texture coordinates and rest positions at the hits."""
        uvt = self.uv_faces.index_select(0, face)  # (N, 3) corner uv ids
        # uv[n, k] = sum_i bary[n, i] * uvs[uvt[n, i], k]
        uv = torch.einsum("ni,nik->nk", bary, self.uvs.index_select(0, uvt.reshape(-1)).view(-1, 3, 2))
        tri = self.faces.index_select(0, face)
        canon = torch.einsum("ni,nik->nk", bary, self.rest_vertices.index_select(0, tri.reshape(-1)).view(-1, 3, 3))
        return SurfaceRaster(height=cam.height, width=cam.width, pixel=pixel, face=face, bary=bary,
                             depth=depth, uv=uv, canonical=canon)  # fmt: skip
