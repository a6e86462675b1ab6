"""The temporal discriminator term: triplets, discriminator steps as explicit state, ramped loss."""

from __future__ import annotations

import pytest
import torch

from perennial.avatar.texture.model import TextureAvatar, TextureConfig
from perennial.capture.synth import SynthConfig, synthesize
from perennial.errors import ConfigError
from perennial.learn.temporal_gan import TemporalGAN, TemporalGANConfig, TripletPatchGAN, triplets
from perennial.learn.texture_terms import TrainingImages

SMALL = dict(texture_size=32, texture_channels=8, latent_dim=8, face_channels=4, face_hidden=8, widths=(8, 12, 16))  # fmt: skip


@pytest.fixture(scope="module")
def setup(template, tmp_path_factory):
    cap = synthesize(tmp_path_factory.mktemp("gan") / "cap",
                     SynthConfig(cameras=2, frames=4, size=48, supersample=1, motion="walk", test_camera_every=0,
                                 test_frame_every=4), progress=False)  # fmt: skip
    pixels, _ = cap.read_split("train")
    torch.manual_seed(0)
    avatar = TextureAvatar(
        template, cap.body_info.get("phenotype"), [cap.appearance], TextureConfig(**SMALL)
    )
    return avatar, TrainingImages(cap, pixels, template, avatar.phenotype), cap.appearance


def _term(setup, **kw):
    avatar, images, name = setup
    cfg = dict(every=1, crop=32, lr=2e-3, ramp_start=0, ramp_steps=1) | kw
    return TemporalGAN(avatar, images, name, TemporalGANConfig(**cfg))


def test_triplets_are_training_views_at_consecutive_frames(setup):
    _, images, _ = setup
    # frames 0-2 train (frame 3 held out): only frame 1 has both neighbours, on each camera
    found = {tuple(images.images[i].key for i in t) for t in triplets(images)}
    assert found == {((c, 0), (c, 1), (c, 2)) for c in ("cam00", "cam01")}
    assert TripletPatchGAN(8)(torch.rand(2, 9, 32, 32)).shape == (2, 1, 6, 6)
    with pytest.raises(ConfigError, match="temporal_gan.crop"):
        TemporalGANConfig(crop=4)


def test_discriminator_learns_real_from_fake_and_resumes(setup):
    term = _term(setup)
    avatar, images, name = setup
    state = term.init_state(3)
    assert {"d_step", "rng"} <= set(state) and any(k.startswith("m.") for k in state)

    def margin(st):
        """Mean D logit of the real triplets minus that of the rendered ones: every triplet, the window
        centred on the person as the term draws them (without the jitter)."""
        diffs = []
        for ip, im, inx in term.triplets:
            ims = images.images
            x0, y0, x1, y1 = images.body_boxes[im]
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            crop = (max(0, min(cx - 16, 16)), max(0, min(cy - 16, 16)), 32, 32)
            sl = (slice(None), slice(crop[1], crop[1] + 32), slice(crop[0], crop[0] + 32))
            with torch.no_grad():
                fake = avatar(
                    ims[im].camera,
                    ims[im].rotvec,
                    ims[im].translation,
                    name,
                    ims[im].facial,
                    crop=crop,
                )
            real = torch.cat([ims[ip].rgb[sl], ims[im].rgb[sl], ims[inx].rgb[sl]])[None]
            fake = torch.cat([ims[ip].rgb[sl], fake["rgb"], ims[inx].rgb[sl]])[None]
            diffs.append(float(term.score(st, real).mean() - term.score(st, fake).mean()))
        return sum(diffs) / len(diffs)

    before = margin(state)
    for step in range(1, 31):  # step 0 is the start of the ramp: weight 0
        losses, state = term(step, state)
        assert set(losses) == {"temporal_gan"}
    assert float(state["d_step"]) == 30
    after = margin(state)
    assert after > 0.25 and after > before + 0.25, (before, after)  # measured: -0.003 -> 0.54
    # the avatar gets a gradient from the adversarial loss
    avatar.zero_grad()
    losses, _ = term(31, state)
    losses["temporal_gan"].backward()
    assert avatar.appearance(name).texture.atlas.grad.abs().sum() > 0
    # the state is everything: a fresh term continues exactly as this one does
    a_losses, a_state = term(32, state)
    b_losses, b_state = _term(setup)(32, state)
    assert torch.equal(a_losses["temporal_gan"], b_losses["temporal_gan"])
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state if k != "rng")


def test_ramp_and_off(setup):
    term = _term(setup, ramp_start=4, ramp_steps=4, every=2)
    state = term.init_state(0)
    losses, state = term(
        2, state
    )  # before the ramp: the discriminator learns, the avatar is not pushed
    assert losses == {} and float(state["d_step"]) == 1
    assert term(3, state) == ({}, state)  # not a discriminator step
    assert term.ramp(6) == 0.5 and term.ramp(100) == 1.0
    off = _term(setup, every=0)
    st = off.init_state(0)
    assert set(st) == {"rng"} and off(0, st) == ({}, st)


def test_attention_gain_learns_at_its_own_rate(setup, template):
    """plan() puts the dual attention's gain in its own group at attention_gain_lr x the shared rate."""
    from perennial.learn.texture_method import CropConfig, TextureTrainConfig, plan

    _, images, name = setup
    cfg = TextureTrainConfig(crop=CropConfig(perceptual_stages=0), attention_gain_lr=0.25)
    avatar = TextureAvatar(template, {}, [name], TextureConfig(**SMALL, temporal_attention=True))
    groups, _ = plan(avatar, name, images, None, None, cfg)
    params, lr = groups["attention_gain"]
    assert params == [avatar.attention.gain] and lr == 0.25 * cfg.lr["shared"]
    assert all(p is not avatar.attention.gain for p in groups["shared"][0])
    assert (
        "attention_gain" not in plan(setup[0], name, images, None, None, cfg)[0]
    )  # no attention: no group
    with pytest.raises(ConfigError, match="attention_gain_lr"):
        TextureTrainConfig(attention_gain_lr=-1.0)
    # the rest of the attention: in the shared group at 1 x, in a group of its own otherwise
    rest = {id(p) for p in avatar.attention.parameters() if p is not avatar.attention.gain}
    assert "attention" not in groups and rest <= {id(p) for p in groups["shared"][0]}
    slow, _ = plan(avatar, name, images, None, None, TextureTrainConfig(crop=cfg.crop, attention_lr=0.1))
    params, lr = slow["attention"]
    assert {id(p) for p in params} == rest and lr == 0.1 * cfg.lr["shared"]
    assert not rest & {id(p) for p in slow["shared"][0]}
    with pytest.raises(ConfigError, match="attention_lr"):
        TextureTrainConfig(attention_lr=-0.5)
