"""Dual attention of the texture avatar: criss-cross maths, expanded mesh, causal state, and that it trains."""

from __future__ import annotations

import pytest
import torch

from perennial.avatar.texture.attention import DualAttention, criss_cross, expanded_vertices
from perennial.avatar.texture.dual import AttentionMaps, ClipState, Expander, interpolation_matrix
from perennial.avatar.texture.model import STAGES, TextureAvatar, TextureConfig
from perennial.avatar.texture.raster import crop_camera
from perennial.errors import ConfigError
from perennial.render.camera import Camera

SMALL = dict(texture_size=32, texture_channels=8, latent_dim=8, face_channels=4, face_hidden=8, widths=(8, 12, 16))  # fmt: skip


def _dense_reference(q, k, v, slope):
    """Attention over all positions with weight 0 outside the row and column, written per position."""
    B, Cq, H, W = q.shape
    out = torch.zeros(B, v.shape[1], H, W, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                pos = [(h, j) for j in range(W)] + [(i, w) for i in range(H) if i != h]
                e = torch.stack([q[b, :, h, w] @ k[b, :, i, j] / Cq**0.5 - slope * (abs(i - h) + abs(j - w))
                                 for i, j in pos])  # fmt: skip
                a = torch.softmax(e, 0)
                out[b, :, h, w] = sum(a[n] * v[b, :, i, j] for n, (i, j) in enumerate(pos))
    return out


def test_criss_cross_matches_the_definition_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64),
    )
    v = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64)
    for slope in (0.0, 0.7):
        torch.testing.assert_close(criss_cross(q, k, v, slope), _dense_reference(q, k, v, slope))
    # a steep distance weighting makes a position attend to itself only
    torch.testing.assert_close(criss_cross(q, k, v, 60.0), v)
    args = (q[:1, :, :3, :3].clone().requires_grad_(), k[:1, :, :3, :3].clone().requires_grad_(),
            v[:1, :, :3, :3].clone().requires_grad_(), torch.tensor(0.3, dtype=torch.float64, requires_grad=True))  # fmt: skip
    assert torch.autograd.gradcheck(criss_cross, args)


def test_expanded_vertices_move_outwards(template):
    rest = template.rest_state().vertices
    out = expanded_vertices(rest, template.faces, 0.05)
    torch.testing.assert_close(
        (out - rest).norm(dim=-1), torch.full((len(rest),), 0.05), atol=1e-5, rtol=0
    )
    torso = template.part_labels == template.part_names.index("torso")
    axis = rest[torso].mean(0)
    grew = (
        ((out[torso] - axis)[:, :2].norm(dim=-1) > (rest[torso] - axis)[:, :2].norm(dim=-1))
        .float()
        .mean()
    )
    assert grew > 0.9


def test_expanded_vertices_sparse_sum_matches_index_add(template):
    rest = template.rest_state().vertices
    faces = template.faces
    tri = rest[faces]
    fn = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = torch.zeros_like(rest)
    for i in range(3):
        n.index_add_(0, faces[:, i], fn)
    want = rest + 0.03 * n / n.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(expanded_vertices(rest, faces, 0.03), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        Expander(faces, len(rest))(rest, 0.03), want, atol=1e-6, rtol=0
    )  # warp kernels


def test_interpolation_matrix_known_values():
    m = interpolation_matrix(20, 8, 4)  # cells at pixels 4 and 12 (the third, at 20, is outside)
    assert m.shape == (20, 2)
    torch.testing.assert_close(m.sum(1), torch.ones(20))
    want = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(m[[0, 4, 8, 10, 12, 19]], want)
    assert (
        interpolation_matrix(3, 8, 2).shape == (3, 1) and (interpolation_matrix(3, 8, 2) == 1).all()
    )


def test_low_res_cells_are_the_full_res_pixels(template):
    """The expanded and previous rasters sample the rays of the body map's cells (the same grid)."""
    rest = template.rest_state()
    maps = AttentionMaps(
        rest.vertices, template.faces, template.uvs, template.uv_faces, 4, 0.05, "warp"
    )
    cam = Camera.look_at([0.0, -2.6, 0.95], [0.0, 0.0, 0.85], 64, 96, fov_deg=42.0)
    window = (10, 6, 42, 83)
    texture = lambda uv, xyz: torch.cat([uv, xyz], 1)  # noqa: E731  (a texture that shows where it is read)
    centre, half = torch.zeros(3), torch.ones(3)
    full = maps.surface_map(
        maps.outer, rest.vertices, crop_camera(cam, window), texture, centre, half
    )
    low = maps.surface_map(
        maps.outer, rest.vertices, maps.low_camera(cam, window), texture, centre, half
    )
    cells = maps.body_cells(full, window)
    assert (
        cells.shape == low.shape == (6, 21, 11)
    )  # the image's pixels 2, 6, ...: window pixels 0, 4, ...
    assert (
        cells[-1] == low[-1]
    ).float().mean() > 0.97  # coverage (a ray grazing an edge may differ)
    both = (cells[-1] > 0) & (low[-1] > 0)
    torch.testing.assert_close(cells[:, both], low[:, both], atol=1e-4, rtol=0)


