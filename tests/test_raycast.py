"""Tests for perennial.render.raycast (warp ray casting) against perennial.render.rasterize
(its torch z-buffer twin), and the ray-casting benchmark."""

from __future__ import annotations

import math

import pytest
import torch

from perennial.evaluate.bench import bench_raycast_mesh
from perennial.render.camera import Camera
from perennial.render.rasterize import rasterize_torch
from perennial.render.raycast import Hit, WarpMeshCaster, cast_rays_warp, render_hits

# ---------------------------------------------------------------------------
# procedural meshes


def _grid_mesh(points: torch.Tensor, wrap_v: bool) -> torch.Tensor:
    """(NU, NV, 3) parametric grid, wrapped in u (and v if asked) -> (F, 3) faces."""
    nu, nv = points.shape[:2]
    idx = torch.arange(nu * nv).reshape(nu, nv)
    nxt_u = idx.roll(-1, 0)
    cols = nv if wrap_v else nv - 1
    a, b = idx[:, :cols], nxt_u[:, :cols]
    c, d = nxt_u.roll(-1, 1)[:, :cols], idx.roll(-1, 1)[:, :cols]
    return torch.cat([torch.stack([a, b, c], -1), torch.stack([a, c, d], -1)]).reshape(-1, 3)


def _sphere(center, radius: float, n_lon: int, n_lat: int):
    """A UV sphere without pole caps (tiny holes at the poles), (V, 3) and (F, 3)."""
    lon = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1]
    lat = torch.linspace(-math.pi / 2 + 0.02, math.pi / 2 - 0.02, n_lat)
    lo, la = torch.meshgrid(lon, lat, indexing="ij")
    p = torch.stack([la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()], -1) * radius
    return (p + torch.tensor(center)).reshape(-1, 3), _grid_mesh(p, wrap_v=False)


def _torus(center, major: float, minor: float, n_u: int, n_v: int, tilt: float):
    """A torus around a tilted axis, (V, 3) and (F, 3)."""
    u = torch.linspace(0, 2 * math.pi, n_u + 1)[:-1]
    v = torch.linspace(0, 2 * math.pi, n_v + 1)[:-1]
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    r = major + minor * vv.cos()
    p = torch.stack([r * uu.cos(), r * uu.sin(), minor * vv.sin()], -1)
    c, s = math.cos(tilt), math.sin(tilt)
    rot = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    return (p @ rot.T + torch.tensor(center)).reshape(-1, 3), _grid_mesh(p, wrap_v=True)


@pytest.fixture(scope="module")
def scene():
    """A sphere and an overlapping tilted torus (~24k triangles) seen from 3 m."""
    v1, f1 = _sphere((0.15, 0.0, 0.0), 0.5, 120, 60)
    v2, f2 = _torus((-0.2, -0.15, 0.1), 0.45, 0.15, 100, 50, tilt=1.1)
    vertices = torch.cat([v1, v2])
    faces = torch.cat([f1, f2 + v1.shape[0]])
    camera = Camera.look_at([0.3, -3.0, 0.4], [0.0, 0.0, 0.0], 256, 256, fov_deg=40.0)
    return vertices, faces, camera


def _agreement(a: Hit, b: Hit) -> float:
    same = (~a.mask & ~b.mask) | (a.face == b.face)
    return same.float().mean().item()


# ---------------------------------------------------------------------------
# warp vs torch twin


def test_scene_size(scene):
    vertices, faces, _ = scene
    assert 10_000 <= faces.shape[0] <= 30_000
    assert int(faces.max()) < vertices.shape[0]


def test_warp_matches_torch_twin(scene):
    vertices, faces, camera = scene
    hw = render_hits(vertices, faces, camera, backend="warp")
    ht = render_hits(vertices, faces, camera, backend="torch")
    assert 0.2 < hw.mask.float().mean() < 0.8  # a non-trivial image
    assert _agreement(hw, ht) >= 0.995
    both = hw.mask & ht.mask & (hw.face == ht.face)
    assert both.sum() > 0.99 * hw.mask.sum()
    assert (hw.depth[both] - ht.depth[both]).abs().max() < 1e-4
    # barycentrics agree as world points (bary alone is ill-conditioned at grazing angles)
    gap = (hw.points(vertices, faces) - ht.points(vertices, faces))[both].norm(dim=-1)
    assert gap.max() < 1e-4
    assert torch.isinf(hw.depth[~hw.mask]).all() and torch.isinf(ht.depth[~ht.mask]).all()


