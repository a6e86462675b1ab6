"""Pretraining texture avatars across identities (perennial.learn.pretrain_texture): shared networks,
learning, the texture prior file, create --method texture --prior, and priors of the wrong method."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from perennial.capture.synth import SynthConfig, synthesize
from perennial.learn.engine import EngineConfig
from perennial.learn.pretrain import (
    IdentityBatch,
    IdentityTerm,
    PretrainConfig,
    SyntheticPeople,
    pretrain,
)
from perennial.learn.prior_file import read_prior
from perennial.learn.texture_method import CropConfig


def _config(steps: int) -> PretrainConfig:
    return PretrainConfig(method="texture", engine=EngineConfig(steps=steps, checkpoint_every=0), batch=2,
                          crop=CropConfig(size=32, perceptual_stages=0), synthetic=SyntheticPeople(count=0))  # fmt: skip


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Two tiny captures of two people (other phenotypes, outfits and motions)."""
    root = tmp_path_factory.mktemp("tpeople")
    a = synthesize(
        root / "a", SynthConfig(cameras=2, frames=2, size=48, supersample=1), progress=False
    )
    b = synthesize(root / "b", SynthConfig(appearance="outfit-q", seed=3, motion="wave", cameras=2, frames=2, size=48,
                                           supersample=1, phenotype={"gender": 0.9, "age": 0.8, "muscle": 0.2,
                                                                     "weight": 0.7, "height": 0.3, "proportions": 0.5}),
                   progress=False)  # fmt: skip
    return [a.root, b.root]


def test_identities_share_the_networks_and_pretraining_learns(people):
    from perennial.learn.distributed import Dist
    from perennial.learn.engine import train
    from perennial.learn.pretrain_texture import texture_people

    cfg = _config(40)
    torch.manual_seed(0)
    run = texture_people(people, cfg.crop, cfg.learning_rates, progress=False)
    a, b = (p.avatar for p in run.people)
    assert a.generator is b.generator and a.face is b.face  # one set of networks ...
    assert a.phenotype != b.phenotype and not torch.equal(
        a.rest_vertices, b.rest_vertices
    )  # ... two bodies
    assert set(run.groups) == {"appearance", "shared"}
    shared = {id(p) for p in run.groups["shared"][0]}
    assert {id(p) for p in a.generator.parameters()} <= shared and {
        id(p) for p in a.face.parameters()
    } <= shared

    def l1() -> float:  # the same windows (seeds) before and after
        with torch.no_grad():
            return sum(float(p.losses(0, 1000 + k)["l1"]) for p in run.people for k in range(4))

    before = l1()
    term = IdentityTerm(
        IdentityBatch(run.shared, run.people, cfg.batch, Dist(), seed=0), tuple(cfg.weights)
    )
    train(run.shared, run.groups, [term], cfg.weights, cfg.engine, progress=False)
    after = l1()
    assert after < 0.7 * before, (before, after)


def test_texture_prior_and_create_from_it(people, tmp_path, template):
    from perennial.capture import read_capture
    from perennial.cli import main
    from perennial.learn.create import create_avatar
    from perennial.learn.methods import get_method, preset

    prior = tmp_path / "prior"
    pretrain(prior, people, _config(3), progress=False)
    doc, tensors = read_prior(prior)
    assert doc["method"] == "texture" and doc["provenance"]["method"] == "texture"
    assert {k.split(".")[0] for k in tensors} == {"generator", "face", "appearance"}
    cap = read_capture(people[1])
    cfg = preset(
        "texture",
        "create",
        steps=2,
        prior=str(prior),
        meta=None,
        **{"crop.size": 32, "crop.perceptual_stages": 0},
    )
    avatar = get_method("texture").new(template, cap, cfg)
    for k, v in avatar.generator.state_dict().items():
        assert torch.equal(v, tensors[f"generator.{k}"]), k
    for k, v in avatar.face.state_dict().items():
        assert torch.equal(v, tensors[f"face.{k}"]), k
    assert torch.equal(avatar.appearance(cap.appearance).latent, tensors["appearance.latent"])
    v = create_avatar(
        tmp_path / "av", cap, cfg, method="texture", progress=False, template=template
    )
    assert v.metrics["pretrained"]["identities"] == 2 and v.metrics["pretrained"]["steps_run"] == 3
    # a texture prior for a field avatar (and the other way round): exit 2, nothing left behind
    for method, av in (("field", tmp_path / "f"), ("texture", tmp_path / "t")):
        src = prior if method == "field" else tmp_path / "nowhere"
        assert main(["create", str(av), "--capture", str(people[0]), "--method", method, "--prior", str(src),
                     "--steps", "1", "--quiet"]) == 2  # fmt: skip
        assert not av.exists()


@pytest.mark.parametrize("autocast", ["on", "off"])
def test_two_gloo_ranks_equal_one_process(people, tmp_path, monkeypatch, autocast):
    """torchrun with 2 CPU ranks (DDP, gloo), 1 identity each, ends where 1 process with both ends
    (perceptual terms on: they run at step 0 and not at steps 1-2, so DDP sees unused parameters),
    on both numeric paths."""
    monkeypatch.setenv("PERENNIAL_AUTOCAST", autocast)
    one = tmp_path / "one"
    cfg = PretrainConfig(method="texture", engine=EngineConfig(steps=3, checkpoint_every=0), batch=2,
                         synthetic=SyntheticPeople(count=0))  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: with 2 threads convolutions sum in another order (Adam's
    # first steps magnify that to ~2e-5 on the weights)
    try:
        pretrain(one, people, cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "perennial.cli",
           "pretrain", str(out), "--method", "texture", "--captures", *map(str, people), "--synthetic", "0",
           "--steps", "3", "--batch", "2", "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(str(one / "prior.safetensors")), load_file(str(out / "prior.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=k)


def test_the_shipped_texture_prior(people, tmp_path, template):
    """--prior default for texture avatars: the prior in the package (docs/bench-prior/texture) reads and
    fits a texture avatar of another body."""
    from perennial.capture import read_capture
    from perennial.learn.methods import get_method, preset
    from perennial.learn.prior_file import DEFAULT_DIR, resolve_prior

    folder = resolve_prior("default", "texture")
    assert folder == DEFAULT_DIR / "prior-texture"
    doc, tensors = read_prior(folder)
    assert doc["method"] == "texture" and len(doc["provenance"]["identities"]) == 8
    assert (folder / "prior.safetensors").stat().st_size <= 50 * 2**20  # the limit for shipping
    cfg = preset("texture", "create", steps=1, prior="default", meta=None)
    avatar = get_method("texture").new(template, read_capture(people[1]), cfg)
    assert torch.equal(avatar.generator.state_dict()["head.weight"], tensors["generator.head.weight"])
    assert avatar.pretrained_info["identities"] == 8
