"""First-hit ray casting of a triangle mesh: a ``warp`` BVH caster and a torch z-buffer twin.

Both backends answer the same question for every ray: which triangle does it hit
first, where on that triangle (barycentrics), and how far along the ray (metres).

- :class:`WarpMeshCaster` / :func:`cast_rays_warp`: ``wp.Mesh`` + ``wp.mesh_query_ray``.
  The BVH is built once per topology; each frame only copies the posed vertices
  in and refits it. This is the fast path (CPU by default, CUDA when the tensors are).
- :func:`rasterize_torch`: a plain-torch z-buffer rasteriser for a pinhole
  :class:`~perennial.render.camera.Camera`, used as the test oracle.
- :func:`render_hits`: camera -> row-major rays -> either backend.

Frames: vertices, ray origins and hit points are in world metres; ray
directions are unit vectors in world space. ``depth`` is the distance along the
unit ray (not the camera-frame z).

``warp`` is imported lazily on first use (it costs ~1 s), configured to log only
warnings, and its kernel is defined and compiled once per process; the kernel
cache honours ``WARP_CACHE_PATH``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

from perennial.render.camera import Camera

__all__ = [
    "Hit",
    "WarpMeshCaster",
    "bench_raycast",
    "cast_rays_warp",
    "rasterize_torch",
    "render_hits",
]


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


# ---------------------------------------------------------------------------
# input checks


def _check_mesh(vertices: Tensor, faces: Tensor) -> None:
    if not isinstance(vertices, Tensor) or vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be a (V, 3) tensor, got {_shape(vertices)}")
    if not vertices.is_floating_point():
        raise ValueError(f"vertices must be floating point, got {vertices.dtype}")
    if not isinstance(faces, Tensor) or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be an (F, 3) tensor, got {_shape(faces)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces must hold integer vertex indices, got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError("faces is empty: the mesh needs at least one triangle")
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise ValueError(
            f"faces index vertices outside [0, {vertices.shape[0]}): "
            f"min {int(faces.min())}, max {int(faces.max())}"
        )


def _check_rays(origins: Tensor, dirs: Tensor) -> None:
    for name, x in (("origins", origins), ("dirs", dirs)):
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"{name} must be an (R, 3) tensor, got {_shape(x)}")
    if origins.shape != dirs.shape:
        raise ValueError(
            f"origins and dirs must have the same shape, got {tuple(origins.shape)} "
            f"and {tuple(dirs.shape)}"
        )


def _shape(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _miss(n: int, device: torch.device) -> Hit:
    return Hit(
        face=torch.full((n,), -1, dtype=torch.int64, device=device),
        bary=torch.zeros(n, 3, dtype=torch.float32, device=device),
        depth=torch.full((n,), math.inf, dtype=torch.float32, device=device),
    )


# ---------------------------------------------------------------------------
# warp backend


@functools.cache
def _warp() -> SimpleNamespace:
    """Import and configure warp once, and define the first-hit kernel once per process."""
    import warp as wp

    wp.config.log_level = wp.LOG_WARNING  # no init banner or module-load lines
    if hasattr(wp.config, "quiet"):  # older warp releases
        wp.config.quiet = True
    # Without a CUDA driver warp's native init prints a warning straight to fd 2;
    # torch not seeing CUDA either means there is no GPU to warn about.
    with contextlib.nullcontext() if torch.cuda.is_available() else _native_stderr_silenced():
        wp.init()

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


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends file descriptor 2 (what C code prints to) to /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


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
        _check_mesh(vertices, faces)
        rt = _warp()
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
                f"got {_shape(vertices)}"
            )
        wp = _warp().wp
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
        _check_rays(origins, dirs)
        n = origins.shape[0]
        if n == 0:
            return _miss(0, self.device)
        o = _as_vec3(origins.to(self.device))  # camera rays share one (stride-0) origin
        d = _as_vec3(dirs.to(self.device))
        face = torch.empty(n, dtype=torch.int32, device=self.device)
        bary = torch.empty(n, 3, dtype=torch.float32, device=self.device)
        depth = torch.empty(n, dtype=torch.float32, device=self.device)
        max_t = float(min(max_dist, 3.0e38))  # a finite float32 for the kernel
        rt = _warp()
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
        wp = _warp().wp
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
    _check_mesh(vertices, faces)
    _check_rays(origins, dirs)
    return WarpMeshCaster(vertices, faces).cast(origins, dirs, max_dist)


# ---------------------------------------------------------------------------
# torch z-buffer twin


def rasterize_torch(
    vertices: Tensor,
    faces: Tensor,
    camera: Camera,
    max_dist: float = math.inf,
    near: float = 1e-4,
) -> Hit:
    """Z-buffer rasterisation of a mesh at pixel centres, in plain torch.

    Every pixel (u, v) is tested against every triangle whose screen bounding box
    contains it; the nearest covering triangle wins (ties go to the lower face
    index). Barycentrics are perspective-correct, so the result matches a ray
    cast along ``camera.rays()`` up to float rounding on triangle edges. Both
    windings are rasterised (no back-face culling).

    Triangles with a vertex closer than ``near`` to the camera plane are dropped
    rather than clipped: fine whenever the camera sees the whole mesh in front.

    Args:
        vertices: (V, 3) world metres.
        faces: (F, 3) integer vertex indices.
        camera: pinhole camera, OpenCV convention, world-to-camera ``R``, ``t``.
        max_dist: hits farther than this many metres (along the ray) are misses.
        near: minimum camera-frame z in metres of a rasterised triangle's vertices.

    Returns:
        A :class:`Hit` over the ``H * W`` pixels in row-major order, on the
        vertices' device; ``depth`` is the distance along each pixel's unit ray.

    Raises:
        ValueError: wrong shapes or dtypes, or face indices out of range.
    """
    _check_mesh(vertices, faces)
    with torch.no_grad():
        width = camera.width
        device = vertices.device
        cam = camera.to(device)
        tri = _setup_triangles(vertices, faces.to(device).long(), cam, near)
        frag = _fragments(tri, width)
        return _resolve(frag, tri, cam, max_dist)


def _setup_triangles(vertices: Tensor, faces: Tensor, cam: Camera, near: float) -> dict:
    """Screen-space set-up, in float64, of the triangles that may cover a pixel.

    For a triangle with screen vertices ``p_i = (u_i, v_i)`` and camera depths
    ``z_i``, ``q_i(u, v) = b_i(u, v) / z_i`` is affine in the pixel coordinates
    (``b_i`` the screen-space barycentrics). It is stored relative to the
    triangle's bounding-box corner ``(u0, v0)``:
    ``q_i = gu_i * (u - u0) + gv_i * (v - v0) + c_i``.

    Returns:
        dict with ``face`` (T,) original face ids, ``box`` (T, 4) int64
        ``[u0, v0, width, height]`` in pixels (clamped to the image), and
        ``coef`` (T, 3, 3) float32 rows ``[gu_i, gv_i, c_i]``.
    """
    n = faces.shape[0]
    pc = vertices.detach().double() @ cam.R.double().T + cam.t.double()  # (V, 3) camera frame
    uvz = torch.cat([(pc @ cam.K.double().T)[:, :2] / pc[:, 2:3], pc[:, 2:3]], 1)  # (V, 3)
    g = uvz.index_select(0, faces.reshape(-1)).view(n, 3, 3)  # (F, corner, [u v z])
    u, v, z = g.unbind(2)  # (F, 3) each
    # edge opposite corner i runs from corner i+1 to corner i+2
    ua, va = u.roll(-1, 1), v.roll(-1, 1)
    eu, ev = u.roll(-2, 1) - ua, v.roll(-2, 1) - va  # (F, 3) edge vectors
    u_lo, u_hi = _min3(u).ceil().clamp_min(0), _max3(u).floor().clamp_max(cam.width - 1)
    v_lo, v_hi = _min3(v).ceil().clamp_min(0), _max3(v).floor().clamp_max(cam.height - 1)
    area = eu[:, 0] * (v[:, 0] - va[:, 0]) - ev[:, 0] * (u[:, 0] - ua[:, 0])  # twice signed area
    keep = (_min3(z) > near) & (area.abs() > 1e-12) & (u_hi >= u_lo) & (v_hi >= v_lo)
    idx = keep.nonzero().squeeze(1)
    # b_i(p) = (e_i x (p - a_i)) / area, evaluated at the box corner and differentiated
    scale = 1.0 / (area[:, None] * z)  # (F, 3): folds 1/area and the 1/z_i of q_i
    gu, gv = -ev * scale, eu * scale
    c = (eu * (v_lo[:, None] - va) - ev * (u_lo[:, None] - ua)) * scale
    coef = torch.stack([gu, gv, c], 2).float().index_select(0, idx)  # (T, 3, 3)
    box = torch.stack([u_lo, v_lo, u_hi - u_lo + 1, v_hi - v_lo + 1], 1)
    box = box.index_select(0, idx).long()  # (T, 4)
    return {"face": idx, "box": box, "coef": coef}


def _min3(x: Tensor) -> Tensor:
    """(N, 3) -> (N,) row minimum (cheaper than ``amin`` over a length-3 dim on CPU)."""
    return torch.minimum(torch.minimum(x[:, 0], x[:, 1]), x[:, 2])


def _max3(x: Tensor) -> Tensor:
    """(N, 3) -> (N,) row maximum."""
    return torch.maximum(torch.maximum(x[:, 0], x[:, 1]), x[:, 2])


def _fragments(tri: dict, width: int) -> dict:
    """Every (triangle, pixel) pair in the triangles' bounding boxes that the triangle covers.

    Args:
        tri: output of :func:`_setup_triangles`.
        width: image width in pixels.

    Returns:
        dict with ``tri`` (N,) index into the kept triangles, ``pixel`` (N,)
        row-major pixel index, ``q`` (N, 3) float32 ``b_i / z_i`` (all >= 0).
    """
    u0, v0, bw, bh = tri["box"].unbind(1)
    count = bw * bh  # (T,) pixels in each box
    start = torch.cumsum(count, 0) - count
    t = torch.repeat_interleave(torch.arange(count.shape[0], device=count.device), count)
    per_frag = torch.stack([start, bw, u0, v0], 1).index_select(0, t)  # (N, 4)
    local = torch.arange(t.shape[0], device=t.device) - per_frag[:, 0]  # index inside its box
    dv = torch.div(local, per_frag[:, 1], rounding_mode="floor")
    du = local - dv * per_frag[:, 1]
    pixel = (per_frag[:, 3] + dv) * width + per_frag[:, 2] + du
    coef = tri["coef"].index_select(0, t)  # (N, 3, 3)
    # q[n, i] = coef[n, i, 0] * du[n] + coef[n, i, 1] * dv[n] + coef[n, i, 2]
    q = torch.addcmul(coef[..., 2], coef[..., 0], du[:, None].float())
    q = torch.addcmul(q, coef[..., 1], dv[:, None].float())
    inside = ((q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 2] >= 0)).nonzero().squeeze(1)
    return {
        "tri": t.index_select(0, inside),
        "pixel": pixel.index_select(0, inside),
        "q": q.index_select(0, inside),
    }


def _resolve(frag: dict, tri: dict, cam: Camera, max_dist: float) -> Hit:
    """Nearest fragment per pixel -> :class:`Hit` over all pixels (row-major)."""
    n_pix = cam.height * cam.width
    device = frag["q"].device
    hit = _miss(n_pix, device)
    w = frag["q"].sum(1)  # (N,) 1 / z of the point on the triangle; > 0 unless all q_i == 0
    z = 1.0 / w.clamp_min(1e-30)
    # positive float32 bit patterns sort like the floats: key = (z bits, fragment index);
    # fragments come in face order, so equal depths go to the lower face index
    order = torch.arange(z.shape[0], device=device, dtype=torch.int64)
    key = (z.view(torch.int32).long() << 32) | order
    empty = torch.iinfo(torch.int64).max
    zbuf = torch.full((n_pix,), empty, dtype=torch.int64, device=device)
    zbuf.scatter_reduce_(0, frag["pixel"], key, reduce="amin", include_self=True)
    covered = (zbuf != empty).nonzero().squeeze(1)
    win = zbuf.index_select(0, covered) & 0xFFFFFFFF  # winning fragment per covered pixel
    z_win = z.index_select(0, win)
    # distance along the unit ray = z * |K^-1 [u, v, 1]| (R is a rotation)
    u = (covered % cam.width).float()
    v = torch.div(covered, cam.width, rounding_mode="floor").float()
    k_inv = torch.linalg.inv(cam.K)  # upper triangular: its last row is [0, 0, 1]
    x = k_inv[0, 0] * u + k_inv[0, 1] * v + k_inv[0, 2]
    y = k_inv[1, 1] * v + k_inv[1, 2]
    depth = z_win * torch.sqrt(x * x + y * y + 1.0)
    ok = (depth <= max_dist).nonzero().squeeze(1)
    covered, win, depth = covered[ok], win[ok], depth[ok]
    hit.face[covered] = tri["face"].index_select(0, frag["tri"].index_select(0, win))
    hit.bary[covered] = frag["q"].index_select(0, win) * z_win[ok, None]  # perspective-correct
    hit.depth[covered] = depth
    return hit


# ---------------------------------------------------------------------------
# camera-level entry point and timing


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
    _check_mesh(vertices, faces)
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


def framing_camera(vertices: Tensor, size: int, fov_deg: float = 40.0) -> Camera:
    """A square camera looking at the mesh's bounding box from -Y (the front of Anny).

    Args:
        vertices: (V, 3) world metres.
        size: image width and height in pixels.
        fov_deg: vertical field of view in degrees.

    Returns:
        A camera whose view holds the bounding sphere of the mesh.
    """
    v = vertices.detach().float().cpu()
    lo, hi = v.amin(0), v.amax(0)
    centre = (lo + hi) / 2
    radius = float((hi - lo).norm()) / 2
    dist = radius / math.sin(math.radians(fov_deg) / 2) * 1.05
    eye = centre + torch.tensor([0.0, -dist, 0.0])
    return Camera.look_at(eye, centre, size, size, fov_deg=fov_deg)


def bench_raycast(
    vertices: Tensor,
    faces: Tensor,
    sizes: tuple[int, ...] = (256, 512),
    repeats: int = 10,
) -> dict[str, dict[int, float]]:
    """Median wall time of one frame of each backend at each image size.

    The camera frames the mesh (:func:`framing_camera`). Warp is timed as a
    per-frame refit plus the cast (its BVH is built once, its rays precomputed,
    as a renderer with fixed cameras would); torch as a full rasterisation. One
    untimed warm-up call per case absorbs kernel compilation.

    Args:
        vertices: (V, 3) world metres.
        faces: (F, 3) integer vertex indices.
        sizes: square image sizes in pixels.
        repeats: timed calls per case.

    Returns:
        ``{"warp": {size: ms}, "torch": {size: ms}}`` medians in milliseconds.
    """
    _check_mesh(vertices, faces)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    caster = WarpMeshCaster(vertices, faces)
    out: dict[str, dict[int, float]] = {"warp": {}, "torch": {}}
    for size in sizes:
        cam = framing_camera(vertices, int(size)).to(vertices.device)
        origins, dirs = cam.rays()
        warp_frame = functools.partial(caster, vertices, origins, dirs)
        torch_frame = functools.partial(rasterize_torch, vertices, faces, cam)
        out["warp"][int(size)] = _median_ms(warp_frame, repeats)
        out["torch"][int(size)] = _median_ms(torch_frame, repeats)
    return out


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
