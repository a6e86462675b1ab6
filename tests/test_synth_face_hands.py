"""Synthetic captures exercise the face and hands: animated facial actions and fingers, painted detail."""

import dataclasses
import filecmp

import numpy as np
import pytest
import torch

from perennial.body.rig import ANNY_BONES
from perennial.capture.outfit import Outfit
from perennial.capture.synth import FINGER_BONES, BodyPainter, SynthConfig, ring_cameras, synthesize
from perennial.errors import ConfigError
from perennial.motion.face_hands import (
    EXPRESSIONS,
    FINGER_MAX_FLEXION,
    HAND_SHAPES,
    facial_action_track,
    hand_shape_track,
)

BONE = {b: i for i, b in enumerate(ANNY_BONES)}


def _synth(path, **kw):
    cfg = dict(cameras=2, frames=6, size=32, supersample=1, test_camera_every=0, test_frame_every=0)
    cfg.update(kw)
    return synthesize(path, SynthConfig(**cfg), progress=False)


def _static_clip(path, template, frames=12):
    """A standing pose held still, as a clip file (no finger motion of its own)."""
    from perennial.motion.clip import MotionClip

    rv, tr = template.rest_pose(frames)
    rv[:, BONE["upperarm01.L"], 1], rv[:, BONE["upperarm01.R"], 1] = 0.55, -0.55
    tr[:, 2] = 0.87
    return MotionClip(rv, tr, fps=30.0, source="still").save(path)


def _box(template, vertices, camera, select, pad=1):
    """Pixel box (v0, v1, u0, u1) around the projected ``vertices[select]``."""
    uv, _ = camera.project(vertices[select])
    (u0, v0), (u1, v1) = uv.min(0).values.floor().long() - pad, uv.max(0).values.ceil().long() + 1 + pad
    return int(v0), int(v1), int(u0), int(u1)


def _part(template, name):
    return template.part_labels == template.part_names.index(name)


def test_tracks_are_seeded_bounded_and_varied():
    a, b = facial_action_track(60, 30.0, seed=3), facial_action_track(60, 30.0, seed=3)
    assert a.shape == (60, 52) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, facial_action_track(60, 30.0, seed=4))
    assert a.min() >= 0 and a.max() <= 1
    assert (a.max(1).values > 0.3).float().mean() > 0.9  # most frames show a visible expression
    assert (a.std(0) > 0.1).sum() >= 8  # many actions move
    assert all(0 <= w <= 1 for e in EXPRESSIONS.values() for w in e.values())
    h = hand_shape_track(60, 30.0, seed=3)
    assert h.shape == (60, 2, 6) and h.min() >= 0 and h.max() <= 1
    assert torch.equal(h, hand_shape_track(60, 30.0, seed=3))
    assert (h[:, :, :5].std(0) > 0.15).all()  # every finger of both hands curls and opens
    assert not torch.equal(h[:, 0], h[:, 1])  # the hands move independently
    assert len(HAND_SHAPES) >= 6


def test_capture_writes_facial_actions_and_moving_fingers(tmp_path, template):
    cap = _synth(tmp_path / "a", frames=10)
    fa, labels = cap.body.facial_actions, cap.body.facial_action_labels
    assert fa.shape == (10, 52) and labels == list(template.facial_action_names)
    assert fa.min() >= 0 and fa.max() <= 1 and (fa.std(0) > 0.05).sum() >= 5
    body = np.load(tmp_path / "a" / "body.npz")
    assert body["facial_actions"].dtype == np.float32
    # fingers: flexion up to ~80 degrees per joint (the thumb less), varying over frames
    fingers = cap.body.rotvec[:, list(FINGER_BONES)]
    angles = fingers.norm(dim=-1)
    assert angles.max() < np.radians(84) and angles.std(0).max() > 0.2
    thumbs = cap.body.rotvec[:, [BONE[f"finger1-{j}.{s}"] for j in (1, 2, 3) for s in "LR"]].norm(dim=-1)
    assert thumbs.max() < max(FINGER_MAX_FLEXION[0]) + 0.35
    # the hand really closes and opens: fingertip-to-wrist distance changes by centimetres
    out = template(cap.body.rotvec, cap.body.translation, facial_actions=fa)
    tips = [BONE[f"finger{k}-3.{s}"] for k in range(2, 6) for s in "LR"]
    wrists = [BONE[f"wrist.{s}"] for k in range(2, 6) for s in "LR"]
    reach = (out.joints[:, tips] - out.joints[:, wrists]).norm(dim=-1)  # (F, 8)
    assert (reach.max(0).values - reach.min(0).values).max() > 0.015
    # the face moved too: mouth and eye vertices differ from the neutral face of the same pose
    neutral = template(cap.body.rotvec, cap.body.translation)
    head = template.part_labels == template.part_names.index("head")
    assert (out.vertices[:, head] - neutral.vertices[:, head]).norm(dim=-1).max() > 0.005