@pytest.mark.parametrize("backend", ["warp", "torch"])
def test_hit_points_lie_on_rays(scene, backend):
    vertices, faces, camera = scene
    hit = render_hits(vertices, faces, camera, backend=backend)
    origins, dirs = camera.rays()
    m = hit.mask
    on_ray = origins[m] + hit.depth[m, None] * dirs[m]
    err = (hit.points(vertices, faces)[m] - on_ray).norm(dim=-1)
    assert err.max() < 1e-4
    assert (hit.bary[m] >= -1e-5).all()
    assert torch.allclose(hit.bary[m].sum(-1), torch.ones(int(m.sum())), atol=1e-5)


def test_torch_twin_nearest_wins(scene):
    """Hiding the nearest surface must reveal a farther one behind some pixels."""
    vertices, faces, camera = scene
    full = rasterize_torch(vertices, faces, camera)
    n_sphere = 2 * 120 * 59
    sphere_only = rasterize_torch(vertices, faces[:n_sphere], camera)
    torus_hit = full.mask & (full.face >= n_sphere)
    occluded = torus_hit & sphere_only.mask
    assert occluded.sum() > 100  # the torus is in front of the sphere there
    assert (full.depth[occluded] < sphere_only.depth[occluded]).all()


# ---------------------------------------------------------------------------
# known values


def _big_triangle(flip: bool = False):
    """One triangle in the plane y = 2 m, wide enough to fill any view of it."""
    vertices = torch.tensor([[-10.0, 2.0, -10.0], [10.0, 2.0, -10.0], [0.0, 2.0, 10.0]])
    faces = torch.tensor([[0, 2, 1]]) if flip else torch.tensor([[0, 1, 2]])
    return vertices, faces


@pytest.mark.parametrize("flip", [False, True])
def test_single_triangle_analytic_warp(flip):
    vertices, faces = _big_triangle(flip)
    origins = torch.zeros(3, 3)
    # the last direction is not unit length: the caster normalises it
    dirs = torch.tensor([[0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.5]])
    hit = cast_rays_warp(vertices, faces, origins, dirs)
    cos = torch.tensor([1.0, 0.8, 1.0 / math.sqrt(1.25)])
    torch.testing.assert_close(hit.depth, 2.0 / cos, rtol=1e-6, atol=1e-6)
    assert hit.face.tolist() == [0, 0, 0]
    # (0, 2, 0) = 0.25 v0 + 0.25 v1 + 0.5 v2 in vertex order of the face
    expected = torch.tensor([0.25, 0.25, 0.5])
    expected = expected[[0, 2, 1]] if flip else expected
    torch.testing.assert_close(hit.bary[0], expected, rtol=0, atol=1e-6)


def test_single_triangle_analytic_torch():
    vertices, faces = _big_triangle()
    camera = Camera.look_at([0.0, 0.0, 0.0], [0.0, 1.0, 0.0], 9, 7, fov_deg=60.0)
    hit = rasterize_torch(vertices, faces, camera)
    assert hit.mask.all()
    _, dirs = camera.rays()
    torch.testing.assert_close(hit.depth, 2.0 / dirs[:, 1], rtol=1e-5, atol=1e-6)
    centre = 3 * 9 + 4  # (u, v) = (4, 3): the optical axis
    torch.testing.assert_close(hit.bary[centre], torch.tensor([0.25, 0.25, 0.5]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", ["warp", "torch"])
def test_misses_and_max_dist(backend):
    vertices, faces = _big_triangle()
    away = Camera.look_at([0.0, 0.0, 0.0], [0.0, -1.0, 0.0], 8, 8)
    hit = render_hits(vertices, faces, away, backend=backend)
    assert hit.face.dtype == torch.int64 and (hit.face == -1).all()
    assert torch.isinf(hit.depth).all() and (hit.bary == 0).all() and not hit.mask.any()
    toward = Camera.look_at([0.0, 0.0, 0.0], [0.0, 1.0, 0.0], 8, 8)
    assert render_hits(vertices, faces, toward, backend=backend).mask.all()
    short = render_hits(vertices, faces, toward, backend=backend, max_dist=1.9)
    assert not short.mask.any()


def test_output_shapes_and_dtypes(scene):
    vertices, faces, _ = scene
    camera = Camera.look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0], 24, 16)
    for backend in ("warp", "torch"):
        hit = render_hits(vertices, faces.int(), camera, backend=backend)
        assert len(hit) == 24 * 16
        assert hit.face.shape == (384,) and hit.face.dtype == torch.int64
        assert hit.bary.shape == (384, 3) and hit.bary.dtype == torch.float32
        assert hit.depth.shape == (384,) and hit.depth.dtype == torch.float32
        assert hit.mask.shape == (384,) and hit.mask.dtype == torch.bool
    empty = cast_rays_warp(vertices, faces, torch.zeros(0, 3), torch.zeros(0, 3))
    assert len(empty) == 0


