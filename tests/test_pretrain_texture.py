"""Pretraining texture avatars across identities (perennial.learn.pretrain_texture): shared networks,
learning, the texture prior file, create --method texture --prior, and priors of the wrong method."""

import pytest
import torch

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
    run = texture_people(people, cfg, progress=False)
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
