"""Feature maps of the texture avatar: neural texture, face map, hand map."""

from __future__ import annotations

import pytest
import torch

from perennial.avatar.texture.face import FaceEncoder
from perennial.avatar.texture.hands import HandMap
from perennial.avatar.texture.raster import SurfaceRasterizer, crop_camera
from perennial.avatar.texture.texture import NeuralTexture
from perennial.body.rig import ANNY_BONES, ANNY_FACIAL_ACTIONS
from perennial.render.camera import Camera


@pytest.fixture(scope="module")
def body(template):
    rest = template.rest_state()
    rast = SurfaceRasterizer(rest.vertices, template.faces, template.uvs, template.uv_faces)
    return template, rest, rast


def _pose(template, rest, rv=None, facial_actions=None):
    if rv is None:
        rv = torch.zeros(1, template.num_bones, 3)
    fa = None if facial_actions is None else facial_actions[None]
    verts, transforms = template.pose_rest(rv, torch.tensor([[0.0, 0.0, 0.9]]), rest, facial_actions=fa)
    return verts[0], transforms[0]


def _camera_at(point, size=64, dist=0.5, fov=30.0):
    """A camera in front of (-Y) a world point."""
    p = torch.as_tensor(point, dtype=torch.float32)
    return Camera.look_at(p + torch.tensor([0.0, -dist, 0.0]), p, size, size, fov_deg=fov)


@pytest.mark.parametrize("kind", ["uv", "triplane"])
def test_texture_lookup_shapes_and_gradient(kind):
    tex = NeuralTexture(kind, channels=6, size=16)
    g = torch.Generator().manual_seed(0)
    uv, pts = torch.rand(50, 2, generator=g), torch.rand(50, 3, generator=g) * 2 - 1
    f = tex(uv, pts)
    assert f.shape == (50, 6) and f.dtype == torch.float32
    f.square().sum().backward()
    p = next(tex.parameters())
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert tex(uv[:0], pts[:0]).shape == (0, 6)


def test_uv_texture_reads_the_atlas_as_an_image():
    tex = NeuralTexture("uv", channels=1, size=4, init_std=0.0)
    with torch.no_grad():
        tex.atlas[0, 0] = torch.arange(16.0).view(4, 4)  # row 0 is the top (v = 1)
    # texel centres: u = (col + 0.5) / 4, v = 1 - (row + 0.5) / 4
    uv = torch.tensor([[0.125, 0.875], [0.875, 0.125], [0.375, 0.625]])
    assert torch.allclose(tex(uv)[:, 0], torch.tensor([0.0, 15.0, 5.0]), atol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        NeuralTexture("sphere")
    with pytest.raises(ValueError, match="canonical"):
        NeuralTexture("triplane", channels=2, size=4)(uv)


def test_face_map_follows_facial_actions_and_is_zero_off_the_face(body):
    template, rest, rast = body
    basis = template.facial_basis(rest)
    weight = (basis.norm(dim=-1).amax(0) > 1e-4).float()
    verts, _ = _pose(template, rest)
    cam = _camera_at(verts[weight > 0].mean(0), size=64, dist=0.6)
    enc = FaceEncoder(out_channels=4, hidden=8)
    fa = torch.zeros(52)
    fa[ANNY_FACIAL_ACTIONS.index("jawOpen")] = 1.0
    fa[ANNY_FACIAL_ACTIONS.index("mouthSmileLeft")] = 0.7
    maps = []
    for actions in (None, fa):
        verts, _ = _pose(template, rest, facial_actions=actions)
        r = rast(verts, cam)
        offsets = None if actions is None else (actions @ basis.view(52, -1)).view(-1, 3)
        m = enc(r, template.faces, weight, offsets)
        assert m.shape == (4, 64, 64)
        face_px = r.image(r.interpolate(weight[:, None], template.faces))[0] > 0
        assert face_px.sum() > 300  # the face fills much of this close-up
        assert (m[:, ~face_px] == 0).all()  # zero off the face and off the body
        maps.append((m, face_px))
    (m0, p0), (m1, p1) = maps
    both = p0 & p1
    assert (m1 - m0)[:, both].abs().mean() > 1e-3  # the expression changes the features
    m1.square().sum().backward()
    assert enc.conv1.weight.grad.abs().sum() > 0 and enc.conv2.weight.grad.abs().sum() > 0
    # a full-body view with no face pixels visible from behind gives all zeros
    back = Camera.look_at([0.0, 3.0, 1.0], [0.0, 0.0, 0.9], 48, 48, fov_deg=50.0)
    verts, _ = _pose(template, rest, facial_actions=fa)
    r = rast(verts, back)
    z = enc(r, template.faces, weight, (fa @ basis.view(52, -1)).view(-1, 3))
    face_px = r.image(r.interpolate(weight[:, None], template.faces))[0] > 0
    assert (z[:, ~face_px] == 0).all()


def test_hand_map_follows_finger_bones(body):
    template, rest, rast = body
    hands = HandMap(template, rest, sigma=0.008)
    assert hands.rest_points.shape == (2, 5, 6, 3)
    verts, T = _pose(template, rest)
    wrist = hands.joints(T)[0, 0, 0]
    tips = hands.joints(T)[0, :, -1]
    # the tips lie beyond the last knuckles, within a hand's length of the wrist
    assert ((tips - wrist).norm(dim=-1) > 0.08).all() and ((tips - wrist).norm(dim=-1) < 0.25).all()
    cam = _camera_at(hands.joints(T)[0, 2, 2], size=64, dist=0.45)
    r = rast(verts, cam)
    m = hands(r, cam, T)
    assert m.shape == (5, 64, 64) and (m >= 0).all() and (m <= 1).all()
    hand_px = hands.face_side[r.face_map.clamp_min(0)] >= 0
    hand_px &= r.mask
    assert hand_px.sum() > 200
    assert (m[:, ~hand_px] == 0).all()  # masked to the visible hand
    assert (m.amax(dim=(1, 2)) > 0.5).all()  # every finger draws a line on the hand
    # bending the left index finger moves its channel, not the little finger's
    rv = torch.zeros(1, template.num_bones, 3)
    for b in ("finger2-1.L", "finger2-2.L"):
        rv[0, ANNY_BONES.index(b)] = torch.tensor([0.0, 0.9, 0.0])
    verts2, T2 = _pose(template, rest, rv=rv)
    m2 = hands(rast(verts2, cam), cam, T2)
    change = (m2 - m).abs().sum(dim=(1, 2))
    assert change[1] > 10 * change[4] and change[1] > 5.0
    # crop-aware: a window equals the crop of the full map
    x0, y0, w, h = 10, 12, 40, 36
    rc = rast(verts, cam, crop=(x0, y0, w, h))
    mc = hands(rc, crop_camera(cam, (x0, y0, w, h)), T)
    assert torch.allclose(mc, m[:, y0 : y0 + h, x0 : x0 + w], atol=1e-5)
