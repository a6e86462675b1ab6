"""``perennial bench continual``: does the avatar keep its past appearances?

Synthesises appearance A (a full capture) and appearances B, C, D (5 training
images each: 5 cameras x 1 frame, in poses of other motions; held-out cameras
and a held-out frame as test views), creates the avatar on A once, then for
every strategy learns B, C, D in turn and evaluates every appearance learned so
far after each step. R[i][j] = metric on appearance j after learning appearance i.

Summary per strategy: mean final PSNR; forgetting = mean over the past
appearances (all but the last) of (best PSNR ever - final PSNR); seconds per new
appearance; bytes added per appearance; and for the whole bench the render time
of a frame with 20 appearances stored vs 1.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from perennial.avatar.io import load_avatar
from perennial.avatar.store import AvatarStore
from perennial.capture.synth import SynthConfig, synthesize
from perennial.evaluate.protocol import evaluate_avatar
from perennial.learn.continual import learn_appearance
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset
from perennial.numerics import numeric_path

# Outfits that differ in colour and pattern (checked with Outfit.from_name):
# a: green striped top + solid shorts; h: orange checked top + checked trousers;
# i: blue solid top + noise shorts; j: mint noise top + solid shorts.
APPEARANCES = ("outfit-a", "outfit-h", "outfit-i", "outfit-j")
NEW_MOTIONS = ("wave", "squat", "turn")


@dataclass(kw_only=True)
class ContinualBenchConfig:
    size: int = 192
    """Image size of every capture, pixels."""
    base_cameras: int = 8
    base_frames: int = 20
    create_steps: int = 6000
    learn_steps: int = 1500
    max_test_views: int = 24
    """Test views per appearance and evaluation."""
    strategies: tuple[str, ...] = ("replay", "finetune", "joint", "shared-local")

    @staticmethod
    def quick() -> ContinualBenchConfig:
        # 800/300 steps took 12 min on a contended 2-core machine; 600/200 cut the training by a third
        return ContinualBenchConfig(size=96, base_cameras=6, base_frames=6, create_steps=600, learn_steps=200, max_test_views=8)


def synth_captures(root: Path, cfg) -> list:
    """Appearance A (``cfg.base_cameras`` x ``cfg.base_frames``) and B, C, D (5 training images each), at ``cfg.size``."""
    caps = [synthesize(root / APPEARANCES[0], SynthConfig(appearance=APPEARANCES[0], cameras=cfg.base_cameras,
                       frames=cfg.base_frames, size=cfg.size), overwrite=True, progress=False)]  # fmt: skip
    for name, motion in zip(APPEARANCES[1:], NEW_MOTIONS):
        # 8 cameras, frames 0 and 1: cameras 1, 4, 7 held out; frame 1 held out -> 5 training images
        caps.append(synthesize(root / name, SynthConfig(appearance=name, cameras=8, frames=2, size=cfg.size, motion=motion,
                                                        test_camera_every=3, test_frame_every=2), overwrite=True, progress=False))  # fmt: skip
        assert len(caps[-1].views_of("train")) == 5
    return caps


def _evaluate(path: Path, caps: list, upto: int, max_views: int) -> list[dict]:
    avatar, _, _ = load_avatar(path)
    rows = []
    for cap in caps[: upto + 1]:
        m = evaluate_avatar(avatar, cap, lpips_nets=("alex",), max_views=max_views, progress=False)["mean"]
        rows.append({"psnr": m["psnr"], "ssim": m["ssim"], "lpips": m["lpips_alex"], "psnr_bbox": m["psnr_bbox"]})
    return rows


def _weights_bytes(path: Path, n: int) -> int:
    return (path / "versions" / str(n) / "weights.safetensors").stat().st_size


def render_scaling(path: Path, counts=(1, 20), repeats: int = 7) -> dict:
    """Median render time of appearance 0 with ``counts`` appearances stored."""
    from perennial.motion.procedural import procedural_motion
    from perennial.render.camera import Camera
    from perennial.util import median_ms

    avatar, _, _ = load_avatar(path)
    first = avatar.appearance_names[0]
    rv, off = procedural_motion("walk", 8)
    cam = Camera.look_at([0.0, -3.0, 0.9], [0.0, 0.0, 0.85], 256, 256, fov_deg=36.0)
    out = {}
    for n in counts:
        while len(avatar.appearance_names) < n:
            avatar.field.add_appearance(f"extra-{len(avatar.appearance_names)}")
        out[f"render_ms_{n}_appearances"] = median_ms(
            lambda: avatar.render_image(cam, rv[0], off[0] + torch.tensor([0.0, 0.0, 0.87]), first), repeats)
    return out


def run_continual_bench(out: str | Path, cfg: ContinualBenchConfig, progress: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = print if progress else (lambda *a, **k: None)
    log(f"synthesising {len(APPEARANCES)} captures ...")
    caps = synth_captures(out / "captures", cfg)
    base = out / "avatars" / "base"
    if base.exists():
        shutil.rmtree(base)
    log(f"creating the avatar on {APPEARANCES[0]} ({cfg.create_steps} steps) ...")
    create_avatar(base, caps[0], preset("field", "create", steps=cfg.create_steps), progress=progress)
    base_row = _evaluate(base, caps, 0, cfg.max_test_views)
    results: dict = {"config": cfg.__dict__ | {"strategies": list(cfg.strategies)}, "appearances": list(APPEARANCES),
                     "numeric_path": numeric_path(), "strategies": {}}  # fmt: skip
    for strategy in cfg.strategies:
        path = out / "avatars" / strategy
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(base, path, symlinks=True)
        R = [base_row]
        seconds = []
        for i, cap in enumerate(caps[1:], start=1):
            log(f"[{strategy}] learning {cap.appearance} ...")
            v = learn_appearance(path, cap, strategy, preset("field", strategy, steps=cfg.learn_steps), progress=progress)
            seconds.append(v.metrics["train"]["seconds"])
            R.append(_evaluate(path, caps, i, cfg.max_test_views))
        final = R[-1]
        past = range(len(caps) - 1)
        forgetting = statistics.mean(max(R[i][j]["psnr"] for i in range(j, len(R))) - final[j]["psnr"] for j in past)
        n_last = AvatarStore(path).current_number()
        results["strategies"][strategy] = {
            "R": R,
            "mean_final_psnr": statistics.mean(r["psnr"] for r in final),
            "mean_final_ssim": statistics.mean(r["ssim"] for r in final),
            "mean_final_lpips": statistics.mean(r["lpips"] for r in final),
            "forgetting_db": forgetting,
            "seconds_per_appearance": statistics.mean(seconds),
            "bytes_per_appearance": (_weights_bytes(path, n_last) - _weights_bytes(path, 1)) / (len(caps) - 1),
        }
        log(format_summary(results))
    results["render_scaling"] = render_scaling(out / "avatars" / cfg.strategies[0])
    results["seconds"] = time.perf_counter() - t0
    (out / "continual.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "continual.md").write_text(format_markdown(results))
    plot_matrices(results, out / "continual.png")
    return results


def format_summary(results: dict) -> str:
    lines = [f"{'strategy':13s} {'final PSNR':>10s} {'SSIM':>6s} {'LPIPS':>6s} {'forget dB':>9s} {'s/app':>6s} {'MB/app':>6s}"]
    for s, r in results["strategies"].items():
        lines.append(f"{s:13s} {r['mean_final_psnr']:10.2f} {r['mean_final_ssim']:6.3f} {r['mean_final_lpips']:6.3f} "
                     f"{r['forgetting_db']:9.2f} {r['seconds_per_appearance']:6.0f} {r['bytes_per_appearance'] / 1e6:6.2f}")  # fmt: skip
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    apps = results["appearances"]
    md = ["# perennial bench continual", "", f"Numeric path: {results.get('numeric_path', 'not recorded')}.", "",
          "R[i][j]: PSNR (dB) / SSIM / LPIPS-alex on appearance j (columns) after learning appearance i (rows).", ""]  # fmt: skip
    for s, r in results["strategies"].items():
        md += [f"## {s}", "", "| after \\ on | " + " | ".join(apps) + " |", "|---" * (len(apps) + 1) + "|"]
        for i, row in enumerate(r["R"]):
            cells = [f"{c['psnr']:.2f} / {c['ssim']:.3f} / {c['lpips']:.3f}" for c in row] + [""] * (len(apps) - len(row))
            md.append(f"| {apps[i]} | " + " | ".join(cells) + " |")
        md.append("")
    md += ["## Summary", "", "```", format_summary(results), "```", "", "Render time (ms, 256², median): " + json.dumps(results.get("render_scaling", {})), ""]
    return "\n".join(md)


def plot_matrices(results: dict, path: Path) -> Path:
    """One PSNR matrix per strategy as coloured cells with their values (PIL, no matplotlib)."""
    from PIL import Image, ImageDraw

    apps = results["appearances"]
    strategies = list(results["strategies"])
    cell, pad, head = 64, 16, 20
    n = len(apps)
    W = len(strategies) * (n * cell + pad) + pad
    H = head + n * cell + pad + 14
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    vals = [c["psnr"] for s in strategies for row in results["strategies"][s]["R"] for c in row]
    lo, hi = min(vals), max(vals)
    for k, s in enumerate(strategies):
        x0 = pad + k * (n * cell + pad)
        draw.text((x0, 4), f"{s}: forget {results['strategies'][s]['forgetting_db']:.2f} dB", fill=(0, 0, 0))
        for i, row in enumerate(results["strategies"][s]["R"]):
            for j, c in enumerate(row):
                t = (c["psnr"] - lo) / max(hi - lo, 1e-6)
                colour = tuple(int(v) for v in np.array([220, 60, 40]) * (1 - t) + np.array([40, 170, 80]) * t)
                box = (x0 + j * cell, head + i * cell, x0 + (j + 1) * cell - 2, head + (i + 1) * cell - 2)
                draw.rectangle(box, fill=colour)
                draw.text((box[0] + 8, box[1] + 24), f"{c['psnr']:.1f}", fill=(255, 255, 255))
        draw.text((x0, head + n * cell + 2), "rows: after learning; cols: evaluated on", fill=(80, 80, 80))
    img.save(path)
    return path
