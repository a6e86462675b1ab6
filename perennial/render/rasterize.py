"""A plain-torch z-buffer rasteriser of a triangle mesh: the twin of the warp ray caster.

:func:`rasterize_torch` answers, for every pixel centre of a pinhole
:class:`~perennial.render.camera.Camera`, what :mod:`perennial.render.raycast`
answers for that pixel's ray: the first triangle hit, its barycentrics, and the
distance along the unit ray in metres. It serves as the test oracle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from perennial.render.camera import Camera
from perennial.render.hit import Hit, check_mesh, no_hits

__all__ = ["rasterize_torch"]


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
    check_mesh(vertices, faces)
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
    hit = no_hits(n_pix, device)
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
