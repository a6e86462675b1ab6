"""End to end on a tiny synthetic capture: create -> save -> load -> render -> eval, plus resume."""

import json
import subprocess
import sys

import pytest
import torch

from perennial.avatar.field_io import load_field_avatar
from perennial.avatar.store import AvatarError, AvatarStore
from perennial.capture.synth import SynthConfig, synthesize
from perennial.evaluate.protocol import evaluate_avatar, view_group
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset


@pytest.fixture(scope="module")
def tiny_capture(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("cap") / "tiny"
    cfg = SynthConfig(cameras=4, frames=3, size=40, supersample=2, test_camera_every=4, test_frame_every=3)
    return synthesize(root, cfg, progress=False)


def run(*args):
    return subprocess.run([sys.executable, "-m", "perennial.cli", *args], capture_output=True, text=True)


def test_create_learns_and_round_trips(tmp_path, tiny_capture, template):
    create_avatar(tmp_path / "zero", tiny_capture, preset("field", "create", meta=None, steps=1, rays_per_step=64),
                              progress=False, template=template)  # fmt: skip
    v = create_avatar(tmp_path / "av", tiny_capture, preset("field", "create", meta=None, steps=150, rays_per_step=512),
                      progress=False, template=template)  # fmt: skip
    assert v.number == 1 and v.state["appearances"][0]["name"] == "outfit-a"
    assert not (tmp_path / "av" / "checkpoint").exists()
    avatar, version, replay = load_field_avatar(AvatarStore(tmp_path / "av"), template=template)
    assert replay["outfit-a"]["rotvec"].shape[1:] == (104, 3)
    zero, _, _ = load_field_avatar(AvatarStore(tmp_path / "zero"), template=template)
    before = evaluate_avatar(zero, tiny_capture, lpips_nets=("alex",), progress=False)
    after = evaluate_avatar(avatar, tiny_capture, lpips_nets=("alex",), progress=False)
    # learning happened: held-out views improve clearly on the body box
    assert after["mean"]["psnr_bbox"] > before["mean"]["psnr_bbox"] + 4.0
    assert after["mean"]["psnr"] > 24.0
    assert set(after["groups"]) >= {"novel_view", "novel_pose"}


def test_groups(tiny_capture):
    groups = {(v.camera, v.frame): view_group(tiny_capture, v) for v in tiny_capture.views_of("test")}
    assert groups[("cam01", 0)] == "novel_view"
    assert groups[("cam00", 2)] == "novel_pose"
    assert groups[("cam01", 2)] == "novel_both"


def test_create_refuses_existing_and_resumes(tmp_path, tiny_capture, template):
    cfg = preset("field", "create", meta=None, steps=20, rays_per_step=128, checkpoint_every=10)
    create_avatar(tmp_path / "av", tiny_capture, cfg, progress=False, template=template)
    before = (tmp_path / "av" / "versions" / "1" / "weights.safetensors").read_bytes()
    with pytest.raises(AvatarError, match="exists already"):
        create_avatar(tmp_path / "av", tiny_capture, cfg, progress=False, template=template)
    assert (tmp_path / "av" / "versions" / "1" / "weights.safetensors").read_bytes() == before

    # an interrupted create keeps its checkpoint and resumes from it
    from perennial.learn import engine

    calls = {"n": 0}
    real = engine.save_checkpoint

    def interrupt_after_first(*args, **kw):
        real(*args, **kw)
        calls["n"] += 1
        raise KeyboardInterrupt

    engine.save_checkpoint = interrupt_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            create_avatar(tmp_path / "b", tiny_capture, cfg, progress=False, template=template)
    finally:
        engine.save_checkpoint = real
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 10 and AvatarStore(tmp_path / "b").current_number() is None
    with pytest.raises(AvatarError, match="--resume"):
        create_avatar(tmp_path / "b", tiny_capture, cfg, progress=False, template=template)
    v = create_avatar(tmp_path / "b", tiny_capture, cfg, resume=True, progress=False, template=template)
    assert v.number == 1 and v.metrics["train"]["steps_run"] == 10  # only the remaining steps ran


def test_cli_create_render_eval(tmp_path, tiny_capture):
    av = tmp_path / "av"
    r = run("create", str(av), "--capture", str(tiny_capture.root), "--steps", "30", "--rays", "256", "--meta-iterations",
            "0", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("render", str(av), "--appearance", "outfit-a", "--capture", str(tiny_capture.root), "--out", str(tmp_path / "png"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "png").rglob("*.png"))) == len(tiny_capture.views_of("test"))
    from perennial.motion.clip import MotionClip
    from perennial.motion.procedural import procedural_motion

    rv, off = procedural_motion("wave", 4)  # 4 different consecutive poses (GIF merges repeats)
    MotionClip(rv, off + 0.87, fps=10.0).save(tmp_path / "wave.npz")
    r = run("render", str(av), "--appearance", "outfit-a", "--motion", str(tmp_path / "wave.npz"), "--camera", "front",
            "--size", "32", "--fps", "10", "--out", str(tmp_path / "wave.gif"), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "wave.gif").n_frames == 4
    r = run("eval", str(av), "--capture", str(tiny_capture.root), "--json", str(tmp_path / "m.json"), "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["mean"]["count"] == len(tiny_capture.views_of("test")) and "novel_view" in r.stdout
    r = run("render", str(av), "--appearance", "nope", "--capture", str(tiny_capture.root), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no appearance 'nope'" in r.stderr
    r = run("eval", str(tmp_path / "missing"), "--capture", str(tiny_capture.root))
    assert r.returncode == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    assert torch.isfinite(torch.tensor(res["mean"]["psnr"]))
