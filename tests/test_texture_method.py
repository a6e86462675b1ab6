"""The texture avatar through the store and the engine: create, learn (replay), render, eval, history, rollback."""

from __future__ import annotations

import json

import pytest
import torch

from perennial.avatar.io import load_avatar
from perennial.avatar.store import AvatarStore
from perennial.capture.synth import SynthConfig, synthesize
from perennial.cli import main
from perennial.evaluate.protocol import evaluate_avatar

QUICK = ["--quiet", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def caps(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("tcaps")
    a = synthesize(root / "a", SynthConfig(cameras=4, frames=3, size=64, supersample=1, test_camera_every=4,
                                           test_frame_every=3), progress=False)  # fmt: skip
    b = synthesize(root / "b", SynthConfig(appearance="outfit-b", cameras=6, frames=1, size=64, supersample=1,
                                           test_camera_every=6, test_frame_every=0), progress=False)  # fmt: skip
    return a, b


@pytest.fixture(scope="module")
def made(tmp_path_factory, caps):
    root = tmp_path_factory.mktemp("tav")
    assert main(["create", str(root / "zero"), "--capture", str(caps[0].root), "--method", "texture",
                 "--steps", "1", "--meta-iterations", "0", *QUICK]) == 0  # fmt: skip
    assert main(["create", str(root / "av"), "--capture", str(caps[0].root), "--method", "texture",
                 "--steps", "200", "--meta-iterations", "2", *QUICK]) == 0  # fmt: skip
    return root


def test_create_learns(made, caps, template):
    zero, _, _ = load_avatar(made / "zero", template=template)
    avatar, version, poses = load_avatar(made / "av", template=template)
    assert type(avatar).__name__ == "TextureAvatar" and version.state["method"] == "texture"
    assert poses["outfit-a"]["facial_actions"].shape == (len(version.state["appearances"][0]["frames"]), 52)
    before = evaluate_avatar(zero, caps[0], lpips_nets=("alex",), progress=False)["mean"]
    after = evaluate_avatar(avatar, caps[0], lpips_nets=("alex",), progress=False)["mean"]
    # learning happened: held-out views on the body box improve clearly (an untrained one is grey noise)
    assert after["psnr_bbox"] > before["psnr_bbox"] + 4.0 and after["lpips_alex"] < before["lpips_alex"]


def test_learn_render_history_rollback(tmp_path, made, caps, capsys):
    import shutil

    av = shutil.copytree(made / "av", tmp_path / "av", symlinks=True)
    rc = main(["learn", str(av), "--capture", str(caps[1].root), "--steps", "60", *QUICK])
    assert rc == 0
    v = AvatarStore(av).version()
    assert v.number == 2 and [a["name"] for a in v.state["appearances"]] == ["outfit-a", "outfit-b"]
    assert v.state["history_entry"]["strategy"] == "fast"  # the default: the new appearance alone moves
    assert v.state["prior"]["iterations"] == 2  # the prior meta-learned at create is kept
    probe = load_avatar(av)[0]
    for p_new, p_prior in zip(probe.add_appearance("probe").parameters(), probe.prior.parameters()):
        assert torch.equal(p_new, p_prior)  # and new appearances start from it
    now = load_avatar(av)[0].state_dict()
    AvatarStore(av).switch(1)
    for k, t in load_avatar(av)[0].state_dict().items():
        assert torch.equal(now[k], t), k
    AvatarStore(av).switch(2)
    capsys.readouterr()
    for name, cap in (("outfit-a", caps[0]), ("outfit-b", caps[1])):
        assert main(["render", str(av), "--appearance", name, "--capture", str(cap.root), "--out",
                     str(tmp_path / name), "--quiet"]) == 0  # fmt: skip
    assert main(["eval", str(av), "--capture", str(caps[1].root), "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["mean"]["count"] >= 1
    assert main(["history", str(av)]) == 0 and "fast" in capsys.readouterr().out
    assert main(["rollback", str(av), "--to", "1"]) == 0
    avatar, _, _ = load_avatar(av)
    assert avatar.appearance_names == ["outfit-a"]
    rc = main(["learn", str(av), "--capture", str(caps[1].root), "--strategy", "joint", "--steps", "5", *QUICK])
    assert rc == 2 and "unknown strategy 'joint' for texture avatars" in capsys.readouterr().err


def test_replay_keeps_the_past_appearance(tmp_path, made, caps, template):
    """The frozen teacher's windows hold the past outfit: after learning B with replay, A renders
    closer to the version before than after finetuning."""
    import shutil

    from perennial.learn.continual import learn_appearance
    from perennial.learn.methods import preset

    base, _, _ = load_avatar(made / "av", template=template)
    view = caps[0].views_of("test")[0]
    rv, tr, fa = caps[0].body_params(view.frame)
    ref = base.render_image(caps[0].cameras[view.camera], rv, tr, "outfit-a", fa).rgb
    drift = {}
    for strategy in ("replay", "finetune"):
        av = shutil.copytree(made / "av", tmp_path / strategy, symlinks=True)
        cfg = preset("texture", strategy, steps=80, checkpoint_every=0)
        learn_appearance(av, caps[1], strategy, cfg, progress=False, template=template)
        avatar, _, _ = load_avatar(av, template=template)
        img = avatar.render_image(caps[0].cameras[view.camera], rv, tr, "outfit-a", fa).rgb
        drift[strategy] = float((img - ref).abs().mean())
    assert drift["replay"] < drift["finetune"], drift
    assert torch.isfinite(torch.tensor(list(drift.values()))).all()
