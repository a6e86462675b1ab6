"""Pretraining across identities (perennial.learn.pretrain): the identity split, DDP on 2 CPU ranks
against one process, resume, the prior file and create --prior."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from perennial.capture.synth import SynthConfig, synthesize
from perennial.errors import ConfigError, PerennialError
from perennial.learn.distributed import identities_for
from perennial.learn.pretrain import IdentityBatch, PretrainConfig, SyntheticPeople, pretrain
from perennial.learn.prior_file import PriorError, read_prior

TINY = ["--synthetic", "0", "--steps", "3", "--batch", "2", "--rays", "96", "--samples", "4"]


def _config(steps: int = 3, checkpoint_every: int = 0) -> PretrainConfig:
    from perennial.learn.engine import EngineConfig

    return PretrainConfig(engine=EngineConfig(steps=steps, checkpoint_every=checkpoint_every), batch=2, rays_per_step=96,
                          samples=4, synthetic=SyntheticPeople(count=0))  # fmt: skip


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Two tiny captures of two people (other phenotypes, outfits and motions)."""
    root = tmp_path_factory.mktemp("people")
    a = synthesize(root / "a", SynthConfig(cameras=2, frames=2, size=32, supersample=1), progress=False)
    b = synthesize(root / "b", SynthConfig(appearance="outfit-q", seed=3, motion="wave", cameras=2, frames=2, size=32,
                                           supersample=1, phenotype={"gender": 0.9, "age": 0.8, "muscle": 0.2,
                                                                     "weight": 0.7, "height": 0.3, "proportions": 0.5}),
                   progress=False)  # fmt: skip
    return [a.root, b.root]


@pytest.fixture(scope="module")
def prior(people, tmp_path_factory):
    """A prior of 3 steps in this process (global batch 2, both people every step)."""
    out = tmp_path_factory.mktemp("prior") / "p"
    pretrain(out, people, _config(), progress=False)
    return out


def test_synthetic_people_are_drawn_from_annys_distribution():
    from perennial.learn.pretrain import draw_phenotypes

    four, two = draw_phenotypes(4, SyntheticPeople(), seed=1), draw_phenotypes(2, SyntheticPeople(), seed=1)
    assert four[:2] == two  # person i does not depend on how many are drawn
    assert len({p["gender"] for p in four}) == 4 and all(0 <= v <= 1 for p in four for v in p.values())


