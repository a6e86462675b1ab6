"""First-hit ray casting of a triangle mesh with ``warp``.

Every ray gets the triangle it hits first, where on that triangle (barycentrics),
and how far along the ray (metres): a :class:`~perennial.render.hit.Hit`.

- :class:`WarpMeshCaster` / :func:`cast_rays_warp`: ``wp.Mesh`` + ``wp.mesh_query_ray``.
  The BVH is built once per topology; each frame only copies the posed vertices
  in and refits it. This is the fast path (CPU by default, CUDA when the tensors are).
- :func:`render_hits`: camera -> row-major rays -> this caster or its plain-torch
  z-buffer twin (:func:`perennial.render.rasterize.rasterize_torch`, the test oracle).

Frames: vertices, ray origins and hit points are in world metres; ray
directions are unit vectors in world space. ``depth`` is the distance along the
unit ray (not the camera-frame z).

``warp`` is imported lazily on first use (it costs ~1 s) through
:func:`perennial._warp.warp` (quiet, honours ``WARP_CACHE_PATH``), and the kernel
is defined and compiled once per process.
"""

from __future__ import annotations

import contextlib
import functools
import math
from types import SimpleNamespace

import torch
from torch import Tensor

from perennial._warp import warp
from perennial.render.camera import Camera
from perennial.render.hit import Hit, check_mesh, check_rays, no_hits, shape_str
from perennial.render.rasterize import rasterize_torch

__all__ = ["Hit", "WarpMeshCaster", "cast_rays_warp", "render_hits"]


@functools.cache
def _kernels() -> SimpleNamespace:
    """The initialised warp module and the first-hit kernel, defined once per process."""
    wp = warp()

    @wp.kernel
    def first_hit(
        mesh: wp.uint64,
        origins: wp.array(dtype=wp.vec3),
        dirs: wp.array(dtype=wp.vec3),
        max_t: float,
        face: wp.array(dtype=wp.int32),
        bary: wp.array(dtype=wp.vec3),
        depth: wp.array(dtype=float),
    ):
        i = wp.tid()
        q = wp.mesh_query_ray(mesh, origins[i], wp.normalize(dirs[i]), max_t)
        if q.result:
            face[i] = q.face
            # warp's point is u * p0 + v * p1 + (1 - u - v) * p2
            bary[i] = wp.vec3(q.u, q.v, 1.0 - q.u - q.v)
            depth[i] = q.t
        else:
            face[i] = -1
            bary[i] = wp.vec3(0.0, 0.0, 0.0)
            depth[i] = wp.inf

    return SimpleNamespace(wp=wp, first_hit=first_hit)


class WarpMeshCaster:
    """A reusable warp BVH for one mesh topology; refit per frame, cast many rays.

    The BVH is built (SAH on CPU) from the vertices given here, so pass a
    representative pose (e.g. the rest pose); later frames only refit it.

    Example::

        caster = WarpMeshCaster(rest_vertices, faces)
        for posed in frames:
            hit = caster(posed, origins, dirs)
    """

    def __init__(self, vertices: Tensor, faces: Tensor) -> None:
        """Builds the BVH.

        Args:
            vertices: (V, 3) world metres; on CPU or CUDA (warp uses the same device).
            faces: (F, 3) integer vertex indices; the topology, fixed for this caster.

        Raises:
            ValueError: wrong shapes or dtypes, or indices out of range.
        """
        check_mesh(vertices, faces)
        rt = _kernels()
        wp = rt.wp
        self.device = vertices.device
        self.num_vertices = int(vertices.shape[0])
        self.num_faces = int(faces.shape[0])
        self._wp_device = wp.device_from_torch(self.device)
        points = wp.from_torch(_as_vec3(vertices), dtype=wp.vec3)
        indices = wp.from_torch(
            faces.detach().to(self.device, torch.int32).reshape(-1).contiguous()
        )
        # warp owns copies, so the caster never aliases the caller's tensors
        self._points = wp.clone(points, device=self._wp_device)
        self._indices = wp.clone(indices, device=self._wp_device)
        self._mesh = wp.Mesh(points=self._points, indices=self._indices)

    def update(self, vertices: Tensor) -> None:
        """Copies posed vertices into the mesh and refits the BVH.

        Args:
            vertices: (V, 3) world metres, same V and device as at construction.
        """
        if not isinstance(vertices, Tensor) or tuple(vertices.shape) != (self.num_vertices, 3):
            raise ValueError(
                f"vertices must have shape ({self.num_vertices}, 3) for this caster, "
                f"got {shape_str(vertices)}"
            )
        wp = _kernels().wp
        src = wp.from_torch(_as_vec3(vertices.to(self.device)), dtype=wp.vec3)
        with self._on_torch_stream():
            self._mesh.points.assign(src)
            self._mesh.refit()

    def cast(self, origins: Tensor, dirs: Tensor, max_dist: float = math.inf) -> Hit:
        """First hits of rays on the current (last updated) mesh.

        Args:
            origins: (R, 3) ray origins, world metres.
            dirs: (R, 3) non-zero ray directions in world space; normalised in the kernel.
            max_dist: hits farther than this many metres count as misses.

        Returns:
            A :class:`Hit` on this caster's device.
        """
        check_rays(origins, dirs)
        n = origins.shape[0]
        if n == 0:
            return no_hits(0, self.device)
        o = _as_vec3(origins.to(self.device))  # camera rays share one (stride-0) origin
        d = _as_vec3(dirs.to(self.device))
        face = torch.empty(n, dtype=torch.int32, device=self.device)
        bary = torch.empty(n, 3, dtype=torch.float32, device=self.device)
        depth = torch.empty(n, dtype=torch.float32, device=self.device)
        max_t = float(min(max_dist, 3.0e38))  # a finite float32 for the kernel
        rt = _kernels()
        wp = rt.wp
        with self._on_torch_stream():
            wp.launch(
                rt.first_hit,
                dim=n,
                inputs=[
                    self._mesh.id,
                    wp.from_torch(o, dtype=wp.vec3),
                    wp.from_torch(d, dtype=wp.vec3),
                    max_t,
                ],
                outputs=[
                    wp.from_torch(face),
                    wp.from_torch(bary, dtype=wp.vec3),
                    wp.from_torch(depth),
                ],
                device=self._wp_device,
            )
        return Hit(face=face.long(), bary=bary, depth=depth)

    def _on_torch_stream(self):
        """On CUDA, run warp work on torch's current stream (ordered with torch's kernels)."""
        if not self._wp_device.is_cuda:
            return contextlib.nullcontext()
        wp = _kernels().wp
        return wp.ScopedStream(wp.stream_from_torch(self.device))

    def __call__(
        self, vertices: Tensor, origins: Tensor, dirs: Tensor, max_dist: float = math.inf
    ) -> Hit:
        """``update(vertices)`` then ``cast(origins, dirs, max_dist)``."""
        self.update(vertices)
        return self.cast(origins, dirs, max_dist)


