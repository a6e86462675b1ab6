"""``perennial motion import | inspect | prior | render`` and ``perennial bench motion``: motion
capture (BVH, ASF/AMC) retargeted to Anny."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from perennial.errors import ConfigError, OutputExistsError, PerennialError


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
    report = import_bank(a.paths, folder, fps=a.fps, progress=not a.quiet, bone_map=a.map, overwrite=a.overwrite,
                         asf=a.asf)  # fmt: skip
    print(report.summary())
    if as_npz:
        save_bank_npz(load_bank(folder), out)
        print(f"bank: {out} (clips kept in {folder})")
    return 0 if report.imported else 1


def _cmd_motion_inspect(a: argparse.Namespace) -> int:
    from perennial.motion.load import read_skeleton_motion
    from perennial.motion.skeleton_detect import describe

    bvh = read_skeleton_motion(a.file, a.asf)
    det = describe(bvh, a.map)
    print(det.report())
    if a.write_map:
        path = Path(a.write_map)
        if path.exists() and not a.overwrite:
            raise OutputExistsError(f"{path}: exists (pass --overwrite to replace it)")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(det.bone_map.to_dict(), indent=1) + "\n")
        tmp.replace(path)
        print(f"bone map written to {path}: edit it and pass --map {path}")
    return 0


def _cmd_motion_render(a: argparse.Namespace) -> int:
    from perennial.capture.synth import render_clip_video
    from perennial.motion.load import load_motion

    check_rate(a.fps, a.seconds, a.size)
    clip = load_motion(a.clip, fps=a.fps, bone_map=a.map, asf=a.asf)
    if a.seconds:
        clip = clip.slice(0, min(clip.num_frames, round(a.seconds * clip.fps)))
    path = render_clip_video(clip, a.out, camera=a.camera, size=a.size, appearance=a.appearance)
    print(f"wrote {path}: {clip.num_frames} frames at {clip.fps:g} fps")
    return 0


def _cmd_motion_prior(a: argparse.Namespace) -> int:
    from perennial.config import options_given, override
    from perennial.motion.prior import (
        PriorConfig,
        describe,
        load_training_poses,
        save_retrieval_bank,
        train_prior,
    )

    cfg = override(PriorConfig(), options_given(a))
    for path in (a.out, a.retrieval_out):
        if path and Path(path).exists() and not a.overwrite:
            raise OutputExistsError(f"{path}: exists (pass --overwrite to replace it)")
    rotvec, clips = load_training_poses(a.bank, fps=cfg.fps)
    prior = train_prior(rotvec, clips, cfg, progress=not a.quiet, source=str(a.bank))
    prior.save(a.out)
    print(describe(prior))
    print(f"wrote {a.out}")
    if a.retrieval_out:
        n = save_retrieval_bank(load_training_poses(a.bank, fps=a.retrieval_fps)[0], a.retrieval_out)
        print(f"wrote {a.retrieval_out}: {n} poses at {a.retrieval_fps:g} frames/s for retrieval")
    return 0


class _Rows(list):
    """Per-clip figures: the whole list goes to ``--json``; printed, a count."""

    def __str__(self) -> str:
        return f"{len(self)} clips (table above; every figure with --json)"


def _motion_files(paths: list[str] | None) -> list[Path]:
    """BVH and AMC files named or found (recursively) in folders; the shared CMU samples by default."""
    if not paths:
        here = Path(__file__).resolve()
        for root in [Path.cwd(), *here.parents]:
            d = root.parent / "shared" / "data" / "motion" / "cmu"
            if d.is_dir():
                paths = [str(d)]
                break
        else:
            raise PerennialError("bench motion: no files given (--bvh) and shared/data/motion/cmu not found")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in (".bvh", ".amc"))
        else:
            files.append(p)
    if not files:
        raise PerennialError(f"bench motion: no .bvh or .amc file in {', '.join(paths)}")
    return files


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def bench_motion(paths: list[str] | None = None, strip: str | None = None) -> dict:
    """``perennial bench motion``: retargeting figures per clip and per convention.

    Prints a table per clip and per convention (mean joint error, lowest foot below the
    floor, torso lean, foot skating of Anny and of the source, import frames/s) and
    returns the per-convention figures as ``<convention>.<figure>`` with the per-clip
    dicts under ``clips`` (all written by ``--json``).
    """
    from perennial.motion.evaluate import bench_motion as run

    files = _motion_files(paths)
    res = run(files, strip=strip, progress=True)
    head = f"{'clip':<28} {'conv':<18} {'frames':>6} {'err cm':>6} {'floor cm':>8} {'lean deg':>8} " \
           f"{'skate cm/s':>10} {'src skate':>9} {'import f/s':>10}"  # fmt: skip
    print(head)
    for c in res["clips"]:
        print(f"{Path(c['file']).name[:28]:<28} {c['convention'][:18]:<18} {c['source_frames']:>6} "
              f"{c['mean_joint_error_cm']:>6.2f} {c['worst_foot_penetration_cm']:>8.2f} {c['torso_lean_deg']:>8.2f} "
              f"{c['foot_skating_cm_s']:>10.1f} {c['source_foot_skating_cm_s']:>9.1f} "
              f"{c['import_frames_per_s']:>10.0f}")  # fmt: skip
    for f in res["failed"]:
        print(f"failed: {f['source']}: {f['reason']}")
    print(f"\n{'convention':<20} {'clips':>5} {'frames':>7} {'err cm':>6} {'worst':>6} {'floor cm':>8} "
          f"{'lean deg':>8} {'skate':>6} {'src':>6} {'import f/s':>10}")  # fmt: skip
    for conv, r in res["conventions"].items():
        print(f"{conv:<20} {r['clips']:>5} {r['frames']:>7} {r['mean_joint_error_cm']:>6.2f} "
              f"{r['worst_clip_joint_error_cm']:>6.2f} {r['worst_foot_penetration_cm']:>8.2f} "
              f"{r['torso_lean_deg']:>8.2f} {r['foot_skating_cm_s']:>6.1f} {r['source_foot_skating_cm_s']:>6.1f} "
              f"{r['import_frames_per_s']:>10.0f}")  # fmt: skip
    print()
    out: dict = {f"{conv}.{k}": _clean(v) for conv, r in res["conventions"].items() for k, v in r.items()}
    out |= {f"import.{k}": v for k, v in res["import"].items()}
    out["failed_files"] = len(res["failed"])
    out["clips"] = _Rows({k: _clean(v) for k, v in c.items()} for c in res["clips"])
    if res["strip"]:
        out["strip"] = res["strip"]
    return out


def add_motion_commands(sub) -> None:
    """Register ``motion import``, ``motion inspect`` and ``motion render`` on the main parser's subcommands."""
    m = sub.add_parser("motion", help="import and look at motion capture (BVH, ASF/AMC) retargeted to Anny")
    msub = m.add_subparsers(dest="motion_command", required=True, metavar="ACTION")
    skel = ("BVH skeletons are recognised by their joint names and shape (CMU, Mixamo, Daz/Poser/Genesis, "
            "Character Creator, Unity/Unreal humanoids, Rokoko, Perception Neuron, MotionBuilder, 3ds Max Biped, "
            "CMU/HDM05 ASF); --map overrides with a JSON bone map (motion inspect --write-map writes one).")  # fmt: skip
    mi = msub.add_parser("import", help="retarget many BVH/AMC/npz files into a motion bank",
                         description="Retarget motion files to Anny's rig at one frame rate. " + skel + " OUT is "
                                     "a bank folder, or a .npz file holding every frame (rotvec, translation, "
                                     "clip id).")  # fmt: skip
    mi.add_argument("paths", nargs="+", help="BVH, AMC or clip .npz files, or folders searched recursively")
    mi.add_argument("--out", required=True, help="bank folder, or bank.npz")
    mi.add_argument("--fps", type=float, default=30.0, help="frame rate of the bank, frames/s (default: 30)")
    mi.add_argument("--map", help="JSON bone map to use instead of recognising each skeleton")
    mi.add_argument("--asf", help="the .asf skeleton of the .amc files (default: the actor's .asf beside each)")
    mi.add_argument("--overwrite", action="store_true", help="replace an existing bank")
    mi.add_argument("--quiet", action="store_true", help="no progress bar")
    mi.set_defaults(func=_cmd_motion_import)
    mn = msub.add_parser("inspect", help="show how a motion file's skeleton maps onto Anny",
                         description="Print the recognised convention, the unit scale (metres per file unit), "
                                     "the up and forward axes, the reference pose, the Anny bone each source "
                                     "joint drives and the ignored joints. " + skel)  # fmt: skip
    mn.add_argument("file", help=".bvh or .amc file")
    mn.add_argument("--map", help="JSON bone map to show instead of the recognised one")
    mn.add_argument("--asf", help="the .asf skeleton of an .amc file (default: the actor's .asf beside it)")
    mn.add_argument("--write-map", metavar="MAP.json", help="also write the bone map as JSON, for editing")
    mn.add_argument("--overwrite", action="store_true", help="replace an existing --write-map file")
    mn.set_defaults(func=_cmd_motion_inspect)
    from perennial.config import add_options
    from perennial.motion.prior import PriorConfig

    mp = msub.add_parser("prior", help="train a pose prior (VAE over body and finger poses) on a motion bank",
                         description="Train the pose prior of Motion Distribution Align on every frame of a motion "
                                     "bank (folder or .npz from 'motion import', or one clip) and print its "
                                     "reconstruction error on held-out clips (degrees per bone, cm per joint).")  # fmt: skip
    mp.add_argument("bank", help="motion bank folder or .npz (perennial motion import), or a clip")
    mp.add_argument("--out", required=True, help="prior file to write (.safetensors)")
    add_options(mp, PriorConfig(), ["steps", "latent", "hidden", "batch", "lr", "kl", "joints", "holdout", "fps",
                                    "seed"])  # fmt: skip
    mp.add_argument("--retrieval-out", help="also write the bank's poses as a retrieval bank (.npz, float16)")
    mp.add_argument("--retrieval-fps", type=float, default=10.0, help="frame rate of --retrieval-out (default: 10)")
    mp.add_argument("--overwrite", action="store_true", help="replace existing output files")
    mp.add_argument("--quiet", action="store_true", help="no progress bar")
    mp.set_defaults(func=_cmd_motion_prior)
    mr = msub.add_parser("render", help="render a clip on the body template in a procedural outfit")
    mr.add_argument("clip", help=".bvh, .amc or .npz motion clip")
    mr.add_argument("--out", required=True, help="video file, .mp4 or .gif")
    mr.add_argument("--camera", default="orbit", help="orbit, front, side or back (default: orbit)")
    mr.add_argument("--size", type=int, default=256, help="frame width and height, pixels (default: 256)")
    mr.add_argument("--fps", type=float, default=30.0, help="video frame rate, frames/s (default: 30)")
    mr.add_argument("--seconds", type=float, help="only the first SECONDS of the clip")
    mr.add_argument("--appearance", default="outfit-a", help="outfit name (default: outfit-a)")
    mr.add_argument("--map", help="JSON bone map to use instead of recognising the skeleton")
    mr.add_argument("--asf", help="the .asf skeleton of an .amc clip (default: the actor's .asf beside it)")
    mr.set_defaults(func=_cmd_motion_render)
