"""The maps the dual attention reads, and the state a causal clip render carries.

:class:`AttentionMaps` works on a grid of cells every ``reduction`` (r) pixels: the cells sit at the
image's pixels ``(r m + r // 2, r n + r // 2)`` (the middle of each r x r block), and a generator
window holds those that fall inside it (:func:`_cells`; one grid for every window). On that grid:

- the **body map** is the window's full-resolution texture and coverage channels (already
  computed for the generator) read at the cells' pixels: no raster of its own;
- the **expanded map** (spatial part) is a raster of the mesh pushed out along its normals with
  the low-res camera :meth:`AttentionMaps.low_camera`, whose pixel ``(j, i)`` sees the ray of the
  window's cell ``(i, j)``: the same samples as the body map;
- the **previous map** (temporal part) is the previous frame's body map in this camera and window:
  a low-res raster of the previous frame's vertices, or the map a causal render carried.

It runs the attention on them and returns its residual interpolated (bilinearly, the cells at their
pixels, edge cells held outwards) to the window, as two small matrix products.

Rendering a clip is causal: frame ``t`` needs only frame ``t - 1``'s posed vertices, which the
caller carries as a :class:`ClipState` (``TextureAvatar.render_image(..., previous=state)``
returns the next one). The state also keeps frame ``t - 1``'s low-res body map with the camera
and window it was made for; when frame ``t`` has the same camera it is moved onto frame ``t``'s
cells by whole cells (:meth:`AttentionMaps.carried`; exact: the previous window held every pixel of
the previous body) instead of rasterised again, so a clip seen by a still camera pays no raster for
it. Without a state (the first frame, or a single image) the previous frame is the current one: a
still frame.

Cost at 256^2 (the 104 x 240 window, 13 x 30 cells, 2-core EPYC, minimum of 100): the expanded
mesh's normals and push 0.3 ms (:class:`Expander`, two warp kernels; three ``index_add`` took 1.9 ms,
a sparse product 0.9 ms), its raster 1.0 ms, the previous raster 0.8 ms, the attention 1.0 ms; the
body map needs no raster of its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

from perennial._warp import warp
from perennial.avatar.texture.attention import (
    DualAttention,
    expanded_vertices,
    vertex_face_incidence,
)
from perennial.avatar.texture.raster import SurfaceRasterizer, crop_camera
from perennial.render.camera import Camera

__all__ = ["AttentionMaps", "ClipState", "Expander", "interpolation_matrix"]


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


def _cells(start: int, n: int, r: int) -> tuple[int, int, bool]:
    """(offset, count, aligned) of the low-res cells along a window side of ``n`` pixels from pixel
    ``start``: the cells sit at the image's pixels ``r m + r // 2`` (one grid for every window, so a
    carried map moves to another window by whole cells), the first ``offset`` pixels into the window;
    a window shorter than that gets one cell at its last pixel, off the grid (``aligned`` False)."""
    o = (r // 2 - start) % r
    if o > n - 1:
        return n - 1, 1, False
    return o, (n - o - 1) // r + 1, True


@functools.lru_cache(maxsize=256)
def interpolation_matrix(
    n: int, r: int, o: int, device: torch.device = torch.device("cpu")
) -> Tensor:
    """(n, n1) linear interpolation of the ``n1`` cells at pixels ``o + r i`` (i < n1, inside ``n``)
    to ``n`` pixels. Row ``x``: weights of the two cells around pixel ``x``, ``(x - o) / r`` clamped
    to the cells."""
    n1 = (n - o - 1) // r + 1
    pos = ((torch.arange(n, dtype=torch.float64) - o) / r).clamp(0, n1 - 1)
    lo = pos.floor().long().clamp(max=max(n1 - 2, 0))
    frac = pos - lo
    m = torch.zeros(n, n1, dtype=torch.float64)
    rows = torch.arange(n)
    m[rows, lo] += 1 - frac
    if n1 > 1:
        m[rows, lo + 1] += frac
    return m.float().to(device)


@functools.cache
def _push_kernels() -> SimpleNamespace:
    """Warp kernels of :class:`Expander`, defined once per process."""
    wp = warp()

    @wp.kernel
    def face_normals(points: wp.array(dtype=wp.vec3), faces: wp.array(dtype=wp.int32),
                     normals: wp.array(dtype=wp.vec3)):  # fmt: skip
        f = wp.tid()
        i, j, k = faces[3 * f], faces[3 * f + 1], faces[3 * f + 2]
        n = wp.cross(points[j] - points[i], points[k] - points[i])
        wp.atomic_add(normals, i, n)
        wp.atomic_add(normals, j, n)
        wp.atomic_add(normals, k, n)

    @wp.kernel
    def push_out(points: wp.array(dtype=wp.vec3), normals: wp.array(dtype=wp.vec3), distance: float,
                 out: wp.array(dtype=wp.vec3)):  # fmt: skip
        v = wp.tid()
        n = normals[v]
        out[v] = points[v] + distance * n / wp.max(wp.length(n), 1e-12)

    return SimpleNamespace(wp=wp, face_normals=face_normals, push_out=push_out)


class Expander:
    """:func:`~perennial.avatar.texture.attention.expanded_vertices` of one topology: on the CPU two warp
    kernels (face normals summed into their corners, then the push), 0.1 ms against 0.8 ms for the torch
    ops on the 2-core EPYC; elsewhere the torch ops (a sparse vertex-face product)."""

    def __init__(self, faces: Tensor, num_vertices: int, use_warp: bool = True) -> None:
        self.faces, self.use_warp = faces, use_warp
        self.incidence = vertex_face_incidence(faces, num_vertices)
        self._flat = faces.detach().to(torch.int32).reshape(-1).contiguous()

    def __call__(self, vertices: Tensor, distance: float) -> Tensor:
        if vertices.device.type != "cpu" or not self.use_warp:
            return expanded_vertices(vertices, self.faces, distance, self.incidence)
        k = _push_kernels()
        wp = k.wp
        v = vertices.detach().float().contiguous()
        normals, out = torch.zeros_like(v), torch.empty_like(v)
        points, n = wp.from_torch(v, dtype=wp.vec3), wp.from_torch(normals, dtype=wp.vec3)
        wp.launch(
            k.face_normals,
            dim=len(self.faces),
            inputs=[points, wp.from_torch(self._flat), n],
            device="cpu",
        )
        wp.launch(k.push_out, dim=len(v), inputs=[points, n, float(distance), wp.from_torch(out, dtype=wp.vec3)],
                  device="cpu")  # fmt: skip
        return out


class AttentionMaps:
    """The body, expanded and previous maps on the reduced grid, and the attention on them.

    Args:
        rest_vertices, faces, uvs, uv_faces: the avatar's mesh (as :class:`SurfaceRasterizer`).
        reduction: the maps' grid is the window's divided by this.
        expand: how far the expanded mesh is pushed out along the normals, metres.
        backend: raster path, ``"warp"`` or ``"torch"``.
    """

    def __init__(self, rest_vertices: Tensor, faces: Tensor, uvs: Tensor, uv_faces: Tensor, reduction: int,
                 expand: float, backend: str) -> None:  # fmt: skip
        self.previous = SurfaceRasterizer(rest_vertices, faces, uvs, uv_faces)
        self.outer = SurfaceRasterizer(
            rest_vertices, faces, uvs, uv_faces
        )  # its own BVH: no refit ping-pong
        self.faces = faces
        self.expander = Expander(faces, len(rest_vertices), use_warp=backend == "warp")
        self.reduction, self.expand, self.backend = reduction, expand, backend

    def grid(
        self, window: tuple[int, int, int, int]
    ) -> tuple[tuple[int, int, bool], tuple[int, int, bool]]:
        """:func:`_cells` of the window's columns and rows."""
        r = self.reduction
        return _cells(window[0], window[2], r), _cells(window[1], window[3], r)

    def low_camera(self, camera: Camera, window: tuple[int, int, int, int]) -> Camera:
        """The camera of the window's cells: its pixel ``(j, i)`` is window pixel ``(o_x + r j, o_y + r i)``."""
        cam = crop_camera(camera, window)
        r = self.reduction
        (ox, w1, _), (oy, h1, _) = self.grid(window)
        K = cam.K.clone()
        K[0] /= r  # u_low = (u - o_x) / r
        K[1] /= r
        K[0, 2] -= ox / r
        K[1, 2] -= oy / r
        return Camera(K, cam.R, cam.t, w1, h1)

    def body_cells(self, body: Tensor, window: tuple[int, int, int, int]) -> Tensor:
        """(C, h1, w1): the window's full-resolution map (C, h, w) at the cells' pixels."""
        r = self.reduction
        (ox, _, _), (oy, _, _) = self.grid(window)
        return body[:, oy::r, ox::r]

    def carried(
        self, previous: ClipState, camera: Camera, window: tuple[int, int, int, int]
    ) -> Tensor | None:
        """The previous frame's map that ``previous`` carries, on this window's cells, or None (then it
        is rasterised). Exact when the camera is the same: the previous window held every pixel the
        previous body covered, so the cells outside it are empty, and both windows' cells are on one grid."""
        if previous.window is None or previous.map_for(camera, previous.window) is None:
            return None  # no map, or another camera
        if previous.window == window:
            return previous.body_map
        r, now, before = self.reduction, self.grid(window), self.grid(previous.window)
        if not all(g[2] for g in now + before):
            return None
        # global cell index of the first column and row of each window
        dx, dy = (
            (a + g[0]) // r - (b + f[0]) // r
            for a, b, g, f in zip(window[:2], previous.window[:2], now, before)
        )
        src = previous.body_map
        out = src.new_zeros(src.shape[0], now[1][1], now[0][1])
        # out[:, i, j] = src[:, i + dy, j + dx] where both exist
        ys = slice(max(0, -dy), min(out.shape[1], src.shape[1] - dy))
        xs = slice(max(0, -dx), min(out.shape[2], src.shape[2] - dx))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[:, ys, xs] = src[:, ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx]
        return out

    def surface_map(self, rasterizer: SurfaceRasterizer, vertices: Tensor, cam: Camera, texture, center: Tensor,
                    half_extent: Tensor, rays: tuple[Tensor, Tensor] | None = None) -> Tensor:  # fmt: skip
        """(C + 1, h1, w1): the texture and a coverage channel on the mesh seen by ``cam`` (``rays``: its rays)."""
        r = rasterizer(
            vertices, cam, backend=self.backend, whole=True, rays=rays
        )  # a small window: cast all of it
        tex = texture(r.uv, (r.canonical - center) / half_extent)
        return r.image(torch.cat([tex, tex.new_ones(len(r), 1)], 1))

    def __call__(self, attention: DualAttention, texture, camera: Camera, window: tuple[int, int, int, int],
                 vertices: Tensor, previous: ClipState | None, center: Tensor, half_extent: Tensor,
                 body: Tensor) -> tuple[Tensor, ClipState]:  # fmt: skip
        """The attention's residual on the window, (h, w, C + 1) channels last, and the state for the next frame.

        Args:
            body: (C + 1, h, w) the window's texture and coverage channels at full resolution.
        """
        low = self.low_camera(camera, window)
        cells = self.body_cells(body, window)
        temporal = attention.temporal is not None and previous is not None
        prev = self.carried(previous, camera, window) if temporal else None
        need_prev = temporal and prev is None
        expanded = rays = None
        if attention.spatial is not None or need_prev:
            rays = low.to(vertices.device).rays()  # one set of rays for both rasters
        if attention.spatial is not None:
            outer = self.expander(vertices, self.expand)
            expanded = self.surface_map(self.outer, outer, low, texture, center, half_extent, rays)
        if need_prev:
            prev = self.surface_map(
                self.previous, previous.vertices, low, texture, center, half_extent, rays
            )
        res = attention(
            cells[None],
            None if expanded is None else expanded[None],
            None if prev is None else prev[None],
        )
        (h, w), r = body.shape[1:], self.reduction
        (ox, _, _), (oy, _, _) = self.grid(window)
        up_h, up_w = (
            interpolation_matrix(h, r, oy, body.device),
            interpolation_matrix(w, r, ox, body.device),
        )
        # out[y, x, c] = sum_i up_h[y, i] (sum_j up_w[x, j] res[c, i, j]): two plain matrix products
        _, C, h1, w1 = res.shape
        t = torch.mm(up_w, res[0].permute(2, 1, 0).reshape(w1, h1 * C)).view(w, h1, C)
        res = torch.mm(up_h, t.transpose(0, 1).reshape(h1, w * C)).view(h, w, C)
        return res, ClipState(vertices.detach(), cells.detach().contiguous(), camera, window)
