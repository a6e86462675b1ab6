"""``perennial bench fewshot``: how fast a new outfit is learned from 5 images, and what it costs the others.

Synthesises appearance A (a full capture) and three new outfits B, C, D (5 training
images each; never used by meta-learning, whose outfits are ``meta-*``), creates the
avatar on A, and makes a copy with a meta-learned prior (:mod:`perennial.learn.meta`).
Then for every new outfit, every variant and every wall-clock budget it learns the
outfit from a copy of the base within that budget (``EngineConfig.seconds``) and
measures the new outfit (PSNR, LPIPS on its held-out views) and A (forgetting =
A's PSNR before minus after). Variants:

- ``baseline``: the replay learn (no prior, no Fisher; the default before the prior);
- ``meta``: replay, the new appearance starting from the prior;
- ``fisher``: replay with Fisher-weighted rays (:mod:`perennial.learn.fisher`);
- ``both``: replay, prior and Fisher;
- ``fast``: the default learn (strategy ``fast``: the prior, shared networks frozen).

The reference is the replay learn's full run (1500 steps, no budget) on each outfit.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from perennial.avatar.field_io import load_field_avatar, save_field_avatar
from perennial.avatar.io import load_avatar
from perennial.avatar.store import AvatarStore
from perennial.evaluate.continual_bench import synth_captures
from perennial.evaluate.protocol import evaluate_avatar
from perennial.learn.continual import learn_appearance
from perennial.learn.create import create_avatar
from perennial.learn.fisher import FisherConfig
from perennial.learn.meta import MetaConfig, meta_learn_prior
from perennial.learn.methods import get_method, preset
from perennial.numerics import numeric_path

VARIANTS = {"baseline": ("replay", False, False), "meta": ("replay", True, False), "fisher": ("replay", False, True),
            "both": ("replay", True, True), "fast": ("fast", True, False)}
"""name: (strategy, prior, Fisher)."""


@dataclass(kw_only=True)
class FewshotBenchConfig:
    """The few-shot benchmark's size."""

    size: int = 192
    """Image size of every capture, pixels."""
    base_cameras: int = 8
    """Cameras of appearance A's capture."""
    base_frames: int = 20
    """Frames of appearance A's capture."""
    create_steps: int = 6000
    """Steps of the base avatar's create."""
    budgets: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0)
    """Wall-clock budgets of a learn, seconds."""
    outfits: int = 3
    """New outfits learned (B, C, D; at most 3)."""
    max_test_views: int = 16
    """Test views per evaluation."""
    meta: MetaConfig = field(default_factory=lambda: preset("field", "create").meta)
    """Meta-learning of the prior."""

    @staticmethod
    def quick() -> FewshotBenchConfig:
        return FewshotBenchConfig(size=96, base_cameras=6, base_frames=6, create_steps=600, budgets=(10.0, 20.0),
                                  outfits=1, max_test_views=8, meta=MetaConfig(iterations=8, tasks=3, size=64, task={"rays_per_step": 1024}))  # fmt: skip


def _eval(path: Path, cap, views: int) -> dict:
    avatar, _, _ = load_avatar(path)
    m = evaluate_avatar(avatar, cap, lpips_nets=("alex",), max_views=views, progress=False, regions=False)["mean"]
    return {"psnr": m["psnr"], "lpips": m["lpips_alex"]}


