"""Retrieval index (faiss / hnswlib / usearch / torch) and retrieval-augmented training (RAF)."""

import numpy as np
import pytest
import torch

from perennial.errors import ConfigError
from perennial.learn.retrieval import Retrieval, RetrievalConfig
from perennial.motion.procedural import procedural_motion
from perennial.motion.retrieval import (
    BACKENDS,
    PART_BONES,
    SWAP_PARTS,
    PartIndex,
    RetrievalBank,
    descriptor,
    measure_backends,
)


def test_parts_cover_the_body_once():
    limbs = [b for p in SWAP_PARTS if p != "face" for b in PART_BONES[p]]
    assert len(limbs) == len(set(limbs))
    assert set(PART_BONES["body"]) <= set(limbs)
    assert len(PART_BONES["body"]) == 35 and len(PART_BONES["hand.L"]) == 19  # 15 finger bones, 4 metacarpals


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_finds_the_nearest(backend):
    pytest.importorskip({"faiss": "faiss", "hnswlib": "hnswlib", "usearch": "usearch"}.get(backend, "torch"))
    g = np.random.default_rng(0)
    x = g.normal(size=(500, 12)).astype(np.float32)
    q = x[:40] + 1e-3
    d, i = PartIndex(x, backend).search(q, 4)
    assert i.shape == (40, 4) and d.shape == (40, 4)
    assert (i[:, 0] == np.arange(40)).mean() >= 0.95  # each query's own vector first
    exact = np.sort(((q[:, None] - x[None]) ** 2).sum(-1), 1)[:, :4]
    assert np.allclose(np.sort(d, 1)[:, 0], exact[:, 0], atol=1e-3)


def test_bad_backend_and_config():
    with pytest.raises(ConfigError, match="backend"):
        PartIndex(np.zeros((3, 2), np.float32), "annoy")
    with pytest.raises(ConfigError, match="fraction"):
        RetrievalConfig(fraction=1.5)


def test_measure_backends_reports_every_installed_library():
    x = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    m = measure_backends(x, x[:10], k=3, repeats=1)
    assert m["torch.recall"] == 1.0 and m["faiss.recall"] == 1.0
    assert all(m[f"{b}.build_ms"] >= 0 and m[f"{b}.query_us"] > 0 for b in ("faiss", "torch"))


def _bank():
    walk, _ = procedural_motion("walk", 50)
    squat, _ = procedural_motion("squat", 50)
    faces = torch.rand(200, 52, generator=torch.Generator().manual_seed(0))
    return RetrievalBank(torch.cat([walk, squat]), faces, "torch")


def test_swaps_parts_for_neighbours_and_is_deterministic():
    bank = _bank()
    wave, _ = procedural_motion("wave", 4)
    faces = torch.rand(4, 52, generator=torch.Generator().manual_seed(1))
    frames = {k: (wave[k], faces[k]) for k in range(4)}
    never = Retrieval(RetrievalConfig(fraction=0.0, neighbours=3), frames, bank)
    g = torch.Generator().manual_seed(0)
    rv, fa = never(2, wave[2], faces[2], g)
    assert torch.equal(rv, wave[2]) and torch.equal(fa, faces[2])
    always = Retrieval(RetrievalConfig(fraction=1.0, neighbours=3), frames, bank)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    rv, fa = always(1, wave[1], faces[1], g1)
    rv2, fa2 = always(1, wave[1], faces[1], g2)
    assert torch.equal(rv, rv2) and torch.equal(fa, fa2)  # the draws come from the term's generator
    assert torch.equal(rv[0], wave[1][0])  # the root is never swapped
    for part in ("arm.R", "leg.L", "hand.L"):
        bones = list(PART_BONES[part])
        near = bank.neighbours(part, wave[1:2], None, 3)[0]
        assert any(torch.equal(rv[bones], bank.rotvec[int(j), bones]) for j in near)
    assert any(torch.equal(fa, bank.facial[int(j)]) for j in bank.neighbours("face", None, faces[1:2], 3)[0])
    # the retrieved right arm is the nearest one of the bank's: closer than a random bank pose
    d = descriptor("arm.R", rv[None]) - descriptor("arm.R", wave[1:2])
    assert np.abs(d).max() < np.abs(descriptor("arm.R", bank.rotvec) - descriptor("arm.R", wave[1:2])).max()


def test_condition_feeds_the_corrector_not_the_skinning(template):
    from perennial.avatar.field.model import FieldAvatar

    avatar = FieldAvatar(template, None, ["a"])
    wave, _ = procedural_motion("wave", 2)
    walk, _ = procedural_motion("walk", 2)
    tr = torch.tensor([0.0, 0.0, 0.9])
    plain = avatar.pose(wave[0], tr)
    # a fresh corrector is the identity: the condition changes nothing, the skinned pose is the frame's
    assert torch.equal(avatar.pose(wave[0], tr, walk[0]).vertices, plain.vertices)
    with torch.no_grad():
        avatar.corrector.mlp[-1].weight.normal_(std=1e-3, generator=torch.Generator().manual_seed(0))
    a, b = avatar.pose(wave[0], tr, walk[0]), avatar.pose(wave[0], tr, wave[0])
    assert torch.equal(b.vertices, avatar.pose(wave[0], tr).vertices)
    # the residual is read from the condition and added to the frame's own pose
    res = avatar.corrector.residual(walk[:1])[0]
    assert torch.allclose(a.rotvec[avatar.corrector.index], wave[0][avatar.corrector.index] + res)
    a.transforms.sum().backward()
    assert avatar.corrector.mlp[0].weight.grad.abs().sum() > 0


def test_field_learns_with_retrieval(tmp_path, template):
    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.evaluate.protocol import evaluate_avatar
    from perennial.learn.methods import fit, get_method, preset

    cap = synthesize(tmp_path / "cap", SynthConfig(cameras=3, frames=3, size=32, supersample=1, motion="wave",
                                                   test_camera_every=3, test_frame_every=0), progress=False)  # fmt: skip
    cfg = preset("field", "create", meta=None, steps=120, rays_per_step=256, checkpoint_every=0,
                 **{"retrieval.fraction": 0.5})  # fmt: skip
    avatar = get_method("field").new(template, cap, cfg)
    before = evaluate_avatar(avatar, cap, lpips_nets=("alex",), progress=False)["mean"]["psnr_bbox"]
    fit(avatar, cap, cfg)
    after = evaluate_avatar(avatar, cap, lpips_nets=("alex",), progress=False)["mean"]["psnr_bbox"]
    # +2.7 dB in a full suite run, a little more alone (what ran before moves the global RNG)
    assert after > before + 2.0
