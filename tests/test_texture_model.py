"""The neural-texture avatar: shapes, crops, appearances, gradients, learning, sizes."""

from __future__ import annotations

import pytest
import torch

from perennial.avatar.texture.model import STAGES, TextureAvatar, TextureConfig
from perennial.body.rig import ANNY_FACIAL_ACTIONS
from perennial.errors import ConfigError, UnknownAppearanceError
from perennial.render.camera import Camera

SMALL = dict(texture_size=32, texture_channels=8, latent_dim=8, face_channels=4, face_hidden=8, widths=(8, 12, 16))


def _frame(template, seed=0):
    g = torch.Generator().manual_seed(seed)
    rv = 0.08 * torch.randn(template.num_bones, 3, generator=g)
    rv[0] = 0.0
    fa = torch.zeros(52)
    fa[ANNY_FACIAL_ACTIONS.index("jawOpen")] = 0.8
    return rv, torch.tensor([0.0, 0.0, 0.9]), fa


def _camera(size=(48, 64)):
    w, h = size
    return Camera.look_at([0.2, -2.6, 0.95], [0.0, 0.0, 0.85], w, h, fov_deg=42.0)


@pytest.fixture(scope="module")
def avatar(template):
    torch.manual_seed(0)
    return TextureAvatar(template, {"height": 0.6}, ["outfit.v1", "b"], TextureConfig(**SMALL))


def test_forward_crop_and_render_image(avatar, template):
    rv, tr, fa = _frame(template)
    cam = _camera()
    out = avatar(cam, rv, tr, "outfit.v1", fa)
    assert out["rgb"].shape == (3, 64, 48) and out["alpha"].shape == (1, 64, 48)
    assert out["mask"].shape == (64, 48) and out["mask"].sum() > 300
    assert out["rgb"].requires_grad and out["alpha"].requires_grad
    # composited over black: colour never exceeds opacity; nothing outside the generator window
    assert (out["rgb"] <= out["alpha"] + 1e-6).all()
    x0, y0, w, h = out["window"]
    inside = torch.zeros(64, 48, dtype=torch.bool)
    inside[y0 : y0 + h, x0 : x0 + w] = True
    assert inside[out["mask"]].all() and (out["alpha"][0][~inside] == 0).all()
    # a crop renders its own window size; one off the body is all background
    part = avatar(cam, rv, tr, "outfit.v1", fa, crop=(8, 10, 24, 20))
    assert part["rgb"].shape == (3, 20, 24) and part["mask"].shape == (20, 24)
    assert torch.equal(part["mask"], out["mask"][10:30, 8:32])
    empty = avatar(cam, rv, tr, "b", crop=(0, 0, 4, 4))
    assert not empty["mask"].any() and (empty["rgb"] == 0).all() and (empty["alpha"] == 0).all()
    img = avatar.render_image(cam, rv, tr, "outfit.v1", fa, timings=True)
    assert img.rgb.shape == (64, 48, 3) and img.alpha.shape == (64, 48) and img.rgb.dtype == torch.float32
    assert not img.rgb.requires_grad and tuple(img.timings) == STAGES
    assert torch.allclose(img.rgb, out["rgb"].detach().permute(1, 2, 0), atol=1e-6)
    assert avatar.render_image(cam, rv, tr, "b").timings is None


def test_appearances_like_a_canonical_field(avatar):
    assert avatar.appearance_names == ["outfit.v1", "b"] and avatar.keys == {"outfit.v1": "a0", "b": "a1"}
    keys = set(avatar.state_dict())
    assert {"appearances.a0.texture.atlas", "appearances.a0.latent", "appearances.a1.latent"} <= keys
    assert not any(k.startswith("template") for k in keys)
    c = avatar.add_appearance("copy", like="outfit.v1")
    assert torch.equal(c.texture.atlas, avatar.appearance("outfit.v1").texture.atlas)
    assert avatar.keys["copy"] == "a2" and avatar.names[-1] == "copy"
    with pytest.raises(ValueError, match="exists"):
        avatar.add_appearance("copy")
    with pytest.raises(UnknownAppearanceError, match="known: 'b', 'copy', 'outfit.v1'"):
        avatar.check_appearance("nope", where="/tmp/av")
    with pytest.raises(UnknownAppearanceError):
        avatar.appearance("nope")
    with pytest.raises(UnknownAppearanceError):
        avatar.render_image(_camera(), *_frame(avatar.template)[:2], "nope")
    del avatar.appearances["a2"], avatar.keys["copy"]


def test_gradients_reach_every_parameter_group(avatar, template):
    rv, tr, fa = _frame(template)
    avatar.zero_grad()
    out = avatar(_camera((64, 80)), rv, tr, "b", fa)
    (out["rgb"].square().sum() + out["alpha"].sum()).backward()
    app = avatar.appearance("b")
    assert app.texture.atlas.grad.abs().sum() > 0 and app.latent.grad.abs().sum() > 0
    for name, p in list(avatar.generator.named_parameters()) + list(avatar.face.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert avatar.appearance("outfit.v1").latent.grad is None  # other appearances are untouched


def _target(avatar, cam, rv, tr, fa):
    """A target view: colours that vary smoothly over the rest-space surface, black background."""
    verts, _, _ = avatar.pose(rv, tr, fa)
    r = avatar.rasterizer(verts, cam)
    col = 0.5 + 0.4 * torch.sin(r.canonical * torch.tensor([9.0, 7.0, 5.0]) + torch.tensor([0.0, 1.0, 2.0]))
    return r.image(col), r.mask[None].float()


@pytest.mark.parametrize("mode", ["off", "on"])
def test_learns_a_view(template, mode):
    """Fitting one 48 x 64 view for 100 Adam steps lowers the loss by at least 20x (both numeric paths;
    measured ~50x)."""
    torch.manual_seed(1)
    av = TextureAvatar(template, {}, ["a"], TextureConfig(**SMALL, autocast=mode))
    rv, tr, fa = _frame(template, seed=2)
    cam = _camera()
    target, mask = _target(av, cam, rv, tr, fa)
    opt = torch.optim.Adam([{"params": av.appearances.parameters(), "lr": 3e-2},
                            {"params": list(av.generator.parameters()) + list(av.face.parameters()), "lr": 1e-2}])  # fmt: skip
    losses = []
    for _ in range(100):
        out = av(cam, rv, tr, "a", fa)
        loss = (out["rgb"] - target).square().mean() + (out["alpha"] - mask).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 20, (first, last)


def test_sizes_and_config(template):
    av = TextureAvatar(template, {}, ["a"])
    assert av.shared_bytes() <= 20e6
    assert av.appearance("a").nbytes() <= 4e6
    assert av.config.in_channels == 16 + 1 + 5 + 8
    with pytest.raises(ConfigError, match="texture"):
        TextureConfig(texture="mesh")
    with pytest.raises(ConfigError, match="raster"):
        TextureConfig(raster="opengl")
    with pytest.raises(ConfigError, match="autocast"):
        TextureConfig(autocast="maybe")
    with pytest.raises(ConfigError, match="widths"):
        TextureConfig(widths=(8,))
    assert TextureConfig(widths=[8, 16]).widths == (8, 16)  # from JSON: a list
