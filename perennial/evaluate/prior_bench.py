"""``perennial bench prior``: does a pretrained prior help a new person's avatar, and how fast is pretraining?

For the method of ``--method`` (field, the default, or texture):

1. ``perennial pretrain`` on ``people`` synthetic identities (:func:`perennial.learn.pretrain.pretrain`,
   one process), rendered into ``OUT/prior/cache`` (a prior already there is used as it is).
2. An unseen person: a phenotype drawn from Anny's shape distribution with another seed, another
   outfit, the ``mix`` motion (walk, wave, squat, turn), held-out cameras and frames.
3. For each step budget, an avatar of that person trained from scratch and one from the prior
   (``create --prior``; no meta-learning in either), each evaluated on the held-out cameras
   (``novel_view``) and the held-out frames of training cameras (``novel_pose``): PSNR and LPIPS
   (AlexNet), full frame, at most ``max_views`` views.
4. Pretraining throughput (identities per second, from ``prior.json``) of ``perennial pretrain``
   on the same people in 1 and 2 processes (``--nproc``; gloo on CPU), ``throughput_steps`` each.

Writes ``prior-bench.json`` and ``prior-bench.md`` to ``--out`` (default ``out/bench-prior``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["PriorBenchConfig", "bench_cli", "run_prior_bench"]


@dataclass(kw_only=True)
class PriorBenchConfig:
    """Size of the prior benchmark."""

    method: str = "field"
    """The avatar method (``field`` or ``texture``)."""
    people: int = 8
    """Synthetic identities of the prior."""
    people_cameras: int = 6
    """Cameras of each pretraining capture."""
    people_frames: int = 12
    """Frames of each pretraining capture."""
    size: int = 128
    """Image side of every capture, pixels."""
    pretrain_steps: int = 2000
    """Pretraining steps (global batch 2)."""
    cameras: int = 8
    """Cameras of the unseen person's capture (every 4th held out)."""
    frames: int = 15
    """Frames of the unseen person's capture (every 5th held out on the training cameras)."""
    budgets: tuple[int, ...] = (500, 1500, 6000)
    """Create steps of each from-scratch and from-prior avatar (the target: from the prior, 1500 steps reach
    from-scratch's 6000-step quality)."""
    max_views: int = 24
    """Held-out views evaluated per avatar."""
    throughput_steps: int = 30
    """Pretraining steps of each throughput run (0: no throughput runs)."""
    unseen_seed: int = 9999
    """Seed of the unseen person's phenotype, outfit and cameras (pretraining people use 0-999 with seed 0)."""
    unseen_motion: str = "mix"
    """The unseen person's motion."""

    @classmethod
    def quick(cls) -> PriorBenchConfig:
        return cls(people=4, people_cameras=4, people_frames=8, size=96, pretrain_steps=300, cameras=6, frames=10,
                   budgets=(100, 300), max_views=12, throughput_steps=20)  # fmt: skip


def _unseen(out: Path, cfg: PriorBenchConfig):
    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.learn.pretrain import SyntheticPeople, draw_phenotypes

    if (out / "capture.json").is_file():
        from perennial.capture import read_capture

        return read_capture(out)
    phenotype = draw_phenotypes(1, SyntheticPeople(), seed=cfg.unseen_seed)[0]  # not a pretraining person's seed
    sc = SynthConfig(appearance="unseen", seed=cfg.unseen_seed, motion=cfg.unseen_motion, phenotype=phenotype,
                     cameras=cfg.cameras,
                     frames=cfg.frames, size=cfg.size)  # fmt: skip
    return synthesize(out, sc, overwrite=True, progress=False)


def _fit_and_eval(capture, prior: Path | None, steps: int, cfg: PriorBenchConfig) -> dict:
    from perennial.body.anny import load_template
    from perennial.evaluate.protocol import evaluate_avatar
    from perennial.learn.methods import fit, get_method, preset

    template = load_template(capture.body_info["template"])
    tc = preset(cfg.method, "create", steps=steps, prior=None if prior is None else str(prior), meta=None)
    torch.manual_seed(0)
    avatar = get_method(cfg.method).new(template, capture, tc)
    result = fit(avatar, capture, tc, method=cfg.method)
    ev = evaluate_avatar(avatar, capture, lpips_nets=("alex",), max_views=cfg.max_views, progress=False,
                         regions=False, temporal=False)  # fmt: skip
    row = {"steps": steps, "seconds": result.seconds, "train_psnr_body": result.train_psnr}
    for group in ("novel_view", "novel_pose"):
        g = ev["groups"].get(group, {})
        row |= {f"{group}_psnr": g.get("psnr", float("nan")), f"{group}_lpips": g.get("lpips_alex", float("nan")),
                f"{group}_views": g.get("count", 0)}  # fmt: skip
    return row