def run_fewshot_bench(out: str | Path, cfg: FewshotBenchConfig, progress: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    log("synthesising captures ...")
    caps = synth_captures(out / "captures", cfg)
    a, new = caps[0], caps[1 : 1 + cfg.outfits]
    base, base_meta = out / "avatars" / "base", out / "avatars" / "base-meta"
    for p in (base, base_meta):
        shutil.rmtree(p, ignore_errors=True)
    log(f"creating the avatar on {a.appearance} ({cfg.create_steps} steps, no prior) ...")
    create_avatar(base, a, preset("field", "create", steps=cfg.create_steps, meta=None), progress=progress)
    log("meta-learning the prior ...")
    shutil.copytree(base, base_meta, symlinks=True)
    store = AvatarStore(base_meta)
    avatar, version, poses = load_field_avatar(store)
    avatar.prior_info = meta_learn_prior(avatar, get_method("field"), cfg.meta, progress)
    with store.lock():
        save_field_avatar(store, avatar, version.state["appearances"], poses,
                          {"action": "meta", "appearance": a.appearance, "strategy": "meta"}, {"meta": avatar.prior_info})  # fmt: skip
    a_before = _eval(base, a, cfg.max_test_views)["psnr"]
    res: dict = {"config": {k: v for k, v in cfg.__dict__.items() if k != "meta"} | {"meta": cfg.meta.__dict__},
                 "numeric_path": numeric_path(), "meta_seconds": avatar.prior_info["seconds"],
                 "a_psnr_before": a_before, "reference": {}, "runs": []}  # fmt: skip
    work = out / "avatars" / "run"
    for cap in new:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work, symlinks=True)
        log(f"[reference] learning {cap.appearance} with the replay preset ...")
        v = learn_appearance(work, cap, "replay", preset("field", "replay"), progress=False)
        res["reference"][cap.appearance] = _eval(work, cap, cfg.max_test_views) | {"seconds": v.metrics["train"]["seconds"]}
        for variant, (strategy, prior, fisher) in VARIANTS.items():
            for budget in cfg.budgets:
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(base_meta if prior else base, work, symlinks=True)
                config = preset("field", strategy, steps=1_000_000, seconds=budget,
                                fisher=FisherConfig() if fisher else None)  # fmt: skip
                log(f"[{variant}] learning {cap.appearance} in {budget:g} s ...")
                v = learn_appearance(work, cap, strategy, config, progress=False)
                row = {"outfit": cap.appearance, "variant": variant, "budget": budget,
                       "seconds": v.metrics["train"]["seconds"], "steps": v.metrics["train"]["steps_run"]}  # fmt: skip
                row |= _eval(work, cap, cfg.max_test_views)
                row["forgetting_a"] = a_before - _eval(work, a, cfg.max_test_views)["psnr"]
                res["runs"].append(row)
                log(f"    {row['psnr']:.2f} dB, LPIPS {row['lpips']:.3f}, {row['steps']} steps, A -{row['forgetting_a']:.2f} dB")
    res["seconds"] = time.perf_counter() - t0
    res["summary"] = summary(res)
    (out / "fewshot.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "fewshot.md").write_text(format_markdown(res))
    return res


def summary(res: dict) -> dict:
    """Mean over outfits per variant and budget; the reference's mean."""
    out = {}
    for variant in VARIANTS:
        for budget in sorted({r["budget"] for r in res["runs"]}):
            rows = [r for r in res["runs"] if r["variant"] == variant and r["budget"] == budget]
            if rows:
                out[f"{variant}@{budget:g}s"] = {k: statistics.mean(r[k] for r in rows)
                                                 for k in ("psnr", "lpips", "forgetting_a", "steps")}  # fmt: skip
    refs = list(res["reference"].values())
    out["reference"] = {k: statistics.mean(r[k] for r in refs) for k in ("psnr", "lpips", "seconds")}
    return out


def format_markdown(res: dict) -> str:
    s = res["summary"]
    budgets = sorted({r["budget"] for r in res["runs"]})
    md = ["# perennial bench fewshot", "", f"Numeric path: {res['numeric_path']}. Prior meta-learned in "
          f"{res['meta_seconds']:.0f} s. Mean over {len(res['reference'])} new outfits of 5 images each.", "",
          "PSNR (dB) / LPIPS-alex of the new outfit / forgetting of A (dB) after learning within a wall-clock budget:", "",
          "| variant | " + " | ".join(f"{b:g} s" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]  # fmt: skip
    for v in VARIANTS:
        cells = []
        for b in budgets:
            c = s.get(f"{v}@{b:g}s")
            cells.append(f"{c['psnr']:.2f} / {c['lpips']:.3f} / {c['forgetting_a']:.2f}" if c else "")
        md.append(f"| {v} | " + " | ".join(cells) + " |")
    r = s["reference"]
    md += ["", f"Reference (the replay learn, 1500 steps, no budget): {r['psnr']:.2f} dB / {r['lpips']:.3f} in {r['seconds']:.0f} s.", ""]
    return "\n".join(md)
