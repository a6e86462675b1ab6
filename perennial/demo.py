"""``perennial demo``: the whole path on synthetic data, in minutes on a laptop CPU.

1. synthesise a capture of Anny in a procedural outfit (8 cameras, 20 frames);
2. create a radiance-field avatar from it;
2b. meta-learn the prior of new outfits over synthetic outfits on this body (part of create);
3. learn a second outfit from 5 images in at most a minute (the default fast learn: the first
   outfit cannot change);
4. evaluate both outfits on held-out views (PSNR / SSIM / LPIPS) and print the table;
5. write a side-by-side sheet (ground truth | render | error) and a video of the
   avatar in both outfits side by side, driven by a motion it never saw (a CMU
   clip when one is found, else a built-in walk), seen from an orbiting camera.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from perennial.avatar.io import load_avatar
from perennial.capture.synth import SynthConfig, synthesize, write_preview
from perennial.evaluate.protocol import evaluate_avatar, format_table
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset
from perennial.render.image import contact_sheet, save_png, to_uint8


def side_by_side(avatar, capture, views, appearance: str) -> list:
    """Tiles (ground truth | render | 4x error) for the given views."""
    tiles = []
    for v in views:
        rv, tr, fa = capture.body_params(v.frame)
        out = avatar.render_image(capture.cameras[v.camera], rv, tr, appearance, fa)
        gt = capture.load_image(v)
        tiles += [to_uint8(gt), to_uint8(out.rgb), to_uint8(((out.rgb - gt).abs() * 4).clamp(0, 1))]
    return tiles


@dataclass(kw_only=True)
class DemoConfig:
    """What the demo trains."""

    steps: int = 2500
    """Training steps of the avatar on the first outfit (~4 min on 2 cores)."""
    learn_seconds: float = 60.0
    """Wall-clock budget to learn the second outfit from 5 images (the default fast learn's)."""
    size: int = 192
    """Image size of the synthetic captures and the video, pixels."""


def run_demo(out: str | Path, config: DemoConfig | None = None) -> dict:
    c = config or DemoConfig()
    steps, size = c.steps, c.size
    from perennial.learn.continual import learn_appearance

    out = Path(out)
    t0 = time.perf_counter()
    print("1/5 synthesising captures: outfit-a (8 cameras x 20 frames) and outfit-h (5 training images) ...")
    cap = synthesize(out / "capture-outfit-a", SynthConfig(appearance="outfit-a", cameras=8, frames=20, size=size), overwrite=True)
    cap_b = synthesize(out / "capture-outfit-h", SynthConfig(appearance="outfit-h", cameras=8, frames=2, size=size, motion="squat",
                                                             test_camera_every=3, test_frame_every=2), overwrite=True)  # fmt: skip
    write_preview(cap, out / "capture-contact-sheet.png")
    print(f"2/5 creating the avatar ({steps} steps, then the prior of new outfits) ...")
    avatar_dir = out / "avatar"
    if avatar_dir.exists():
        import shutil

        shutil.rmtree(avatar_dir)
    create_avatar(avatar_dir, cap, preset("field", "create", steps=steps))
    print(f"3/5 learning outfit-h from {len(cap_b.views_of('train'))} images (fast, at most {c.learn_seconds:g} s) ...")
    learn_appearance(avatar_dir, cap_b, "fast", preset("field", "fast", seconds=c.learn_seconds))
    avatar, _, _ = load_avatar(avatar_dir)
    print("4/5 evaluating both outfits on held-out views ...")
    results = {}
    for c in (cap, cap_b):
        results[c.appearance] = evaluate_avatar(avatar, c, lpips_nets=("alex",), max_views=24, progress=False)
        print(f"-- {c.appearance}\n" + format_table(results[c.appearance]))
    print("5/5 rendering ...")
    tests = cap.views_of("test")
    picks = [tests[0], tests[len(tests) // 2], tests[-1]]
    tiles = side_by_side(avatar, cap, picks, cap.appearance) + side_by_side(avatar, cap_b, cap_b.views_of("test")[:1], cap_b.appearance)
    labels = [f"{lab} {c.appearance} {v.camera} f{v.frame}" for c, vs in ((cap, picks), (cap_b, cap_b.views_of("test")[:1]))
              for v in vs for lab in ("truth", "render", "error x4")]  # fmt: skip
    save_png(out / "side-by-side.png", contact_sheet(tiles, cols=3, labels=labels))
    from perennial.evaluate.bench import default_bvh_samples
    from perennial.motion.clip import MotionClip
    from perennial.motion.load import load_motion
    from perennial.render.camera_paths import camera_path
    from perennial.render.video import write_video

    samples = default_bvh_samples()
    if samples:
        clip = load_motion(samples[0], fps=15.0)
        clip = clip.slice(0, min(clip.num_frames, 60))
    else:
        from perennial.motion.procedural import procedural_motion

        rv, off = procedural_motion("walk", 30)
        clip = MotionClip(rv, off + torch.tensor([0.0, 0.0, 0.87]), fps=15.0, source="built-in walk")
    cams = camera_path("orbit", clip.translation, size)

    def frames():
        for f in range(clip.num_frames):
            pair = [to_uint8(avatar.render_image(cams[f], clip.rotvec[f], clip.translation[f], c.appearance).rgb)
                    for c in (cap, cap_b)]  # fmt: skip
            yield contact_sheet(pair, cols=2)

    video = write_video(out / "driven.mp4", frames(), fps=clip.fps)
    print(f"done in {time.perf_counter() - t0:.0f} s: {out}/side-by-side.png, {video} (both outfits), "
          f"{out}/capture-contact-sheet.png, avatar in {avatar_dir}")  # fmt: skip
    return results