def _throughput(method: str, people: list[Path], nproc: int, steps: int, out: Path) -> float:
    """Identities per second of ``perennial pretrain --nproc N`` (its own figure in prior.json)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "perennial.cli", "pretrain", str(out), "--method", method, "--captures", *map(str, people),
           "--synthetic", "0", "--steps", str(steps), "--checkpoint-every", "0", "--nproc", str(nproc), "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"pretrain --nproc {nproc} failed: {r.stderr[-2000:]}")
    return json.loads((out / "prior.json").read_text())["provenance"]["samples_per_s"]


def run_prior_bench(out: str | Path, cfg: PriorBenchConfig) -> dict:
    from perennial.learn.engine import EngineConfig
    from perennial.learn.pretrain import PretrainConfig, SyntheticPeople, pretrain
    from perennial.numerics import numeric_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prior = out / "prior"
    pc = PretrainConfig(method=cfg.method, engine=EngineConfig(steps=cfg.pretrain_steps, checkpoint_every=0),
                        synthetic=SyntheticPeople(count=cfg.people, cameras=cfg.people_cameras,
                                                  frames=cfg.people_frames, size=cfg.size))  # fmt: skip
    if not (prior / "prior.json").is_file():
        pretrain(prior, [], pc, progress=False)
    prov = json.loads((prior / "prior.json").read_text())["provenance"]
    capture = _unseen(out / "unseen", cfg)
    curves: dict[str, list[dict]] = {"scratch": [], "prior": []}
    for steps in cfg.budgets:
        curves["scratch"].append(_fit_and_eval(capture, None, steps, cfg))
        curves["prior"].append(_fit_and_eval(capture, prior, steps, cfg))
        print(f"  {steps} steps: scratch {curves['scratch'][-1]['novel_view_psnr']:.2f} / "
              f"{curves['scratch'][-1]['novel_pose_psnr']:.2f} dB, prior {curves['prior'][-1]['novel_view_psnr']:.2f} / "
              f"{curves['prior'][-1]['novel_pose_psnr']:.2f} dB (novel view / novel pose)", flush=True)  # fmt: skip
    people = sorted((prior / "cache").iterdir()) if cfg.throughput_steps else []
    rates = {n: _throughput(cfg.method, people, n, cfg.throughput_steps, out / f"throughput-{n}") if people
             else float("nan") for n in (1, 2)}  # fmt: skip
    res = {"config": asdict(cfg), "numeric_path": numeric_path("off" if cfg.method == "field" else "auto"), "cpus": os.cpu_count(),
           "pretrain": {"identities": len(prov["identities"]), "steps": prov["steps_run"], "seconds": prov["seconds"],
                        "train_psnr_body": prov["train_psnr_body"]},
           "unseen_phenotype": capture.body_info.get("phenotype"), "curves": curves,
           "throughput_identities_per_s": {str(n): r for n, r in rates.items()},
           "seconds": time.perf_counter() - t0}  # fmt: skip
    (out / "prior-bench.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "prior-bench.md").write_text(format_summary(res) + "\n")
    return res


def format_summary(res: dict) -> str:
    lines = [f"method: {res['config'].get('method', 'field')}; numeric path: {res['numeric_path']}", "","| steps | arm | novel view PSNR | novel view LPIPS | novel pose PSNR | novel pose LPIPS | s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, rows in res["curves"].items():
        for r in rows:
            lines.append(f"| {r['steps']} | {arm} | {r['novel_view_psnr']:.2f} | {r['novel_view_lpips']:.3f} | "
                         f"{r['novel_pose_psnr']:.2f} | {r['novel_pose_lpips']:.3f} | {r['seconds']:.0f} |")  # fmt: skip
    p, t = res["pretrain"], res["throughput_identities_per_s"]
    lines.append(f"\npretraining: {p['identities']} identities, {p['steps']} steps in {p['seconds']:.0f} s; "
                 f"throughput {t['1']:.2f} identities/s at 1 process, {t['2']:.2f} at 2 ({res['cpus']} CPUs)")  # fmt: skip
    return "\n".join(lines)


def _flat(res: dict) -> dict:
    flat = {}
    for arm, rows in res["curves"].items():
        for r in rows:
            for k, v in r.items():
                if k != "steps":
                    flat[f"{arm}.{r['steps']}.{k}"] = v
    flat |= {f"throughput.{n}": v for n, v in res["throughput_identities_per_s"].items()}
    return flat | {"seconds": res["seconds"]}


def bench_cli(args) -> dict:
    """``perennial bench prior [--method field|texture] [--quick] [--out DIR] [--json FILE]``: flat figures
    (the CLI prints them)."""
    import dataclasses

    cfg = PriorBenchConfig.quick() if args.quick else PriorBenchConfig()
    cfg = dataclasses.replace(cfg, method=getattr(args, "method", None) or "field")
    out = args.out or f"out/bench-prior-{cfg.method}"
    res = run_prior_bench(out, cfg)
    print(format_summary(res))
    print(f"wrote {out}/prior-bench.json, prior-bench.md")
    return _flat(res)
