"""Surface raster of the texture avatar: the warp fast path against its torch twin, crops."""

from __future__ import annotations

import pytest
import torch

from perennial.avatar.texture.raster import SurfaceRasterizer, body_box, crop_camera
from perennial.render.camera import Camera


@pytest.fixture(scope="module")
def scene(template):
    """The default body in a gentle pose, its rasteriser and a 96 x 128 full-body camera."""
    rest = template.rest_state()
    g = torch.Generator().manual_seed(0)
    rv = 0.1 * torch.randn(1, template.num_bones, 3, generator=g)
    rv[:, 0] = 0.0
    verts, _ = template.pose_rest(rv, torch.tensor([[0.0, 0.0, 0.9]]), rest)
    cam = Camera.look_at([0.3, -3.0, 1.0], [0.0, 0.0, 0.85], 96, 128, fov_deg=40.0)
    return SurfaceRasterizer(rest.vertices, template.faces, template.uvs, template.uv_faces), verts[0], cam


def test_twin_agrees_with_fast_path(scene):
    rast, verts, cam = scene
    a, b = rast(verts, cam), rast(verts, cam, backend="torch")
    assert a.height == 128 and a.width == 96 and len(a) > 1500
    ma, mb = a.mask, b.mask
    # the same pixels, up to float rounding on silhouette edges
    assert (ma != mb).sum() <= 0.005 * ma.sum()
    fa, fb = a.face_map, b.face_map
    both = ma & mb
    same = (fa == fb) & both
    assert same.sum() >= 0.97 * both.sum()  # the rest sit on shared triangle edges
    for name, tol in (("uv_map", 1e-4), ("canonical_map", 1e-5), ("bary_map", 1e-3)):
        da, db = getattr(a, name)[same], getattr(b, name)[same]
        assert (da - db).abs().max() < tol, name
    # where the winning triangles differ, they are neighbours: rest positions agree to ~a triangle
    diff = both & ~same
    if diff.any():
        assert (a.canonical_map[diff] - b.canonical_map[diff]).norm(dim=-1).max() < 0.03


def test_shapes_and_values(scene, template):
    rast, verts, cam = scene
    r = rast(verts, cam)
    N = len(r)
    assert r.pixel.shape == (N,) and r.face.shape == (N,) and r.bary.shape == (N, 3)
    assert r.uv.shape == (N, 2) and r.canonical.shape == (N, 3) and r.depth.shape == (N,)
    assert r.uv_map.shape == (128, 96, 2) and r.canonical_map.shape == (128, 96, 3)
    assert r.face_map.shape == (128, 96) and r.mask.dtype == torch.bool
    assert torch.allclose(r.bary.sum(1), torch.ones(N), atol=1e-5)
    assert (r.uv >= 0).all() and (r.uv <= 1).all()
    # canonical positions lie on the rest mesh: within its box; depth about 3 m
    rv = rast.rest_vertices
    assert (r.canonical >= rv.min(0).values - 1e-4).all() and (r.canonical <= rv.max(0).values + 1e-4).all()
    assert 2.5 < float(r.depth.median()) < 3.5
    # the posed hit point reprojects onto its pixel
    hit = torch.einsum("ni,nik->nk", r.bary, verts[template.faces[r.face]])
    uv, _ = cam.project(hit)
    pix = torch.stack([r.pixel % 96, r.pixel // 96], -1).float()
    assert (uv - pix).abs().max() < 1e-2
    # dense maps are zero off the body
    assert (r.uv_map[~r.mask] == 0).all() and (r.face_map[~r.mask] == -1).all()


@pytest.mark.parametrize("backend", ["warp", "torch"])
def test_crop_is_a_window_of_the_full_raster(scene, backend):
    rast, verts, cam = scene
    full = rast(verts, cam, backend=backend)
    x0, y0, w, h = 20, 30, 40, 50
    part = rast(verts, cam, crop=(x0, y0, w, h), backend=backend)
    assert part.height == h and part.width == w
    assert torch.equal(part.mask, full.mask[y0 : y0 + h, x0 : x0 + w])
    assert torch.equal(part.face_map, full.face_map[y0 : y0 + h, x0 : x0 + w])
    assert torch.allclose(part.uv_map, full.uv_map[y0 : y0 + h, x0 : x0 + w], atol=1e-6)
    # the same window as a sub-window of the full raster (what the avatar's generator window uses)
    box = full.box()
    x0, y0, x1, y1 = box
    win = full.window(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    assert torch.equal(win.mask, full.mask[y0 : y1 + 1, x0 : x1 + 1])
    with pytest.raises(ValueError, match="window"):
        full.window(x0 + 1, y0, x1 - x0, y1 - y0 + 1)


def test_errors_and_empty(scene):
    rast, verts, cam = scene
    with pytest.raises(ValueError, match="crop"):
        rast(verts, cam, crop=(90, 0, 10, 10))
    with pytest.raises(ValueError, match="crop"):
        crop_camera(cam, (0, 0, 0, 5))
    with pytest.raises(ValueError, match="backend"):
        rast(verts, cam, backend="opengl")
    away = Camera.look_at([0.0, -3.0, 0.9], [0.0, -6.0, 0.9], 32, 32)  # looking away from the body
    r = rast(verts, away)
    assert len(r) == 0 and r.box() is None and not r.mask.any()
    # every vertex behind this camera: the box is the whole image (the projection is unbounded)
    assert body_box(away, verts) == (0, 0, 31, 31)


def test_parallel_cast_equals_one_cast(scene):
    """The warp cast split over threads gives exactly the hits of one launch."""
    from perennial.avatar.texture.raster import _cast_parallel

    rast, verts, cam = scene
    caster = rast.caster
    caster.update(verts)
    big = cam.scaled(2.0)  # 192 x 256: enough rays to be split
    origins, dirs = big.rays()
    one, split = caster.cast(origins, dirs), _cast_parallel(caster, origins, dirs)
    assert origins.shape[0] > 4 * 4096
    assert torch.equal(one.face, split.face) and torch.equal(one.bary, split.bary)
    assert torch.equal(one.depth, split.depth)
