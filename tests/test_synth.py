import numpy as np
import pytest

from perennial.capture import read_capture
from perennial.capture.outfit import Outfit
from perennial.capture.synth import SynthConfig, synthesize
from perennial.motion.procedural import MOTIONS, procedural_motion


def _synth(path, **kw):
    cfg = dict(cameras=2, frames=2, size=32, supersample=2, test_camera_every=2, test_frame_every=2)
    cfg.update(kw)
    return synthesize(path, SynthConfig(**cfg), progress=False)


def test_synth_writes_a_valid_capture(tmp_path, template):
    cap = _synth(tmp_path / "a")
    again = read_capture(tmp_path / "a")
    assert len(again.views) == 4 and again.appearance == "outfit-a"
    # camera 1 is held out entirely; camera 0 holds out frame 1 (a novel pose)
    split = {(v.camera, v.frame): v.split for v in cap.views}
    assert split == {("cam00", 0): "train", ("cam00", 1): "test", ("cam01", 0): "test", ("cam01", 1): "test"}
    for v in cap.views:
        img, mask = cap.load_image(v).numpy(), cap.load_mask(v).numpy()
        person = mask > 0.5
        assert 0.05 < person.mean() < 0.6  # a person fills part of the frame
        assert img[~(mask > 0)].max() == 0  # black background outside the mask
        assert img[person].mean() > 0.1  # and a lit person inside it
    # the feet stand on the floor (frame 0 of the built-in walk is its widest stride,
    # where its approximate hip drop puts the lower foot ~1.2 cm into the floor)
    out = template(cap.body.rotvec[:1], cap.body.translation[:1])
    assert abs(float(out.vertices[0, :, 2].min())) < 0.015


def test_synth_is_deterministic_and_seeded(tmp_path, template):
    a, b = _synth(tmp_path / "a"), _synth(tmp_path / "b")
    c = _synth(tmp_path / "c", appearance="outfit-b")
    for va, vb, vc in zip(a.views, b.views, c.views):
        assert (a.load_image(va) == b.load_image(vb)).all()
        assert (a.load_mask(va) == c.load_mask(vc)).all()  # same body, same motion
    diff = [(a.load_image(va) - c.load_image(vc)).abs().mean() for va, vc in zip(a.views, c.views)]
    assert min(diff) > 0.01  # another outfit


def test_outfits_are_seeded_descriptions():
    assert Outfit.from_name("x", 1) == Outfit.from_name("x", 1)
    looks = {Outfit.from_name(f"o{i}").to_dict()["top"]["pattern"] for i in range(30)}
    assert len(looks) >= 4


def test_procedural_motions():
    for name in MOTIONS:
        rv, off = procedural_motion(name, 8)
        assert rv.shape == (8, 104, 3) and off.shape == (8, 3)
        assert rv.abs().max() > 0.1  # something moves
        assert np.isfinite(rv.numpy()).all()
    with pytest.raises(ValueError, match="unknown motion"):
        procedural_motion("dance", 4)
    # a 2-frame clip (the few-shot captures' training frame + held-out frame) has two poses
    for name in ("walk", "wave", "squat", "turn"):
        rv, _ = procedural_motion(name, 2)
        assert (rv[0] - rv[1]).abs().max() > 0.3, name


def test_synth_refuses_bad_arguments(tmp_path, template):
    with pytest.raises(ValueError, match="motion"):
        _synth(tmp_path / "x", motion="dance")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        _synth(tmp_path / "y")
    assert (tmp_path / "y" / "keep.txt").read_text() == "mine"