def test_identity_split_is_a_distributed_sampler():
    for world in (1, 2, 4):
        for step in range(7):
            shares = [identities_for(step, 5, 4, r, world, seed=3) for r in range(world)]
            union = sorted(i for s in shares for i in s)
            assert union == sorted(identities_for(step, 5, 4, 0, 1, seed=3))  # the same global batch at any world
            assert all(len(s) == 4 // world for s in shares)
    seen = [i for step in range(5) for i in identities_for(step, 5, 1, 0, 1, seed=3)]
    assert sorted(seen) == list(range(5))  # an epoch visits each identity once
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        identities_for(0, 5, 3, 0, 2, seed=0)


def test_two_gloo_ranks_equal_one_process(people, prior, tmp_path):
    """torchrun with 2 CPU ranks (DDP, gloo), 1 identity each, ends where 1 process with both ends."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "perennial.cli",
           "pretrain", str(out), "--captures", *map(str, people), *TINY, "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = load_file(str(prior / "prior.safetensors")), load_file(str(out / "prior.safetensors"))
    assert sorted(one) == sorted(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=1e-5, msg=k)
    # learning happened: the codes start at zero; the pose corrector is frozen by default (identity)
    assert one["appearance.geometry_code"].abs().max() > 1e-3
    assert one["corrector.mlp.6.weight"].abs().max() == 0
    doc = json.loads((out / "prior.json").read_text())
    prov = doc["provenance"]
    assert prov["processes"] == 2 and prov["steps_run"] == 3 and prov["batch"] == 2
    assert [p["phenotype"]["gender"] for p in prov["identities"]] == [0.5, 0.9]
    assert prov["perennial"] and prov["date"] and prov["seed"] == 0
    assert not (out / "checkpoint").exists()  # removed once the prior is written


def test_resume_continues_like_an_uninterrupted_run(people, tmp_path, monkeypatch):
    full = tmp_path / "full"
    pretrain(full, people, _config(steps=4), progress=False)
    out = tmp_path / "cut"
    forward = IdentityBatch.forward

    def dying(self, step):
        if step == 3:
            raise KeyboardInterrupt
        return forward(self, step)

    monkeypatch.setattr(IdentityBatch, "forward", dying)
    with pytest.raises(KeyboardInterrupt):
        pretrain(out, people, _config(steps=4, checkpoint_every=2), progress=False)
    assert (out / "checkpoint" / "state.json").exists() and not (out / "prior.json").exists()
    monkeypatch.setattr(IdentityBatch, "forward", forward)
    result, _ = pretrain(out, people, _config(steps=4, checkpoint_every=2), resume=True, progress=False)
    assert result.steps_run == 2  # steps 2 and 3
    a, b = load_file(str(full / "prior.safetensors")), load_file(str(out / "prior.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=k)
    with pytest.raises(PerennialError, match="a prior exists already"):
        pretrain(out, people, _config(), progress=False)


def test_create_starts_from_the_prior(people, prior, tmp_path, template):
    from perennial.capture import read_capture
    from perennial.learn.create import create_avatar
    from perennial.learn.methods import get_method, preset
    from perennial.learn.prior_file import read_prior

    _, tensors = read_prior(prior)
    cap = read_capture(people[1])
    cfg = preset("field", "create", steps=2, rays_per_step=96, samples=4, prior=str(prior),
                 **{"meta.iterations": 0})  # fmt: skip
    avatar = get_method("field").new(template, cap, cfg)
    for k, v in avatar.corrector.state_dict().items():
        assert torch.equal(v, tensors[f"corrector.{k}"]), k
    for k in ("trunk.0.weight", "density_head.bias", "color_head.2.weight"):
        assert torch.equal(avatar.field.state_dict()[k], tensors[f"field.{k}"]), k
    assert torch.equal(avatar.appearance(cap.appearance).triplane.table, tensors["appearance.triplane.table"])
    v = create_avatar(tmp_path / "av", cap, cfg, progress=False, template=template)
    assert v.metrics["train"]["steps_run"] == 2
    assert v.state["history_entry"]["train"]["prior"] == str(prior)
    pre = v.metrics["pretrained"]
    assert pre["identities"] == 2 and pre["steps_run"] == 3 and len(pre["sha256"]) == 64


def _broken(prior: Path, tmp_path: Path, edit) -> Path:
    bad = tmp_path / "bad"
    bad.mkdir(exist_ok=True)
    doc = json.loads((prior / "prior.json").read_text())
    tensors = load_file(str(prior / "prior.safetensors"))
    edit(doc, tensors)
    (bad / "prior.json").write_text(json.dumps(doc))
    save_file(tensors, str(bad / "prior.safetensors"))
    return bad


def test_bad_priors_name_the_file_and_field(prior, tmp_path, people):
    from perennial.cli import main

    with pytest.raises(PriorError, match=r"nowhere/prior.json: no prior here"):
        read_prior(tmp_path / "nowhere")
    cases = [
        (lambda d, t: d.update(schema="perennial-prior/9"), r"prior.json: schema"),
        (lambda d, t: d["field_config"].update(width="wide"), r"prior.json: field_config.width: expected int"),
        (lambda d, t: d["field_config"].update(depth=3), r"prior.json: field_config.*depth"),
        (lambda d, t: t.pop("corrector.mlp.0.bias"), r"prior.safetensors: tensor 'corrector.mlp.0.bias' listed"),
        (lambda d, t: t.update({"field.trunk.0.weight": torch.zeros(3, 3)}), r"prior.safetensors: tensor 'field.trunk.0.weight' has shape"),
    ]  # fmt: skip
    for edit, message in cases:
        with pytest.raises(PriorError, match=message):
            read_prior(_broken(prior, tmp_path, edit))
    # the command line: exit code 2, one line naming the file and tensor, no avatar left behind
    bad = _broken(prior, tmp_path, lambda d, t: d.update(method="texture"))
    av = tmp_path / "av"
    assert main(["create", str(av), "--capture", str(people[0]), "--prior", str(bad), "--steps", "1", "--quiet"]) == 2
    assert not av.exists()


def test_the_shipped_field_prior(people, tmp_path, template):
    """--prior default: the prior in the package (8 synthetic people, docs/bench-prior/full) reads, fits
    a field avatar, and create records it."""
    from perennial.capture import read_capture
    from perennial.learn.create import create_avatar
    from perennial.learn.methods import preset
    from perennial.learn.prior_file import DEFAULT_DIR, resolve_prior

    folder = resolve_prior("default", "field")
    assert folder == DEFAULT_DIR / "prior-field"
    doc, tensors = read_prior(folder)
    assert doc["method"] == "field" and len(doc["provenance"]["identities"]) == 8
    assert (folder / "prior.safetensors").stat().st_size <= 50 * 2**20  # the limit for shipping
    cfg = preset("field", "create", steps=1, rays_per_step=96, samples=4, prior="default", meta=None)
    v = create_avatar(tmp_path / "av", read_capture(people[0]), cfg, progress=False, template=template)
    assert v.metrics["pretrained"]["identities"] == 8 and v.metrics["pretrained"]["path"] == str(folder.resolve())