@pytest.mark.parametrize("parts", [(True, True), (True, False), (False, True)])
def test_batched_parts_match_one_part_after_the_other(parts):
    torch.manual_seed(0)
    att = DualAttention(5, 3, *parts)
    with torch.no_grad():
        att.gain.fill_(0.8)
        for b in (att.spatial, att.temporal):
            if b is not None:
                b.alpha.uniform_(0.5, 1.5)
                b.slope_raw.uniform_(-2, 1)
    body, expanded, previous = (torch.randn(2, 5, 4, 6) for _ in range(3))
    hwc = lambda x: x.permute(0, 2, 3, 1)  # noqa: E731
    twin = [
        b(hwc(body), hwc(m))
        for b, m in ((att.spatial, expanded), (att.temporal, previous))
        if b is not None
    ]
    want = att.gain * att.fuse(torch.cat(twin, -1).permute(0, 3, 1, 2))
    torch.testing.assert_close(att(body, expanded, previous), want)


def test_dual_attention_starts_as_identity():
    att = DualAttention(5, 4)
    body = torch.randn(1, 5, 6, 7)
    assert att(body, torch.randn(1, 5, 6, 7), torch.randn(1, 5, 6, 7)).abs().max() == 0
    with pytest.raises(ValueError):
        DualAttention(5, 4, spatial=False, temporal=False)
    with pytest.raises(ConfigError, match="attention"):
        TextureConfig(attention_reduction=0)


def _pose(template, seed):
    g = torch.Generator().manual_seed(seed)
    rv = 0.1 * torch.randn(template.num_bones, 3, generator=g)
    rv[0] = 0.0
    return rv, torch.tensor([0.0, 0.02 * seed, 0.9]), None


def test_dual_attention_trains_and_renders_causally(template):
    torch.manual_seed(0)
    av = TextureAvatar(template, {}, ["a"], TextureConfig(**SMALL, spatial_attention=True, temporal_attention=True,
                                                     attention_reduction=4))  # fmt: skip
    cam = Camera.look_at([0.2, -2.6, 0.95], [0.0, 0.0, 0.85], 48, 64, fov_deg=42.0)
    prev, cur = _pose(template, 1), _pose(template, 2)  # (rotvec, translation, facial actions)
    rv, tr = cur[:2]
    # target: smooth colours on the surface, and a 'skirt' band standing off the hips (outside the mesh)
    verts, _, _ = av.pose(*cur)
    r = av.rasterizer(verts, cam)
    target = r.image(0.5 + 0.4 * torch.sin(r.canonical * torch.tensor([9.0, 7.0, 5.0])))
    mask = r.mask[None].float()
    rows = slice(32, 44)
    band = torch.nn.functional.max_pool2d(mask[:, rows], (1, 9), 1, (0, 4)) > 0
    mask[:, rows][band] = 1.0
    target[:, rows] = torch.where(
        band, torch.tensor([0.8, 0.2, 0.1])[:, None, None], target[:, rows]
    )
    opt = torch.optim.Adam([{"params": av.appearances.parameters(), "lr": 3e-2},
                            {"params": [p for n, p in av.named_parameters() if not n.startswith("appearances")],
                             "lr": 1e-2}])  # fmt: skip
    losses, gains = [], []
    for _ in range(40):
        out = av(cam, rv, tr, "a", previous=prev)
        loss = (out["rgb"] - target).square().mean() + (out["alpha"] - mask).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        gains.append(av.attention.gain.item())
    assert gains[0] != 0 and abs(gains[-1]) > 0.05, gains[::10]  # the gain moves off 0 ...
    grads = [p.grad for p in av.attention.spatial.parameters()] + [
        p.grad for p in av.attention.temporal.parameters()
    ]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # ... and then every part learns
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5, (
        losses[:5],
        losses[-5:],
    )  # measured ~0.15
    # causal clip render: the state of frame t-1 gives frame t exactly as frame t-1's pose does; its
    # map, made in another window, is moved onto this window's cells instead of rasterised again
    first = av.render_image(cam, prev[0], prev[1], "a")
    assert isinstance(first.state, ClipState)
    by_state = av.render_image(cam, rv, tr, "a", previous=first.state, timings=True)
    by_pose = av.render_image(cam, rv, tr, "a", previous=prev)
    assert first.state.window != by_state.state.window
    maps = av.attention_maps()
    moved = maps.carried(first.state, cam, by_state.state.window)
    assert moved is not None and moved.abs().sum() > 0
    torch.testing.assert_close(by_state.rgb, by_pose.rgb)
    other = Camera.look_at([0.3, -2.6, 0.95], [0.0, 0.0, 0.85], 48, 64, fov_deg=42.0)
    assert (
        maps.carried(first.state, other, by_state.state.window) is None
    )  # another camera: rasterised
    assert tuple(by_state.timings) == STAGES and "attention" in STAGES
    # the carried low-res map is reused for the same camera and window, and equals a fresh one
    again = av.render_image(cam, rv, tr, "a", previous=by_state.state)
    still = av.render_image(cam, rv, tr, "a", previous=cur)
    torch.testing.assert_close(again.rgb, still.rgb)
    assert not torch.allclose(still.rgb, by_pose.rgb)  # the previous frame matters
