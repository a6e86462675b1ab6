"""The ``perennial`` command line. Thin: every command calls library functions."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse
import json
import sys
import time
from pathlib import Path


def _cmd_synth(a: argparse.Namespace) -> int:
    from perennial.capture.synth import SynthConfig, synthesize, write_preview

    cfg = SynthConfig(
        appearance=a.appearance, cameras=a.cameras, frames=a.frames, size=a.size,
        motion=a.motion, seed=a.seed, supersample=a.supersample,
    )  # fmt: skip
    t0 = time.perf_counter()
    cap = synthesize(a.out, cfg, overwrite=a.overwrite, progress=not a.quiet)
    n_train = len(cap.views_of("train"))
    if not a.quiet:
        print(f"wrote {a.out}: {len(cap.views)} views ({n_train} train), {a.size} px, "
              f"appearance {a.appearance!r}, {time.perf_counter() - t0:.1f} s")  # fmt: skip
    if a.preview:
        path = write_preview(cap, Path(a.out) / "preview.png")
        print(f"contact sheet: {path}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from perennial.demo import run_demo

    run_demo(a.out, steps=a.steps, learn_steps=a.learn_steps)
    return 0


def _cmd_create(a: argparse.Namespace) -> int:
    from perennial.capture import read_capture
    from perennial.learn.create import create_avatar
    from perennial.learn.trainer import TrainConfig

    _set_device(a)
    capture = read_capture(a.capture)
    cfg = TrainConfig(steps=a.steps, rays_per_step=a.rays, seed=a.seed)
    t0 = time.perf_counter()
    try:
        v = create_avatar(a.avatar, capture, cfg, resume=a.resume, progress=not a.quiet)
    except KeyboardInterrupt:
        print(f"perennial create: interrupted; the last checkpoint is kept: continue with "
              f"'perennial create {a.avatar} --capture {a.capture} --resume'", file=sys.stderr)  # fmt: skip
        return 130
    tr = v.metrics["train"]
    print(f"created {a.avatar} (version {v.number}) in {time.perf_counter() - t0:.0f} s: "
          f"{tr['steps_run']} steps, {tr['steps_per_s']:.1f} steps/s, training PSNR on the body {tr['train_psnr_body']:.2f} dB")  # fmt: skip
    return 0


def _cmd_learn(a: argparse.Namespace) -> int:
    from perennial.capture import read_capture
    from perennial.learn.continual import ContinualConfig, learn_appearance

    capture = read_capture(a.capture)
    cfg = ContinualConfig(strategy=a.strategy, steps=a.steps, seed=a.seed,
                          distill_start=a.distill_start)  # fmt: skip
    t0 = time.perf_counter()
    try:
        v = learn_appearance(a.avatar, capture, cfg, name=a.name, progress=not a.quiet, resume=a.resume)
    except KeyboardInterrupt:
        print("perennial learn: interrupted; the previous version stays current (continue with --resume)",
              file=sys.stderr)  # fmt: skip
        return 130
    print(f"learned {v.state['history_entry']['appearance']!r} into {a.avatar} (version {v.number}, "
          f"strategy {a.strategy}) in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 0


def _set_device(a: argparse.Namespace) -> None:
    if getattr(a, "device", "cpu") != "cpu":
        raise ValueError(f"--device {a.device}: only 'cpu' is supported by this version")


def _load(a: argparse.Namespace):
    from perennial.avatar.field_io import load_field_avatar
    from perennial.avatar.store import AvatarStore

    return load_field_avatar(AvatarStore(a.avatar))


def _cmd_eval(a: argparse.Namespace) -> int:
    from perennial.capture import read_capture
    from perennial.evaluate.protocol import evaluate_avatar, format_table

    avatar, version, _ = _load(a)
    capture = read_capture(a.capture)
    name = a.appearance or capture.appearance
    if name not in avatar.field.appearances:
        raise ValueError(f"{a.avatar}: no appearance {name!r} (has {list(avatar.field.appearances)})")
    res = evaluate_avatar(avatar, capture, name, lpips_nets=a.lpips.split(","), max_views=a.max_views,
                          progress=not a.quiet)  # fmt: skip
    res["avatar"] = {"path": str(a.avatar), "version": version.number}
    print(format_table(res))
    print(f"render: {res['render_ms_median']:.0f} ms per view (median)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def _cmd_render(a: argparse.Namespace) -> int:
    from perennial.avatar.field.render import render_image
    from perennial.render.image import save_png, to_uint8
    from perennial.render.raycast import WarpMeshCaster
    from perennial.render.video import write_video

    avatar, _, _ = _load(a)
    if a.appearance not in avatar.field.appearances:
        raise ValueError(f"{a.avatar}: no appearance {a.appearance!r} (has {list(avatar.field.appearances)})")
    if (a.capture is None) == (a.motion is None):
        raise ValueError("give exactly one of --capture DIR or --motion CLIP")
    caster = WarpMeshCaster(avatar.deformer.rest_vertices, avatar.deformer.faces)
    jobs = []  # (name, camera, rotvec, translation)
    if a.capture:
        from perennial.capture import read_capture

        cap = read_capture(a.capture)
        views = cap.views if a.split == "all" else cap.views_of(a.split)
        for v in sorted(views, key=lambda v: (v.camera, v.frame)):
            rv, tr, _ = cap.body_params(v.frame)
            jobs.append((f"{v.camera}/{v.frame:06d}", cap.cameras[v.camera], rv, tr))
        fps = 10.0
    else:
        from perennial.motion.load import load_motion
        from perennial.render.camera_paths import camera_path

        clip = load_motion(a.motion, fps=a.fps)
        if a.seconds:
            clip = clip.slice(0, min(clip.num_frames, round(a.seconds * clip.fps)))
        cams = camera_path(a.camera, clip.translation, a.size)
        jobs = [(f"{f:06d}", cams[f], clip.rotvec[f], clip.translation[f]) for f in range(clip.num_frames)]
        fps = clip.fps
    out = Path(a.out)
    from tqdm import tqdm

    def frames():
        for name, cam, rv, tr in tqdm(jobs, desc="rendering", unit="frame", disable=a.quiet):
            img = to_uint8(render_image(avatar, cam, rv, tr, a.appearance, caster=caster).rgb)
            if out.suffix.lower() not in (".mp4", ".gif"):
                save_png(out / f"{name}.png", img)
            yield img

    if out.suffix.lower() in (".mp4", ".gif"):
        write_video(out, frames(), fps=fps)
    else:
        for _ in frames():
            pass
    print(f"wrote {out} ({len(jobs)} frames)")
    return 0


def _cmd_motion_import(a: argparse.Namespace) -> int:
    from perennial.motion.bank import load_bank, save_bank_npz
    from perennial.motion.bank_import import import_bank

    out = Path(a.out)
    as_npz = out.suffix.lower() == ".npz"
    if as_npz and out.exists() and not a.overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite to replace it)")
    folder = out.with_suffix("") if as_npz else out
    report = import_bank(a.paths, folder, fps=a.fps, progress=not a.quiet, bone_map=a.map, overwrite=a.overwrite)
    print(report.summary())
    if as_npz:
        save_bank_npz(load_bank(folder), out)
        print(f"bank: {out} (clips kept in {folder})")
    return 0 if report.imported else 1


def _cmd_motion_render(a: argparse.Namespace) -> int:
    from perennial.capture.synth import render_clip_video
    from perennial.motion.load import load_motion

    clip = load_motion(a.clip, fps=a.fps)
    if a.seconds:
        clip = clip.slice(0, min(clip.num_frames, round(a.seconds * clip.fps)))
    path = render_clip_video(clip, a.out, camera=a.camera, size=a.size, appearance=a.appearance)
    print(f"wrote {path}: {clip.num_frames} frames at {clip.fps:g} fps")
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from perennial.evaluate import bench

    runs = {
        "body": lambda: bench.bench_body(repeats=a.repeats),
        "raycast": lambda: bench.bench_raycast(repeats=a.repeats),
        "synth": lambda: bench.bench_synth(),
        "motion": lambda: bench.bench_motion(a.bvh, strip=a.strip),
        "speed": lambda: bench.bench_speed(a.avatar, repeats=a.repeats, capture_path=a.capture),
        "continual": lambda: _bench_continual(a),
    }
    names = [n for n in runs if n not in ("motion", "continual")] if a.what == "all" else [a.what]
    results = {}
    for name in names:
        results[name] = runs[name]()
        for k, v in results[name].items():
            shown = (f"{v:.2f}" if v == 0 or abs(v) >= 0.1 else f"{v:.2g}") if isinstance(v, float) else v
            print(f"{name:8s} {k:34s} {shown}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _bench_continual(a: argparse.Namespace) -> dict:
    from perennial.evaluate.continual_bench import ContinualBenchConfig, format_summary, run_continual_bench

    cfg = ContinualBenchConfig.quick() if a.quick else ContinualBenchConfig()
    res = run_continual_bench(a.out, cfg)
    print(format_summary(res))
    print(f"wrote {a.out}/continual.json, continual.md, continual.png")
    flat = {f"{s}.{k}": v for s, r in res["strategies"].items() for k, v in r.items() if k != "R"}
    return flat | res["render_scaling"] | {"seconds": res["seconds"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perennial",
        description="Maintainable, animatable full-body human avatars on the free Anny body template.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="render a synthetic capture of Anny in a procedural outfit",
                       description="Render Anny in a seeded procedural outfit from cameras on two rings "
                                   "and write a perennial-capture v1 folder (images, masks, cameras, poses).")  # fmt: skip
    s.add_argument("out", help="output capture folder (must not exist or be empty)")
    s.add_argument("--appearance", default="outfit-a", help="appearance name; seeds the outfit (default: outfit-a)")
    s.add_argument("--cameras", type=int, default=8, help="number of cameras (default: 8)")
    s.add_argument("--frames", type=int, default=30, help="number of frames (default: 30)")
    s.add_argument("--size", type=int, default=256, help="image width and height in pixels (default: 256)")
    s.add_argument("--motion", default="mix", help="built-in motion: walk, wave, squat, turn, mix (default: mix)")
    s.add_argument("--seed", type=int, default=0, help="outfit seed (default: 0)")
    s.add_argument("--supersample", type=int, default=3, help="anti-aliasing rays per pixel per axis (default: 3)")
    s.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet")
    s.add_argument("--overwrite", action="store_true", help="replace an existing capture at OUT")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.set_defaults(func=_cmd_synth)

    c = sub.add_parser("create", help="create an avatar from a capture (trains the radiance field)",
                       description="Train a radiance-field avatar (MaintaAvatar-style: inverse LBS on Anny, "
                                   "pose corrector, tri-plane + global codes per appearance) on the capture's "
                                   "training views and store it as version 1 of AVATAR.")  # fmt: skip
    c.add_argument("avatar", help="avatar folder to create")
    c.add_argument("--capture", required=True, help="perennial-capture folder")
    c.add_argument("--method", default="field", choices=["field"], help="avatar method (default: field)")
    c.add_argument("--steps", type=int, default=6000, help="optimisation steps (default: 6000, ~10 min on 2 cores)")
    c.add_argument("--rays", type=int, default=2048, help="rays per step (default: 2048)")
    c.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    c.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted create from its checkpoint")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_create)

    ln = sub.add_parser("learn", help="add an appearance (outfit) to an avatar from as few as 5 images",
                        description="Learn a new appearance from a capture and write a new version of the "
                                    "avatar; past appearances are kept by generative replay and pose "
                                    "distillation (strategy replay) unless another strategy is chosen.")  # fmt: skip
    ln.add_argument("avatar", help="avatar folder")
    ln.add_argument("--capture", required=True, help="capture of the new appearance")
    ln.add_argument("--name", help="appearance name (default: the capture's appearance)")
    ln.add_argument("--strategy", default="replay", choices=["replay", "finetune", "joint", "shared-local"],
                    help="replay (default), finetune (no replay: forgets), joint (needs the past captures: "
                         "upper bound), shared-local (ablation: one tri-plane for all appearances)")  # fmt: skip
    ln.add_argument("--steps", type=int, default=1500, help="optimisation steps (default: 1500)")
    ln.add_argument("--distill-start", type=float, default=0.3,
                    help="fraction of the steps after which pose distillation starts (default: 0.3)")  # fmt: skip
    ln.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    ln.add_argument("--resume", action="store_true", help="continue an interrupted learn from its checkpoint")
    ln.add_argument("--quiet", action="store_true", help="no progress bar")
    ln.set_defaults(func=_cmd_learn)

    r = sub.add_parser("render", help="render an avatar for a capture's views or driven by a motion clip")
    r.add_argument("avatar", help="avatar folder")
    r.add_argument("--appearance", required=True, help="appearance (outfit) to render")
    r.add_argument("--capture", help="render this capture's views (cameras and poses)")
    r.add_argument("--split", default="test", choices=["test", "train", "all"], help="capture views to render (default: test)")
    r.add_argument("--motion", help="drive the avatar with a .bvh or .npz clip")
    r.add_argument("--camera", default="orbit", help="with --motion: orbit, front, side or back (default: orbit)")
    r.add_argument("--size", type=int, default=256, help="with --motion: frame size, pixels (default: 256)")
    r.add_argument("--fps", type=float, default=30.0, help="with --motion: frame rate, frames/s (default: 30)")
    r.add_argument("--seconds", type=float, help="with --motion: only the first SECONDS")
    r.add_argument("--out", required=True, help="OUT.mp4 / OUT.gif (video) or a folder (PNGs)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_render)

    e = sub.add_parser("eval", help="PSNR / SSIM / LPIPS of an avatar on a capture's test views")
    e.add_argument("avatar", help="avatar folder")
    e.add_argument("--capture", required=True, help="capture whose test views are compared")
    e.add_argument("--appearance", help="appearance to render (default: the capture's)")
    e.add_argument("--lpips", default="alex", help="LPIPS backbones, comma separated: alex,vgg (default: alex)")
    e.add_argument("--max-views", type=int, help="use at most this many test views (evenly spread)")
    e.add_argument("--json", help="write per-view and mean metrics to this JSON file")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("demo", help="show the system on synthetic data (minutes on a laptop CPU)")
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    d.add_argument("--steps", type=int, default=2500, help="training steps of the avatar (default: 2500)")
    d.add_argument("--learn-steps", type=int, default=1500, help="steps to learn the second outfit (default: 1500, as in bench continual)")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="measure and print performance figures",
                       description="body: template construction and forward (ms); raycast: ray casting "
                                   "the posed body at 256/512 px, warp vs torch (median ms); synth: wall "
                                   "time of the 8-camera x 30-frame 256 px capture (s); motion: retargeting "
                                   "figures of BVH clips and bank import speed; speed: field avatar render "
                                   "FPS at 256/512 px and training steps/s.")  # fmt: skip
    b.add_argument("what", choices=["body", "raycast", "synth", "motion", "speed", "continual", "all"])
    b.add_argument("--quick", action="store_true", help="continual: small and fast (about 10 min)")
    b.add_argument("--out", default="out/bench-continual", help="continual: output folder (default: out/bench-continual)")
    b.add_argument("--avatar", help="speed: time this avatar instead of a fresh (untrained) one")
    b.add_argument("--capture", help="speed, with --avatar: also held-out PSNR and render time at 16/8/6 samples per ray")
    b.add_argument("--bvh", nargs="*", help="motion: BVH files (default: the CMU samples in shared/data/motion/cmu)")
    b.add_argument("--strip", help="motion: also write a frame strip PNG of the first clip here")
    b.add_argument("--repeats", type=int, default=10, help="timed repeats per figure (median reported)")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.set_defaults(func=_cmd_bench)

    m = sub.add_parser("motion", help="import and look at motion capture (BVH) retargeted to Anny")
    msub = m.add_subparsers(dest="motion_command", required=True, metavar="ACTION")
    mi = msub.add_parser("import", help="retarget many BVH/npz files into a motion bank",
                         description="Retarget BVH files (CMU 31-joint skeleton built in; others with --map) "
                                     "to Anny's rig at one frame rate. OUT is a bank folder, or a .npz file "
                                     "holding every frame (rotvec, translation, clip id).")  # fmt: skip
    mi.add_argument("paths", nargs="+", help="BVH or clip .npz files, or folders searched recursively")
    mi.add_argument("--out", required=True, help="bank folder, or bank.npz")
    mi.add_argument("--fps", type=float, default=30.0, help="frame rate of the bank, frames/s (default: 30)")
    mi.add_argument("--map", help="JSON bone map for a non-CMU skeleton")
    mi.add_argument("--overwrite", action="store_true", help="replace an existing bank")
    mi.add_argument("--quiet", action="store_true", help="no progress bar")
    mi.set_defaults(func=_cmd_motion_import)
    mr = msub.add_parser("render", help="render a clip on the body template in a procedural outfit")
    mr.add_argument("clip", help=".bvh or .npz motion clip")
    mr.add_argument("--out", required=True, help="video file, .mp4 or .gif")
    mr.add_argument("--camera", default="orbit", help="orbit, front, side or back (default: orbit)")
    mr.add_argument("--size", type=int, default=256, help="frame width and height, pixels (default: 256)")
    mr.add_argument("--fps", type=float, default=30.0, help="video frame rate, frames/s (default: 30)")
    mr.add_argument("--seconds", type=float, help="only the first SECONDS of the clip")
    mr.add_argument("--appearance", default="outfit-a", help="outfit name (default: outfit-a)")
    mr.set_defaults(func=_cmd_motion_render)
    from perennial.cli_store import add_store_commands  # history, rollback, prune

    add_store_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("perennial: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # Capture/BVH/Avatar errors are ValueErrors
        print(f"perennial {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. disk full while writing renders or JSON
        print(f"perennial {args.command}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
