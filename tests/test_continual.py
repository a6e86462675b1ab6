"""perennial learn: a new appearance from 5 images, each strategy, on tiny synthetic captures."""

import pytest
import torch

from perennial.avatar.field_io import load_field_avatar
from perennial.avatar.store import AvatarError, AvatarStore
from perennial.capture.synth import SynthConfig, synthesize
from perennial.errors import ConfigError, PerennialError
from perennial.evaluate.protocol import evaluate_avatar
from perennial.learn.continual import learn_appearance
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset


@pytest.fixture(scope="module")
def captures(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("caps")
    a = synthesize(root / "a", SynthConfig(appearance="outfit-a", cameras=4, frames=3, size=40, supersample=2,
                                           test_camera_every=4, test_frame_every=3), progress=False)  # fmt: skip
    # 5 training images: 5 cameras x 1 frame; camera 1 held out
    b = synthesize(root / "b", SynthConfig(appearance="outfit-b", cameras=6, frames=1, size=40, supersample=2,
                                           test_camera_every=6, test_frame_every=0), progress=False)  # fmt: skip
    return a, b


@pytest.fixture(scope="module")
def base_avatar(tmp_path_factory, captures, template):
    path = tmp_path_factory.mktemp("av") / "base"
    create_avatar(path, captures[0], preset("field", "create", meta=None, steps=120, rays_per_step=512), progress=False, template=template)
    return path


def copy_avatar(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("strategy", ["fast", "replay", "finetune", "joint", "shared-local"])
def test_learn_adds_an_appearance(tmp_path, captures, base_avatar, template, strategy):
    a, b = captures
    assert len(b.views_of("train")) == 5
    path = copy_avatar(base_avatar, tmp_path / "av")
    # checkpoints on the way (shared-local's aliased tri-plane must survive them)
    overrides = {"replay.patch": 16} if strategy in ("replay", "shared-local") else {}
    cfg = preset("field", strategy, steps=60, rays_per_step=512, checkpoint_every=25, **overrides)
    v = learn_appearance(path, b, strategy, cfg, progress=False, template=template)
    assert v.number == 2 and [r["name"] for r in v.state["appearances"]] == ["outfit-a", "outfit-b"]
    assert v.state["history_entry"]["strategy"] == strategy
    avatar, _, replay = load_field_avatar(AvatarStore(path), template=template)
    assert replay["outfit-b"]["rotvec"].shape == (1, 104, 3)
    res = evaluate_avatar(avatar, b, lpips_nets=("alex",), progress=False)
    assert res["mean"]["psnr"] > 20.0  # the new outfit was learned (an untrained field is ~14 dB here)
    tp = {n: avatar.field.appearance(n) for n in avatar.appearance_names}
    shared = tp["outfit-a"].triplane.table.data_ptr() == tp["outfit-b"].triplane.table.data_ptr()
    assert shared == (strategy == "shared-local")
    AvatarStore(path).switch(1)  # the previous version is untouched
    old, _, _ = load_field_avatar(AvatarStore(path), template=template)
    assert old.appearance_names == ["outfit-a"]
    if strategy == "fast":  # only the new appearance moved: everything the past appearances use is bit-identical
        now = avatar.state_dict()
        for k, v in old.state_dict().items():
            assert torch.equal(now[k], v), k


def test_learn_refuses_bad_requests(tmp_path, captures, base_avatar, template):
    a, b = captures
    path = copy_avatar(base_avatar, tmp_path / "av")
    before = (path / "versions" / "1" / "weights.safetensors").read_bytes()
    with pytest.raises(AvatarError, match="appearance 'outfit-a' exists already"):
        learn_appearance(path, a, config=preset("field", "replay", steps=1), progress=False, template=template)
    b.body_info = {**b.body_info, "phenotype": {**b.body_info["phenotype"], "height": 0.9}}
    try:
        with pytest.raises(AvatarError, match="differs from the avatar"):
            learn_appearance(path, b, config=preset("field", "replay", steps=1), progress=False, template=template)
    finally:
        b.body_info["phenotype"]["height"] = 0.5
    with pytest.raises(ConfigError, match="unknown strategy 'magic'.*replay, finetune, joint, shared-local"):
        learn_appearance(path, b, "magic", progress=False, template=template)
    with pytest.raises(ConfigError, match="distill start must be a fraction"):
        preset("field", "replay", **{"distill.start": 5})
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        preset("field", "replay", steps=0)
    assert AvatarStore(path).version_numbers() == [1]
    assert (path / "versions" / "1" / "weights.safetensors").read_bytes() == before


def test_replay_patches_come_from_the_frozen_model(captures, base_avatar, template):
    from perennial.avatar.field_io import replay_cameras
    from perennial.learn.field_terms import Replay
    from perennial.learn.replay import PastViews

    avatar, version, poses = load_field_avatar(AvatarStore(base_avatar), template=template)
    cams = {r["name"]: replay_cameras(r) for r in version.state["appearances"]}
    rep = Replay(avatar, avatar, PastViews(cams, poses), patch=16, samples=8, every=1)
    name, rv, tr, o, d, rgb, alpha = rep.target(torch.Generator().manual_seed(0))
    assert name == "outfit-a" and o.shape == (256, 3) and rgb.shape == (256, 3)
    assert alpha.max() > 0.5  # the patch sits on the body


def test_learn_resumes_from_its_checkpoint(tmp_path, captures, base_avatar, template):
    from perennial.learn import engine

    a, b = captures
    path = copy_avatar(base_avatar, tmp_path / "av")
    cfg = preset("field", "replay", steps=20, rays_per_step=256, checkpoint_every=10, **{"replay.patch": 16})
    real = engine.save_checkpoint

    def interrupt(*args, **kw):
        real(*args, **kw)
        raise KeyboardInterrupt

    engine.save_checkpoint = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            learn_appearance(path, b, "replay", cfg, progress=False, template=template)
    finally:
        engine.save_checkpoint = real
    assert AvatarStore(path).current_number() == 1 and (path / "checkpoint" / "state.json").exists()
    other = preset("field", "finetune", steps=20, rays_per_step=256, checkpoint_every=10)
    with pytest.raises(PerennialError, match="checkpoint is of"):
        learn_appearance(path, b, "finetune", other, progress=False, template=template, resume=True)
    v = learn_appearance(path, b, "replay", cfg, progress=False, template=template, resume=True)
    assert v.number == 2 and v.metrics["train"]["steps_run"] == 10 and not (path / "checkpoint").exists()
