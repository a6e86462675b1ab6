"""The ``perennial`` command line. Thin: every command calls library functions.

Commands are registered by topic: :mod:`perennial.cli_train` (create, learn,
render, eval), :mod:`perennial.cli_motion` (motion import / render),
:mod:`perennial.cli_store` (history, rollback, prune), :mod:`perennial.cli_capture` (capture) and here (synth, demo,
bench). Every user-facing error is a :class:`~perennial.errors.PerennialError`:
:func:`main` prints its one line and exits with code 2 (1 for an operating-system
error such as a full disk); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse
import json
import sys
import time
from pathlib import Path

from perennial.config import add_options, options_given, override
from perennial.errors import PerennialError

SYNTH_OPTIONS = ["appearance", "cameras", "frames", "size", "motion", "seed", "supersample", "animate_face",
                 "animate_fingers", "loose"]


def _cmd_synth(a: argparse.Namespace) -> int:
    from perennial.capture.synth import SynthConfig, synthesize, write_preview

    cfg = override(SynthConfig(), options_given(a))
    t0 = time.perf_counter()
    cap = synthesize(a.out, cfg, overwrite=a.overwrite, progress=not a.quiet)
    n_train = len(cap.views_of("train"))
    if not a.quiet:
        print(f"wrote {a.out}: {len(cap.views)} views ({n_train} train), {cfg.size} px, "
              f"appearance {cfg.appearance!r}, {time.perf_counter() - t0:.1f} s")  # fmt: skip
    if a.preview:
        path = write_preview(cap, Path(a.out) / "preview.png")
        print(f"contact sheet: {path}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from perennial.demo import DemoConfig, run_demo

    run_demo(a.out, override(DemoConfig(), options_given(a)))
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from perennial.cli_motion import bench_motion
    from perennial.evaluate import bench

    runs = {
        "body": lambda: bench.bench_body(repeats=a.repeats),
        "raycast": lambda: bench.bench_raycast(repeats=a.repeats),
        "synth": lambda: bench.bench_synth(),
        "motion": lambda: bench_motion(a.bvh, strip=a.strip),
        "triplane": lambda: bench.bench_triplane(repeats=a.repeats),
        "speed": lambda: _bench_speed(a),
        "continual": lambda: _bench_continual(a),
        "sheet": lambda: _bench_sheet(a),
        "fewshot": lambda: _bench_fewshot(a),
        **{name: (lambda m=module: _bench_module(m, a)) for name, module in BENCH_MODULES.items()},
    }
    from perennial.numerics import numeric_path

    heavy = ("motion", "continual", "triplane", "sheet", "fewshot", *BENCH_MODULES)
    names = [n for n in runs if n not in heavy] if a.what == "all" else [a.what]
    results = {"numeric_path": numeric_path()}
    print(f"numeric path (autocast=auto): {results['numeric_path']}")
    for name in names:
        results[name] = runs[name]()
        for k, v in results[name].items():
            shown = (f"{v:.2f}" if v == 0 or abs(v) >= 0.1 else f"{v:.2g}") if isinstance(v, float) else v
            print(f"{name:8s} {k:34s} {shown}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


# Benches that live in a module of their own: ``bench NAME`` imports the module and calls its
# ``bench_cli(args) -> dict`` (flat figures to print; --quick, --out and --json are the common options).
BENCH_MODULES = {
    "temporal": "perennial.evaluate.temporal_bench",
    "ood": "perennial.evaluate.ood_bench",
    "capture": "perennial.evaluate.capture_bench",
    "prior": "perennial.evaluate.prior_bench",
}


def _bench_module(module: str, a: argparse.Namespace) -> dict:
    import importlib

    return importlib.import_module(module).bench_cli(a)


def _bench_speed(a: argparse.Namespace) -> dict:
    """Render (and training) speed of a field avatar, or of a texture avatar with --method texture."""
    from perennial.evaluate import bench

    if a.method == "field":
        return bench.bench_speed(a.avatar, repeats=a.repeats, capture_path=a.capture)
    from perennial.evaluate.bench_texture import bench_texture_speed

    avatar = None
    if a.avatar:
        from perennial.avatar.io import load_avatar

        avatar, _, _ = load_avatar(a.avatar)
        if type(avatar).__name__ != "TextureAvatar":
            raise PerennialError(f"{a.avatar}: not a texture avatar (use --method field)")
    return bench_texture_speed(avatar, repeats=a.repeats)


def _bench_sheet(a: argparse.Namespace) -> dict:
    """Truth next to several avatars' renders of a capture's test views, with face and hand close-ups."""
    from perennial.avatar.io import load_avatar
    from perennial.capture import read_capture
    from perennial.evaluate.sheet import comparison_sheet

    if not a.capture or not a.avatars or not a.sheet:
        raise PerennialError("bench sheet needs --capture, at least one --avatars LABEL=AVATAR and --sheet OUT.png")
    avatars = {}
    for spec in a.avatars:
        label, sep, path = spec.partition("=")
        if not sep or not label:
            raise PerennialError(f"--avatars {spec!r}: expected LABEL=AVATAR_FOLDER")
        avatars[label] = load_avatar(path)[0]
    path = comparison_sheet(read_capture(a.capture), avatars, a.sheet)
    return {"sheet": str(path)}


def _bench_fewshot(a: argparse.Namespace) -> dict:
    from perennial.evaluate.fewshot_bench import FewshotBenchConfig, run_fewshot_bench

    cfg = FewshotBenchConfig.quick() if a.quick else FewshotBenchConfig()
    if a.budgets:
        cfg.budgets = tuple(a.budgets)
    out = a.out or "out/bench-fewshot"
    res = run_fewshot_bench(out, cfg)
    print((Path(out) / "fewshot.md").read_text())
    return {f"{n}.{k}": x for n, m in res["summary"].items() for k, x in m.items()}


def _bench_continual(a: argparse.Namespace) -> dict:
    from perennial.evaluate.continual_bench import (
        ContinualBenchConfig,
        format_summary,
        run_continual_bench,
    )

    cfg = ContinualBenchConfig.quick() if a.quick else ContinualBenchConfig()
    a.out = a.out or "out/bench-continual"
    res = run_continual_bench(a.out, cfg)
    print(format_summary(res))
    print(f"wrote {a.out}/continual.json, continual.md, continual.png")
    flat = {f"{s}.{k}": v for s, r in res["strategies"].items() for k, v in r.items() if k != "R"}
    return flat | res["render_scaling"] | {"seconds": res["seconds"]}


def build_parser() -> argparse.ArgumentParser:
    from perennial.capture.synth import SynthConfig
    from perennial.cli_capture import add_capture_commands
    from perennial.cli_motion import add_motion_commands
    from perennial.cli_pretrain import add_pretrain_commands
    from perennial.cli_store import add_store_commands
    from perennial.cli_train import add_train_commands
    from perennial.cli_view import add_view_commands
    from perennial.demo import DemoConfig

    p = argparse.ArgumentParser(
        prog="perennial",
        description="Maintainable, animatable full-body human avatars on the free Anny body template.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="render a synthetic capture of Anny in a procedural outfit",
                       description="Render Anny in a seeded procedural outfit from cameras on two rings "
                                   "and write a perennial-capture v1 folder (images, masks, cameras, poses).")  # fmt: skip
    s.add_argument("out", help="output capture folder (must not exist or be empty)")
    add_options(s, SynthConfig(), SYNTH_OPTIONS)
    s.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet")
    s.add_argument("--overwrite", action="store_true", help="replace an existing capture at OUT")
    s.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    s.set_defaults(func=_cmd_synth)

    add_capture_commands(sub)
    add_train_commands(sub)
    d = sub.add_parser("demo", help="show the system on synthetic data (minutes on a laptop CPU)")
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    add_options(d, DemoConfig(), ["steps", "learn_seconds", "size"])
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="measure and print performance figures",
                       description="body: template construction and forward (ms); raycast: ray casting "
                                   "the posed body at 256/512 px, warp vs torch (median ms); synth: wall "
                                   "time of the 8-camera x 30-frame 256 px capture (s); motion: retargeting "
                                   "figures of BVH clips and bank import speed; speed: field avatar render "
                                   "FPS at 256/512 px and training steps/s; triplane: embedding-bag lookup vs grid_sample (ms).")  # fmt: skip
    b.add_argument("what", choices=["body", "raycast", "synth", "motion", "triplane", "speed", "continual", "fewshot",
                                    "sheet", *BENCH_MODULES, "all"])  # fmt: skip
    b.add_argument("--quick", action="store_true", help="continual, fewshot, temporal, ood, capture, prior: small and fast (minutes)")
    b.add_argument("--out", help="continual, fewshot, temporal, ood, capture, prior: output folder (default: out/bench-NAME)")
    b.add_argument("--budgets", nargs="+", type=float, metavar="SECONDS",
                   help="fewshot: wall-clock budgets of a learn (default: 15 30 60 120)")  # fmt: skip
    b.add_argument("--method", default="field", choices=["field", "texture"],
                   help="speed: which kind of avatar (default: field); texture prints per-stage times")  # fmt: skip
    b.add_argument("--avatar", help="speed: time this avatar instead of a fresh (untrained) one")
    b.add_argument("--avatars", nargs="+", metavar="LABEL=AVATAR", help="sheet: the avatars to show, labelled")
    b.add_argument("--variants", nargs="+", metavar="LABEL", help="ood: avatars to train (default: field field+raf texture texture+raf)")
    b.add_argument("--sheet", help="sheet: output PNG")
    b.add_argument("--capture", help="speed, with --avatar: also held-out PSNR and render time at 16/8/6 samples per ray")
    b.add_argument("--bvh", nargs="*", help="motion: BVH/AMC files or folders, e.g. ../shared/data/motion (default: the CMU samples in shared/data/motion/cmu)")
    b.add_argument("--strip", help="motion: also write a frame strip PNG of the first clip here")
    b.add_argument("--repeats", type=int, default=10, help="timed repeats per figure (median reported)")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.set_defaults(func=_cmd_bench)

    add_motion_commands(sub)
    add_store_commands(sub)
    add_view_commands(sub)
    add_pretrain_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    who = "perennial"
    try:  # Ctrl-C while the commands' modules are still importing is an interrupt too, not a traceback
        args = build_parser().parse_args(argv)
        who = f"perennial {args.command}"
        return args.func(args)
    except KeyboardInterrupt:
        print("perennial: interrupted", file=sys.stderr)
        return 130
    except PerennialError as e:
        print(f"{who}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. disk full while writing renders or JSON
        where = f"{e.filename}: " if e.filename else ""
        print(f"{who}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
