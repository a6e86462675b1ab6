"""``perennial motion import | render``: motion capture retargeted to Anny."""

from __future__ import annotations

import argparse
from pathlib import Path

from perennial.errors import ConfigError, PerennialError


def check_rate(fps: float, seconds: float | None = None, size: int | None = None) -> None:
    """Range checks of the options of commands that play a motion."""
    if not 0 < fps <= 1000:
        raise ConfigError(f"--fps must be in (0, 1000] frames/s, got {fps:g}")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"--seconds must be positive, got {seconds:g}")
    if size is not None and not 8 <= size <= 4096:
        raise ConfigError(f"--size must be 8 to 4096 pixels, got {size}")


def _cmd_motion_import(a: argparse.Namespace) -> int:
    from perennial.motion.bank import load_bank, save_bank_npz
    from perennial.motion.bank_import import import_bank

    check_rate(a.fps)
    out = Path(a.out)
    as_npz = out.suffix.lower() == ".npz"
    if as_npz and out.exists() and not a.overwrite:
        raise PerennialError(f"{out}: exists (pass --overwrite to replace it)")
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

    check_rate(a.fps, a.seconds, a.size)
    clip = load_motion(a.clip, fps=a.fps)
    if a.seconds:
        clip = clip.slice(0, min(clip.num_frames, round(a.seconds * clip.fps)))
    path = render_clip_video(clip, a.out, camera=a.camera, size=a.size, appearance=a.appearance)
    print(f"wrote {path}: {clip.num_frames} frames at {clip.fps:g} fps")
    return 0


def add_motion_commands(sub) -> None:
    """Register ``motion import`` and ``motion render`` on the main parser's subcommands."""
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
