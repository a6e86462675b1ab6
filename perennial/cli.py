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
    from perennial.capture.synth import SynthConfig, synthesize, write_preview

    out = Path(a.out)
    cap_dir = out / "capture-outfit-a"
    print("perennial demo: synthesising a capture of Anny in a procedural outfit ...")
    cap = synthesize(cap_dir, SynthConfig(appearance="outfit-a", cameras=8, frames=12, size=192), overwrite=True)
    sheet = write_preview(cap, out / "demo-contact-sheet.png")
    print(f"capture: {cap_dir} ({len(cap.views)} views)\ncontact sheet: {sheet}")
    return 0


def _cmd_motion_import(a: argparse.Namespace) -> int:
    from perennial.motion.bank import import_bank, load_bank, save_bank_npz

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
    from perennial.motion.clip import load_motion

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
    }
    names = list(runs) if a.what == "all" else [a.what]
    results = {}
    for name in names:
        results[name] = runs[name]()
        for k, v in results[name].items():
            print(f"{name:8s} {k:34s} {v:.2f}" if isinstance(v, float) else f"{name:8s} {k:34s} {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


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

    d = sub.add_parser("demo", help="show the system on synthetic data (minutes on a laptop CPU)")
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="measure and print performance figures",
                       description="body: template construction and forward (ms); raycast: ray casting "
                                   "the posed body at 256/512 px, warp vs torch (median ms); synth: wall "
                                   "time of the 8-camera x 30-frame 256 px capture (s).")  # fmt: skip
    b.add_argument("what", choices=["body", "raycast", "synth", "motion", "all"])
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


if __name__ == "__main__":
    sys.exit(main())
