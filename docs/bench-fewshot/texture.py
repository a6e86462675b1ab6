"""Texture avatars: meta-learn the prior on a copy, then learn a new outfit in 60 s with and without it.

Usage: python docs/bench-fewshot/texture.py TEXTURE_AVATAR OUT CAPTURE_OF_A (an avatar made by
`perennial create --method texture` on CAPTURE_OF_A, 8 cameras x 30 frames at 256 px in docs/texture).
"""
import shutil
import sys
from pathlib import Path

from perennial.avatar.io import load_avatar
from perennial.avatar.store import AvatarStore
from perennial.avatar.texture_io import load_texture_avatar, save_texture_avatar
from perennial.capture import read_capture
from perennial.capture.synth import SynthConfig, synthesize
from perennial.evaluate.protocol import evaluate_avatar
from perennial.learn.continual import learn_appearance
from perennial.learn.meta import meta_learn_prior
from perennial.learn.methods import get_method, preset

src, root = Path(sys.argv[1]), Path(sys.argv[2])
capa = read_capture(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
cap = synthesize(root / "outfit-h", SynthConfig(appearance="outfit-h", cameras=8, frames=2, size=256, motion="squat",
                 test_camera_every=3, test_frame_every=2), overwrite=True, progress=False)
meta_dir = root / "tex-meta"
if not meta_dir.exists():
    shutil.copytree(src, meta_dir, symlinks=True)
    store = AvatarStore(meta_dir)
    av, version, poses = load_texture_avatar(store)
    av.prior_info = meta_learn_prior(av, get_method("texture"), preset("texture", "create").meta, progress=False)
    print("meta seconds", round(av.prior_info["seconds"], 1), flush=True)
    with store.lock():
        save_texture_avatar(store, av, version.state["appearances"], poses, {"action": "meta", "appearance": "outfit-a", "strategy": "meta"}, {"meta": av.prior_info})
def ev(p, c):
    m = evaluate_avatar(load_avatar(p)[0], c, lpips_nets=("alex",), max_views=16, progress=False, regions=False)["mean"]
    return round(m["psnr"], 2), round(m["lpips_alex"], 4)
a0 = ev(src, capa)
for label, base, strat in (("fast, prior", meta_dir, "fast"), ("fast, no prior", src, "fast"), ("replay 60 s, no prior", src, "replay")):
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work, symlinks=True)
    v = learn_appearance(work, cap, strat, preset("texture", strat, steps=1_000_000, seconds=60.0), progress=False)
    print(label, v.metrics["train"]["steps_run"], "steps", ev(work, cap), "A before", a0, "after", ev(work, capa), flush=True)