# ---------------------------------------------------------------------------
# per-frame refit


def test_caster_refit_follows_motion(scene):
    vertices, faces, camera = scene
    origins, dirs = camera.scaled(0.25).rays()
    caster = WarpMeshCaster(vertices, faces)
    before = caster(vertices, origins, dirs)
    moved = vertices + torch.tensor([0.0, 0.5, 0.0])  # 0.5 m away from the camera
    after = caster(moved, origins, dirs)
    fresh = cast_rays_warp(moved, faces, origins, dirs)
    assert torch.equal(after.face, fresh.face)
    torch.testing.assert_close(after.depth, fresh.depth)
    assert after.mask.sum() < before.mask.sum()  # the scene looks smaller
    m = after.mask
    on_ray = origins[m] + after.depth[m, None] * dirs[m]
    assert (after.points(moved, faces)[m] - on_ray).norm(dim=-1).max() < 1e-4


# ---------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("vertices", "faces", "match"),
    [
        (torch.zeros(4, 2), torch.tensor([[0, 1, 2]]), r"vertices must be a \(V, 3\)"),
        (torch.zeros(4, 3, dtype=torch.int64), torch.tensor([[0, 1, 2]]), "floating point"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2]), r"faces must be an \(F, 3\)"),
        (torch.zeros(4, 3), torch.tensor([[0.0, 1.0, 2.0]]), "integer vertex indices"),
        (torch.zeros(4, 3), torch.tensor([[0, 1, 4]]), r"outside \[0, 4\)"),
        (torch.zeros(4, 3), torch.zeros(0, 3, dtype=torch.int64), "empty"),
    ],
)
def test_bad_mesh_raises(vertices, faces, match):
    rays = torch.zeros(2, 3), torch.tensor([[0.0, 1.0, 0.0]] * 2)
    camera = Camera.look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0], 4, 4)
    with pytest.raises(ValueError, match=match):
        cast_rays_warp(vertices, faces, *rays)
    with pytest.raises(ValueError, match=match):
        rasterize_torch(vertices, faces, camera)


def test_bad_rays_and_arguments_raise():
    vertices, faces = _big_triangle()
    with pytest.raises(ValueError, match=r"dirs must be an \(R, 3\)"):
        cast_rays_warp(vertices, faces, torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="same shape"):
        cast_rays_warp(vertices, faces, torch.zeros(2, 3), torch.zeros(3, 3))
    camera = Camera.look_at([0.0, 0.0, 0.0], [0.0, 1.0, 0.0], 4, 4)
    with pytest.raises(ValueError, match="backend must be"):
        render_hits(vertices, faces, camera, backend="optix")
    caster = WarpMeshCaster(vertices, faces)
    with pytest.raises(ValueError, match=r"shape \(3, 3\) for this caster"):
        caster.update(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="only used by the 'warp' backend"):
        render_hits(vertices, faces, camera, backend="torch", caster=caster)


# ---------------------------------------------------------------------------
# timing entry point


def test_bench_raycast_smoke(scene):
    vertices, faces, _ = scene
    out = bench_raycast_mesh(vertices, faces, sizes=(32,), repeats=1)
    assert set(out) == {"warp", "torch"}
    for backend in out.values():
        assert set(backend) == {32} and backend[32] > 0
