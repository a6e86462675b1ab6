"""Tests of the MaintaAvatar-style field avatar: deformer, field, renderer, fitting."""

from __future__ import annotations

import math

import pytest
import torch

from perennial.avatar.field.deformer import MAJOR_BONES, PoseCorrector
from perennial.avatar.field.model import (
    CanonicalField,
    FieldAvatar,
    FieldConfig,
    positional_encoding,
)
from perennial.avatar.field.render import (
    RenderConfig,
    composite,
    render_image,
    render_rays,
    shell_samples,
    volume_weights,
)
from perennial.body.lbs import blend_transforms
from perennial.errors import ConfigError, UnknownAppearanceError
from perennial.numerics import BF16_UNIT_ROUNDOFF
from perennial.render.camera import Camera
from perennial.render.raycast import WarpMeshCaster

SMALL = FieldConfig(triplane_resolution=16, triplane_channels=4, width=32)


def _pose(template, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    rv = torch.zeros(template.num_bones, 3)
    major = [template.bone_names.index(b) for b in MAJOR_BONES]
    rv[major] = scale * torch.randn(len(major), 3, generator=g)
    return rv, torch.tensor([0.0, 0.0, 0.9])


def _front_camera(size=32):
    return Camera.look_at([0.0, -3.0, 0.9], [0.0, 0.0, 0.9], size, size, fov_deg=40.0)


# ---------------------------------------------------------------------------
# pose corrector


def test_pose_corrector_starts_as_identity_and_touches_major_bones_only():
    pc = PoseCorrector()
    assert len(MAJOR_BONES) == 35 and not any(
        b.startswith(("finger", "toe", "eye")) for b in MAJOR_BONES
    )
    rv = torch.randn(2, 104, 3)
    assert torch.equal(pc(rv), rv)
    assert pc.residual(rv).shape == (2, 35, 3)
    torch.nn.init.normal_(pc.mlp[-1].weight)
    out = pc(rv)
    changed = (out - rv).abs().sum(-1).gt(0).any(0)  # (J,)
    assert changed.nonzero()[:, 0].tolist() == sorted(pc.index.tolist())
    with pytest.raises(ValueError, match="rotvec must be"):
        pc(torch.zeros(2, 50, 3))
    with pytest.raises(ValueError, match="unknown bones"):
        PoseCorrector(major=("nope",))


# ---------------------------------------------------------------------------
# volume rendering


def test_volume_weights_known_values():
    sigma = torch.tensor([[0.0, 0.0], [1.0, 2.0], [1e4, 1e4]])
    deltas = torch.full_like(sigma, 0.5)
    w = volume_weights(sigma, deltas)
    assert torch.allclose(w[0], torch.zeros(2))
    a0, a1 = 1 - math.exp(-0.5), 1 - math.exp(-1.0)
    assert torch.allclose(w[1], torch.tensor([a0, (1 - a0) * a1]), atol=1e-6)
    assert torch.allclose(
        w[2], torch.tensor([1.0, 0.0]), atol=1e-6
    )  # opaque first sample hides the rest
    # total weight = 1 - exp(-total optical depth)
    assert torch.allclose(w[1].sum(), torch.tensor(1 - math.exp(-1.5)), atol=1e-6)


def test_volume_weights_and_composite_gradcheck():
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(3, 5, generator=g, dtype=torch.float64).mul(3).requires_grad_()
    deltas = torch.rand(3, 5, generator=g, dtype=torch.float64).add(0.1).requires_grad_()
    assert torch.autograd.gradcheck(volume_weights, (sigma, deltas))
    rgb = torch.rand(3, 5, 3, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.rand(3, 5, generator=g, dtype=torch.float64).cumsum(-1).requires_grad_()
    bg = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)

    def f(sigma, deltas, rgb, t):
        return composite(volume_weights(sigma, deltas), rgb, t, bg)

    assert torch.autograd.gradcheck(f, (sigma, deltas, rgb, t))


def test_composite_background_and_shapes():
    w = torch.zeros(4, 6)
    rgb, alpha, depth = composite(
        w, torch.rand(4, 6, 3), torch.rand(4, 6), torch.tensor([0.1, 0.2, 0.3])
    )
    assert rgb.shape == (4, 3) and alpha.shape == (4,) and depth.shape == (4,)
    assert torch.allclose(rgb, torch.tensor([0.1, 0.2, 0.3]).expand(4, 3))
    assert alpha.eq(0).all() and depth.eq(0).all()


def test_shell_samples_stay_in_the_shell():
    depth = torch.tensor([0.01, 2.0, 3.5])
    for jitter in (False, True):
        t, deltas = shell_samples(depth, 8, 0.06, jitter)
        assert t.shape == deltas.shape == (3, 8)
        assert (t >= (depth[:, None] - 0.06).clamp_min(0) - 1e-6).all()
        assert (t <= depth[:, None] + 0.06 + 1e-6).all()
        assert (t.diff(dim=-1) > 0).all()
    assert torch.allclose(deltas[1], torch.full((8,), 0.12 / 8))


def test_render_config_rejects_bad_values():
    with pytest.raises(ValueError, match="weights"):
        RenderConfig(weights="vertex")
    with pytest.raises(ValueError):
        RenderConfig(samples=0)


# ---------------------------------------------------------------------------
# deformer


def test_canonical_rays_inverts_forward_skinning(template):
    av = FieldAvatar(template, config=SMALL)
    body = av.pose(*_pose(template))
    R = 64
    g = torch.Generator().manual_seed(1)
    face = torch.randint(template.faces.shape[0], (R,), generator=g)
    bary = torch.rand(R, 3, generator=g)
    bary = bary / bary.sum(-1, keepdim=True)
    w = av.deformer.hit_weights(face, bary)
    assert torch.allclose(w.sum(-1), torch.ones(R), atol=1e-5)
    canon = torch.randn(R, 4, 3, generator=g) * 0.3
    posed = av.deformer.forward_skin(
        canon.reshape(-1, 3), w.repeat_interleave(4, 0), body.transforms.detach()
    )
    back = av.deformer.canonical_rays(posed.reshape(R, 4, 3), w, body.transforms.detach())
    assert torch.allclose(back, canon, atol=1e-4)


def test_canonical_rays_gradcheck(template):
    av = FieldAvatar(template, config=SMALL)
    T = av.pose(*_pose(template)).transforms.detach().double()
    g = torch.Generator().manual_seed(2)
    w = torch.rand(3, T.shape[0], generator=g, dtype=torch.float64)
    w = w / w.sum(-1, keepdim=True)
    pts = torch.randn(3, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    Tg = T.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, t: av.deformer.canonical_rays(p, w, t), (pts, Tg))


def test_ray_weights_agree_with_closest_point_weights_on_the_surface(template):
    """At a ray's hit point the ray approximation and per-point inverse LBS coincide."""
    av = FieldAvatar(template, config=SMALL)
    body = av.pose(*_pose(template, scale=0.2))
    cam = _front_camera(32)
    origins, dirs = cam.rays()
    caster = WarpMeshCaster(body.vertices, template.faces)
    hit = caster.cast(origins, dirs)
    idx = hit.mask.nonzero()[:, 0]
    assert idx.numel() > 50
    pts = (origins[idx] + hit.depth[idx, None] * dirs[idx])[:, None]  # (R, 1, 3)
    w = av.deformer.hit_weights(hit.face[idx], hit.bary[idx])
    ray = av.deformer.canonical_rays(pts, w, body.transforms)[:, 0]
    point, inside = av.deformer.canonical_points(pts[:, 0], body)
    assert inside.all()
    err = (ray - point).norm(dim=-1)
    assert err.median() < 1e-3, err.median()
    # points far from the body are empty in "point" mode
    _, inside = av.deformer.canonical_points(torch.tensor([[0.0, -2.0, 0.9]]), body)
    assert not inside.any()


def test_pose_correction_gets_gradients(template):
    av = FieldAvatar(template, appearances=["a"], config=SMALL)
    torch.nn.init.normal_(av.corrector.mlp[-1].weight, std=1e-3)
    body = av.pose(*_pose(template))
    cam = _front_camera(24)
    o, d = cam.rays()
    out = render_rays(
        av, body, WarpMeshCaster(body.vertices, template.faces), o, d, "a", av.render_config
    )
    out.rgb.sum().backward()
    grads = [p.grad for p in av.corrector.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


# ---------------------------------------------------------------------------
# canonical field


def test_field_shapes_ranges_and_appearance_slots():
    field = CanonicalField(SMALL, ["a"])
    x = torch.rand(100, 3) * 2 - 1
    sigma, rgb = field(x, "a")
    assert sigma.shape == (100,) and rgb.shape == (100, 3)
    assert sigma.dtype == rgb.dtype == torch.float32
    assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
    keys = set(field.state_dict())
    field.add_appearance("b", like="a")
    new = set(field.state_dict()) - keys
    assert field.keys == {"a": "a0", "b": "a1"}  # state-dict keys never depend on the names
    assert new == {
        "appearances.a1.geometry_code",
        "appearances.a1.color_code",
        "appearances.a1.triplane.table",
    }
    s_b, c_b = field(x, "b")
    assert torch.allclose(s_b, sigma) and torch.allclose(c_b, rgb)  # "like" copies the storage
    with pytest.raises(ValueError, match="already exists"):
        field.add_appearance("a")
    with pytest.raises(UnknownAppearanceError, match=r"no appearance 'c' \(known: 'a', 'b'\)"):
        field(x, "c")
    assert positional_encoding(x, 3).shape == (100, 21)


def test_appearances_do_not_share_storage_gradients():
    field = CanonicalField(SMALL, ["a", "b"])
    sigma, rgb = field(torch.rand(50, 3) * 2 - 1, "a")
    (sigma.sum() + rgb.sum()).backward()
    b = field.appearance("b")
    assert all(p.grad is None for p in b.parameters())
    assert field.appearance("a").triplane.table.grad.abs().sum() > 0


def test_field_autocast_modes_agree():
    x = torch.rand(64, 3) * 2 - 1
    f32 = CanonicalField(FieldConfig(autocast="off", width=32), ["a"])
    bf = CanonicalField(FieldConfig(autocast="on", width=32), ["a"])
    bf.load_state_dict(f32.state_dict())
    s0, c0 = f32(x, "a")
    s1, c1 = bf(x, "a")
    assert torch.allclose(c0, c1, atol=0.02) and torch.allclose(s0, s1, rtol=0.05, atol=0.5)
    with pytest.raises(ConfigError, match="autocast"):
        FieldConfig(autocast="yes")


# ---------------------------------------------------------------------------
# renderer


def test_render_image_misses_are_background(template):
    cfg = RenderConfig(samples=8, background=(0.25, 0.5, 0.75))
    av = FieldAvatar(template, appearances=["a"], config=SMALL, render_config=cfg)
    rv, tr = _pose(template)
    out = render_image(av, _front_camera(32), rv, tr, "a")
    assert out.rgb.shape == (32, 32, 3) and out.alpha.shape == out.depth.shape == out.hit.shape == (
        32,
        32,
    )
    miss = ~out.hit
    assert miss.any() and out.hit.any()
    assert torch.allclose(out.rgb[miss], torch.tensor([0.25, 0.5, 0.75]).expand(int(miss.sum()), 3))
    assert out.alpha[miss].eq(0).all()
    assert (out.alpha[out.hit] > 0).all() and (out.alpha <= 1 + 1e-6).all()
    # normalised expected depth lies in the shell around the first hit
    body = av.pose(rv, tr)
    o, d = _front_camera(32).rays()
    first = WarpMeshCaster(body.vertices, template.faces).cast(o, d).depth.reshape(32, 32)[out.hit]
    z = out.depth[out.hit] / out.alpha[out.hit]
    assert ((z - first).abs() <= cfg.margin + 1e-4).all()


def test_posed_body_equals_the_template_and_surface_transforms_blend_the_weights(template):
    av = FieldAvatar(template, appearances=["a"], config=SMALL)
    rv, tr = _pose(template)
    body = av.pose(rv, tr)
    ref = template(rv[None], tr[None])
    assert torch.allclose(body.vertices, ref.vertices[0], atol=1e-5)
    assert torch.allclose(body.transforms, ref.transforms[0], atol=1e-5)
    g = torch.Generator().manual_seed(0)
    face = torch.randint(template.faces.shape[0], (50,), generator=g)
    bary = torch.rand(50, 3, generator=g)
    bary = bary / bary.sum(1, keepdim=True)
    dfm = av.deformer
    expect = blend_transforms(dfm.hit_weights(face, bary), body.transforms)[:, :3]
    assert torch.allclose(dfm.surface_transforms(face, bary, body), expect, atol=1e-5)


# Both numeric paths on every host. In fp32 the two renders agree to float rounding. Under bf16
# autocast both evaluate the same MLP on the same samples, but in other batch shapes, so an fp32
# accumulation that differs in its last bits can round a bf16 activation the other way: one unit
# roundoff u = 2^-8 of relative error in a pre-activation. A colour is a sigmoid (slope <= 1/4) of
# a logit of size ~1 and an opacity 1 - exp(-sum sigma delta) moves by at most the relative change
# of its densities, so a few u bound both: we allow 4 u (0.0156) per colour channel and opacity.
PATH_TOLERANCE = {"off": 1e-5, "on": 4 * BF16_UNIT_ROUNDOFF}


@pytest.mark.parametrize("autocast", ["off", "on"])
@pytest.mark.parametrize("samples", [5, 8])
def test_render_image_equals_render_rays_and_stops_early_within_its_bound(template, samples, autocast):
    """The image path (body box, affine canonical rays, front-to-back stages) is the
    reference render of every camera ray; early termination moves colour and opacity
    by at most ``stop_transmittance``."""
    tol = PATH_TOLERANCE[autocast]
    config = FieldConfig(triplane_resolution=16, triplane_channels=4, width=32, autocast=autocast)
    av = FieldAvatar(template, appearances=["a"], config=config)
    torch.nn.init.normal_(av.field.density_head.weight, std=0.05)
    torch.nn.init.constant_(av.field.density_head.bias, 5.0)  # ~100 / m: rays saturate
    rv, tr = _pose(template)
    cam = Camera.look_at([0.4, -2.5, 1.1], [0.0, 0.0, 0.9], 40, 48, fov_deg=50.0)
    body = av.pose(rv, tr)
    o, d = cam.rays()
    with torch.no_grad():
        exact = RenderConfig(samples=samples, stop_transmittance=0.0)
        ref = render_rays(av, body, WarpMeshCaster(body.vertices, template.faces), o, d, "a", exact)
        out = render_image(av, cam, rv, tr, "a", config=exact)
        assert torch.equal(out.hit.reshape(-1), ref.hit) and ref.hit.sum() > 100
        assert (out.rgb.reshape(-1, 3) - ref.rgb).abs().max() <= tol
        assert (out.alpha.reshape(-1) - ref.alpha).abs().max() <= tol
        # depth = sum_i w_i t_i moves by at most t_far * sum_i |dw_i|; we allow 2 tol of weight
        t_far = float(ref.depth.max()) + exact.margin
        assert (out.depth.reshape(-1) - ref.depth).abs().max() <= 2 * tol * t_far
        stop = RenderConfig(samples=samples, stop_transmittance=1e-2)
        early = render_image(av, cam, rv, tr, "a", config=stop)
        err = (early.rgb.reshape(-1, 3) - ref.rgb).abs().max()
        assert 0 < err <= 1e-2 + tol  # some rays stopped, none by more than the bound
        assert (early.alpha.reshape(-1) - ref.alpha).abs().max() <= 1e-2 + tol


def test_render_image_of_a_body_outside_the_view_is_background(template):
    av = FieldAvatar(template, appearances=["a"], config=SMALL)
    rv, tr = _pose(template)
    out = render_image(av, _front_camera(16), rv, tr + torch.tensor([5.0, 0.0, 0.0]), "a")
    assert not out.hit.any() and out.alpha.eq(0).all() and out.rgb.eq(0).all()
