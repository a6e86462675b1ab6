"""Motion Distribution Align: per-bone projection onto the training range, the optional learned
decoder, and the semantic-preservation figure of ``bench ood``."""

import math

import pytest
import torch

from perennial.body.rig import ANNY_BONES
from perennial.errors import PerennialError
from perennial.evaluate.align_figures import semantic_preservation
from perennial.motion.align import AlignConfig, PoseRange, jerk, train_aligner, training_inputs
from perennial.motion.prior import default_prior
from perennial.motion.procedural import procedural_motion

FOREARM = ANNY_BONES.index("lowerarm01.R")
THIGH = ANNY_BONES.index("upperleg01.L")


def _wave_and_walk():
    wave, _ = procedural_motion("wave", 30)
    walk, _ = procedural_motion("walk", 30)
    return wave, walk


def test_pose_range_keeps_inside_and_bounds_outside():
    wave, walk = _wave_and_walk()
    rng = PoseRange(wave, still=0.03)
    assert (
        rng.moved[FOREARM].sum() == 1 and not rng.moved[THIGH].any()
    )  # the wave bends the elbow only
    assert torch.allclose(
        rng.project(wave, 0.3), wave, atol=1e-5
    )  # training poses are inside: unchanged
    lo, hi = rng.lo - 1e-5, rng.hi + 1e-5
    for margin in (0.0, 0.3):
        c = rng.coords(rng.project(walk, margin))
        assert ((c >= lo - margin) & (c <= hi + margin)).all()
    # soft: a coordinate beyond the border is squashed monotonically, not clipped
    x = walk.clone()
    x[:, THIGH, 0] = torch.linspace(-1.0, 1.0, 30)
    t = rng.coords(rng.project(x, 0.3))[:, THIGH].abs().max(-1).values
    assert (t.diff()[15:] > 0).all() and float(t.max()) < 0.3


def test_alignment_follows_covered_limbs_and_pulls_the_others_in():
    wave, walk = _wave_and_walk()
    aligner = train_aligner(default_prior(), wave, AlignConfig())
    # a walk whose right forearm waves inside the training range, but at its own pace
    drive = walk.clone()
    drive[:, FOREARM] = wave[(torch.arange(30) * 2) % 30, FOREARM]
    out = aligner.align(drive)
    assert out.shape == drive.shape and torch.equal(out[:, 0], drive[:, 0])
    sp = semantic_preservation(wave, drive, out)
    assert (
        sp["dofs_body"] == 1 and sp["correlation_body"] > 0.99
    )  # the covered elbow follows the driving one
    rng = PoseRange(wave, 0.03)
    thigh_before = rng.coords(drive)[:, THIGH].norm(dim=-1).max()
    thigh_after = rng.coords(out)[:, THIGH].norm(dim=-1).max()
    assert thigh_before > 0.4 and thigh_after < 0.3  # the stride (never in training) is pulled in
    assert torch.allclose(
        aligner.align(wave), wave, atol=1e-5
    )  # training poses come back unchanged
    squat, _ = procedural_motion("squat", 30)
    assert jerk(aligner.align(squat), 30.0) < jerk(squat, 30.0)
    # a large swing squashed frame by frame has steeper turns: the walk's jerk may rise, but stays bounded
    assert jerk(aligner.align(walk), 30.0) < 2 * jerk(walk, 30.0)


def test_learned_decoder_learns_the_projection_and_stays_in_range():
    wave, walk = _wave_and_walk()
    prior = default_prior()
    cfg = AlignConfig(decoder=True, steps=400, pool=4096)
    aligner = train_aligner(prior, wave, cfg)
    # held-out inputs drawn like its training inputs (another seed): limbs of bank poses, noise
    x, xp = training_inputs(wave, cfg, 512, torch.Generator().manual_seed(123))
    target = aligner.range.project(x, cfg.margin)
    with torch.no_grad():
        out = aligner.decode(x, prior.encode(x)[0], prior.encode(xp)[0])
    before = float(
        (x - target)[:, 1:].norm(dim=-1).mean()
    )  # the decoder's starting point: the input itself
    after = float((out - target)[:, 1:].norm(dim=-1).mean())
    assert (
        after < 0.85 * before
    )  # measured 0.79 (1500 steps: 0.64): a coarse copy, hence off by default
    c = aligner.range.coords(aligner.align(walk))
    assert ((c >= aligner.range.lo - 0.3 - 1e-5) & (c <= aligner.range.hi + 0.3 + 1e-5)).all()


def test_semantic_preservation_known_values_and_errors():
    wave, walk = _wave_and_walk()
    same = semantic_preservation(wave, wave, wave)
    assert same["correlation"] == pytest.approx(1.0) and same["dofs_body"] >= 1
    late = semantic_preservation(wave, wave, wave.roll(15, 0))  # half a wave late: anti-correlated
    assert late["correlation_body"] < -0.9
    none = semantic_preservation(wave, walk, walk)  # the walk moves no DOF the wave covers
    assert none["dofs"] == 0 and math.isnan(none["correlation"])
    with pytest.raises(PerennialError):
        train_aligner(default_prior(), wave[:1])
    with pytest.raises(PerennialError):
        train_aligner(default_prior(), wave).align(wave[0])


def test_bench_ood_tables_and_flat_figures():
    from perennial.evaluate.ood_bench import OodBenchConfig, _flat, format_summary, motion_figures
    from perennial.motion.align import AlignConfig

    wave, walk = _wave_and_walk()
    c = OodBenchConfig(variants=("texture",), align_margins=(0.3,))
    fid = {"fid": 50.0, "kid": 0.03, "kid_std": 0.002, "n": 8}
    q = {"psnr": 30.0, "lpips": 0.05}
    avatar = {
        "train_s": 1.0,
        "id": q,
        "ood": q,
        "aligned": q,
        "fid_ood": fid,
        "fid_ood_aligned": fid,
    }
    res = {"config": {"aligned_truth": True}, "numeric_path": "cpu", "avatars": {"texture": avatar},
           "motions": {"walk": motion_figures(wave, walk)}, "retrieval": {}, "seconds": 1.0, "prior": None,
           "align_sweep": {"@0.3": {"walk": motion_figures(wave, walk, align=AlignConfig(margin=0.3))}}}  # fmt: skip
    text = format_summary(res)
    assert "| walk | default |" in text and "| walk | 0.3 |" in text and "aligned PSNR" in text
    flat = _flat(res)
    assert flat["texture.fid_aligned_truth"] is None and flat["texture.fid_ood_aligned@0.3"] is None
    assert flat["motion.walk.dist_after"] < 0.5 * flat["motion.walk.dist_before"]
    assert (
        flat["motion@0.3.walk.dist_after"] > flat["motion.walk.dist_after"]
    )  # a margin keeps more motion
    with pytest.raises(Exception, match="variant"):
        OodBenchConfig(variants=("mesh",))
    assert c.variants == ("texture",)