def test_same_seed_same_bytes_other_seed_other_face(tmp_path, template):
    a = _synth(tmp_path / "a")
    _synth(tmp_path / "b")
    for sub in ("images/cam00", "images/cam01", "masks/cam00"):
        cmp = filecmp.dircmp(tmp_path / "a" / sub, tmp_path / "b" / sub)
        assert cmp.left_list and not cmp.diff_files, sub
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a" / sub, tmp_path / "b" / sub, cmp.common_files, shallow=False)  # fmt: skip
        assert not mismatch and not errors
    for name in ("body.npz", "capture.json", "synth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    c = _synth(tmp_path / "c", seed=1)
    assert not torch.equal(a.body.facial_actions, c.body.facial_actions)
    assert not torch.equal(a.body.rotvec[:, list(FINGER_BONES)], c.body.rotvec[:, list(FINGER_BONES)])


def test_animation_switches_off(tmp_path, template):
    cap = _synth(tmp_path / "off", animate_face=False, animate_fingers=False)
    assert cap.body.facial_actions.abs().max() == 0  # a neutral face, still written
    assert cap.body.facial_action_labels == list(template.facial_action_names)
    assert cap.body.rotvec[:, list(FINGER_BONES)].abs().max() == 0
    face_only = _synth(tmp_path / "face", animate_fingers=False)
    assert face_only.body.facial_actions.max() > 0.3
    assert face_only.body.rotvec[:, list(FINGER_BONES)].abs().max() == 0
    for bad in ("yes", 1):
        with pytest.raises(ConfigError, match="animate_face"):
            SynthConfig(animate_face=bad)


def test_clip_files_get_fingers_unless_they_have_their_own(tmp_path, template):
    from perennial.motion.clip import MotionClip

    clip = _static_clip(tmp_path / "still.npz", template, frames=6)
    cap = _synth(tmp_path / "a", motion=str(clip))
    assert cap.body.rotvec[:, list(FINGER_BONES)].std(0).max() > 0.1
    off = _synth(tmp_path / "b", motion=str(clip), animate_fingers=False)
    assert off.body.rotvec[:, list(FINGER_BONES)].abs().max() == 0
    own = MotionClip.load(clip)
    own.rotvec[:, BONE["finger2-1.L"], 0] = 0.5  # a clip with its own finger motion keeps it
    own.save(tmp_path / "own.npz")
    kept = _synth(tmp_path / "c", motion=str(tmp_path / "own.npz"))
    assert torch.allclose(kept.body.rotvec[:, list(FINGER_BONES)], own.rotvec[:6, list(FINGER_BONES)])


def test_expressions_change_face_pixels_only(tmp_path, template):
    """A still body: between two frames of one camera only the face (and nothing else) changes."""
    clip = _static_clip(tmp_path / "still.npz", template)
    cap = _synth(tmp_path / "a", motion=str(clip), frames=12, cameras=1, size=160, supersample=2, animate_fingers=False)  # fmt: skip
    fa = cap.body.facial_actions
    d = torch.cdist(fa, fa)
    f0, f1 = divmod(int(d.argmax()), len(fa))  # the two most different faces
    assert d[f0, f1] > 0.5
    views = {v.frame: v for v in cap.views}
    img0, img1 = (cap.load_image(views[f]).numpy() for f in (f0, f1))
    with torch.no_grad():
        verts = template(cap.body.rotvec[f0 : f0 + 1], cap.body.translation[f0 : f0 + 1]).vertices[0]
    v0, v1, u0, u1 = _box(template, verts, cap.cameras["cam00"], _part(template, "head"), pad=3)  # the chin moves the neck a little
    diff = np.abs(img0 - img1).sum(-1)
    inside = diff[v0:v1, u0:u1]
    outside = diff.copy()
    outside[v0:v1, u0:u1] = 0
    assert inside.max() > 0.3 and (inside > 0.05).sum() >= 8  # a visible change of the face
    assert outside.max() == 0  # and none elsewhere


def _colour_std(painter, verts, camera, box):
    """Colour variation of the person's fully covered pixels in ``box``: the std of their
    chromaticity ``rgb / (r + g + b)`` (shading changes brightness, not chromaticity),
    averaged over the three channels."""
    rgb, mask = painter.render(verts, camera)
    v0, v1, u0, u1 = box
    pix = rgb[v0:v1, u0:u1][mask[v0:v1, u0:u1] == 255].astype(np.float32) / 255
    assert len(pix) >= 30
    return float((pix / pix.sum(-1, keepdims=True).clip(1e-3)).std(0).mean())


# freckles, bare hands and a watch; a beard and a ring; make-up and gloves
@pytest.mark.parametrize("name", ["outfit-a", "outfit-b", "outfit-e"])
def test_face_and_hands_carry_detail(template, name):
    """Colour variation inside the face and hand boxes at 256 px, with and without the outfit's detail.

    Measured (outfits a, b, e): face 0.026 / 0.044 / 0.054 with detail against 0.004 / 0.010 / 0.005
    without; hands 0.010-0.11 against 0.0006-0.002."""
    rv, tr = template.rest_pose(1)
    rv[0, BONE["upperarm01.L"], 1], rv[0, BONE["upperarm01.R"], 1] = 0.35, -0.35
    tr[0, 2] = 0.87
    with torch.no_grad():
        rest = template(*template.rest_pose(1)).rest_vertices[0]
        verts = template(rv, tr).vertices[0]
    outfit = Outfit.from_name(name, 0)
    assert outfit.detail is not None
    painters = [BodyPainter(template, o, rest, 2) for o in (outfit, dataclasses.replace(outfit, detail=None))]
    cam = ring_cameras(1, 256, 3.0, 36.0, target_z=0.85)["cam00"]
    # the face: the front of the head below the hairline
    face = _part(template, "head") & (rest[:, 1] < -0.1) & (rest[:, 2] < rest[:, 2].max() - 0.08)
    box = _box(template, verts, cam, face, pad=0)
    detail, plain = (_colour_std(p, verts, cam, box) for p in painters)
    assert detail > 0.02 and detail > 2.5 * plain, (detail, plain)
    for hand in ("hand.L", "hand.R"):
        box = _box(template, verts, cam, _part(template, hand))
        detail, plain = (_colour_std(p, verts, cam, box) for p in painters)
        assert detail > 0.006 and detail > 3 * plain, (hand, detail, plain)
