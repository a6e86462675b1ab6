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


def _cmd_bench(a: argparse.Namespace) -> int:
    from perennial.evaluate import bench

    runs = {
        "body": lambda: bench.bench_body(repeats=a.repeats),
        "raycast": lambda: bench.bench_raycast(repeats=a.repeats),
        "synth": lambda: bench.bench_synth(),
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
    b.add_argument("what", choices=["body", "raycast", "synth", "all"])
    b.add_argument("--repeats", type=int, default=10, help="timed repeats per figure (median reported)")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("perennial: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # CaptureError is a ValueError
        print(f"perennial {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