def _as_vec3(x: Tensor) -> Tensor:
    """(N, 3) float32 with contiguous xyz triples, as ``wp.from_torch(..., dtype=wp.vec3)`` needs.

    Rows may keep any stride (a stride-0 expanded origin is not copied).
    """
    x = x.detach().to(torch.float32)
    return x if x.stride(-1) == 1 else x.contiguous()


def cast_rays_warp(
    vertices: Tensor,
    faces: Tensor,
    origins: Tensor,
    dirs: Tensor,
    max_dist: float = math.inf,
) -> Hit:
    """First hits of rays on a triangle mesh with warp (one-shot).

    Builds a fresh BVH on every call; for a mesh that moves frame after frame,
    keep a :class:`WarpMeshCaster` instead (refit is much cheaper than a build).
    Both sides of every triangle are hit.

    Args:
        vertices: (V, 3) world metres.
        faces: (F, 3) integer vertex indices.
        origins: (R, 3) ray origins, world metres.
        dirs: (R, 3) non-zero ray directions in world space; normalised in the kernel.
        max_dist: hits farther than this many metres count as misses.

    Returns:
        A :class:`Hit` with ``depth`` in metres along the unit ray.

    Raises:
        ValueError: wrong shapes or dtypes, or face indices out of range.
    """
    check_mesh(vertices, faces)
    check_rays(origins, dirs)
    return WarpMeshCaster(vertices, faces).cast(origins, dirs, max_dist)


def render_hits(
    vertices: Tensor,
    faces: Tensor,
    camera: Camera,
    backend: str = "warp",
    max_dist: float = math.inf,
    caster: WarpMeshCaster | None = None,
) -> Hit:
    """First hit of every pixel's ray (row-major ``H * W``) on a mesh.

    Args:
        vertices: (V, 3) world metres.
        faces: (F, 3) integer vertex indices.
        camera: pinhole camera (OpenCV, world-to-camera).
        backend: ``"warp"`` (BVH ray casting) or ``"torch"`` (z-buffer twin).
        max_dist: hits farther than this many metres are misses.
        caster: optional :class:`WarpMeshCaster` for this topology (warp backend
            only); it is refitted to ``vertices`` instead of building a new BVH.

    Returns:
        A :class:`Hit` with R = H * W; reshape fields with ``(H, W, ...)``.

    Raises:
        ValueError: unknown backend, wrong shapes, or a caster with the torch backend.
    """
    check_mesh(vertices, faces)
    if backend == "torch":
        if caster is not None:
            raise ValueError("render_hits: 'caster' is only used by the 'warp' backend")
        return rasterize_torch(vertices, faces, camera, max_dist=max_dist)
    if backend != "warp":
        raise ValueError(f"render_hits: backend must be 'warp' or 'torch', got {backend!r}")
    origins, dirs = camera.to(vertices.device).rays()
    if caster is None:
        return cast_rays_warp(vertices, faces, origins, dirs, max_dist)
    return caster(vertices, origins, dirs, max_dist)
