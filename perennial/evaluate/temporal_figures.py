"""The temporal bench's figures: per-seed rows aggregated, paired with ``base``, the parts' effects, Markdown.

:func:`aggregate` turns the per-seed rows of :mod:`perennial.evaluate.temporal_bench` into means, spreads and
paired differences to ``base``; :func:`factor_effects` estimates each part's effect when all eight
combinations of (spatial attention, temporal attention, temporal discriminator) ran on the same seeds: per
seed, the mean of the four combinations with the part minus the four without (a 2^3 factorial design), and
the spatial x temporal interaction; :func:`format_markdown` writes the tables. ``python -m
perennial.evaluate.temporal_bench --merge A/temporal.json B/temporal.json`` joins runs (e.g. the ablations
and the ``only_*`` variants) made with the same settings.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

__all__ = ["ABLATIONS", "METRICS", "VARIANTS", "aggregate", "factor_effects", "format_markdown", "merge_runs"]

VARIANTS = {
    "full": (True, True, True),
    "no_spatial": (False, True, True),
    "no_temporal": (True, False, True),
    "no_gan": (True, True, False),
    "base": (False, False, False),
    "only_spatial": (True, False, False),
    "only_temporal": (False, True, False),
    "only_gan": (False, False, True),
}
"""name: (spatial attention, temporal attention, temporal discriminator). The first five are the bench's
ablations of ``full`` (RAM-Avatar's Table 3); the ``only_*`` ones complete the eight combinations, for
telling the parts' effects apart (``--variants``)."""
ABLATIONS = ("full", "no_spatial", "no_temporal", "no_gan", "base")
METRICS = ("ssim", "lpips", "tlpips", "fid", "kid", "psnr")

PAIRED = ("lpips", "tlpips", "kid", "ssim", "psnr")
"""The figures compared seed by seed with ``base`` (and the columns of the difference tables)."""
FACTORS = ("spatial", "temporal", "gan")
"""The three parts, in the order of :data:`VARIANTS`' tuples."""


def sd(xs: list[float]) -> float:
    """Sample standard deviation (nan for fewer than two)."""
    return statistics.stdev(xs) if len(xs) > 1 else float("nan")


def _summary(d: list[float]) -> dict:
    return {"mean": statistics.fmean(d), "se": sd(d) / len(d) ** 0.5, "lower": sum(x < 0 for x in d), "seeds": len(d)}


def _difference_row(name: str, d: dict) -> str:
    """A Markdown row of :data:`PAIRED` differences: mean ± standard error (seeds below 0 / seeds)."""
    cells = [f"{d[m]['mean']:+.{k}f} ± {d[m]['se']:.{k}f} ({d[m]['lower']}/{d[m]['seeds']})"
             for m, k in ((m, 2 if m == "psnr" else 4) for m in PAIRED)]  # fmt: skip
    return f"| {name} | " + " | ".join(cells) + " |"


_DIFFERENCE_HEADER = ["| {} | Δ LPIPS | Δ tLPIPS | Δ KID | Δ SSIM | Δ PSNR |", "|---|---|---|---|---|---|"]


def aggregate(per_seed: dict[str, list[dict]]) -> dict[str, dict]:
    """Each ``kind.variant``'s figures over its seeds: the means (under the per-seed rows' names), their
    standard deviations (``sd``), the rows themselves (``seeds``) and, where ``base`` ran the same seeds of
    the same capture, the paired differences to it (``vs_base``: mean, standard error, how many seeds lower)."""
    runs: dict[str, dict] = {}
    for key, rows in per_seed.items():
        agg = {m: statistics.fmean(r[m] for r in rows) for m in (*METRICS, "kid_std", "train_seconds")}
        agg |= {k: rows[0][k] for k in ("tlpips_pairs", "n_real", "n_fake", "steps")}
        agg["groups"] = {g: {m: statistics.fmean(r["groups"][g][m] for r in rows) for m in ("lpips", "psnr")}
                         for g in rows[0]["groups"]}  # fmt: skip
        agg["sd"] = {m: sd([r[m] for r in rows]) for m in METRICS}
        agg["seeds"] = rows
        runs[key] = agg
    for key, agg in runs.items():
        base = {r["seed"]: r for r in per_seed.get(key.split(".")[0] + ".base", [])}
        pairs = [(r, base[r["seed"]]) for r in agg["seeds"] if r["seed"] in base]
        if not key.endswith(".base") and pairs:
            agg["vs_base"] = {m: _summary([r[m] - b[m] for r, b in pairs]) for m in PAIRED}
    return runs


def factor_effects(runs: dict[str, dict], kind: str) -> dict[str, dict] | None:
    """Each part's effect on ``kind``'s capture when all eight :data:`VARIANTS` ran on the same seeds, else None.

    Per seed: the mean over the four combinations with the part minus the four without (the other two
    parts' levels balanced); ``spatial x temporal``: the spatial part's effect with the temporal part minus
    its effect without, halved (the usual 2^3 interaction contrast). Returns ``{effect: {metric: mean, se,
    lower, seeds}}`` over the seeds all eight have.
    """
    rows = {VARIANTS[v]: {r["seed"]: r for r in runs[f"{kind}.{v}"]["seeds"]}
            for v in VARIANTS if f"{kind}.{v}" in runs}  # fmt: skip
    if len(rows) < len(VARIANTS):
        return None
    seeds = sorted(set.intersection(*(set(r) for r in rows.values())))
    if not seeds:
        return None

    def contrast(sign) -> dict:  # sign(levels) is +1 or -1; per seed the signed sum over the combinations / 4
        return {m: _summary([sum(sign(c) * rows[c][s][m] for c in rows) / 4 for s in seeds]) for m in PAIRED}

    out = {f: contrast(lambda c, i=i: 1 if c[i] else -1) for i, f in enumerate(FACTORS)}
    out["spatial x temporal"] = contrast(lambda c: 1 if c[0] == c[1] else -1)
    return out


def merge_runs(paths: list[str]) -> dict:
    """One result from several ``temporal.json`` of one setting (their configs equal but for the variants and
    seeds): their per-seed rows, aggregated again. A row of a variant and seed in two runs is kept once (the
    first).

    Raises:
        ValueError: runs of different settings or numeric paths.
    """
    loaded = [json.loads(Path(p).read_text()) for p in paths]
    differ = {"variants", "seeds", "first_seed", "speed_size", "quality"}
    base = {k: v for k, v in loaded[0]["config"].items() if k not in differ}
    per_seed: dict[str, list[dict]] = {}
    for path, res in zip(paths, loaded):
        mine = {k: v for k, v in res["config"].items() if k not in differ}
        if mine != base or res["numeric_path"] != loaded[0]["numeric_path"]:
            raise ValueError(f"{path}: another setting than {paths[0]} ({mine} against {base})")
        for key, agg in res["runs"].items():
            have = {r["seed"] for r in per_seed.get(key, [])}
            per_seed.setdefault(key, []).extend(r for r in agg["seeds"] if r["seed"] not in have)
    config = {**loaded[0]["config"], "merged": list(paths)}
    return {"config": config, "numeric_path": loaded[0]["numeric_path"], "runs": aggregate(per_seed), "speed": {}}


def _by_group(row: dict) -> str:
    g = row.get("groups", {})
    return " / ".join(
        f"{g[k]['lpips']:.4f}" if k in g else "-" for k in ("novel_view", "novel_pose")
    )


def format_markdown(res: dict) -> str:
    """The figures as Markdown tables (one per capture, and the speed)."""
    lines = [f"numeric path: {res['numeric_path']}; config: {json.dumps(res['config'])}", ""]
    kinds = sorted({k.split(".")[0] for k in res["runs"]}, key=lambda k: k != "painted")
    for kind in kinds:
        lines += [f"### {kind}", "", "| variant | SSIM | LPIPS | tLPIPS | FID | KID | PSNR | LPIPS novel view / pose | train s |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        variants = [v for v in VARIANTS if f"{kind}.{v}" in res["runs"]]
        for variant in variants:
            r = res["runs"][f"{kind}.{variant}"]
            n, spread = len(r.get("seeds", [r])), r.get("sd", {})

            def f(m: str, d: int = 4, r=r, n=n, spread=spread) -> str:  # mean, and ± its spread over seeds
                return f"{r[m]:.{d}f}" + (f" ± {spread[m]:.{d}f}" if n > 1 else "")

            kid = f("kid") if n > 1 else f"{r['kid']:.4f} ± {r['kid_std']:.4f}"
            lines.append(f"| {variant} | {f('ssim')} | {f('lpips')} | {f('tlpips')} | {f('fid', 1)} | {kid} | "
                         f"{f('psnr', 2)} | {_by_group(r)} | {r['train_seconds']:.0f} |")  # fmt: skip
        r = res["runs"][f"{kind}.{variants[0]}"]
        n = len(r.get("seeds", [r]))
        spread = (f"Means ± standard deviations over {n} seeds (KID: of the means over subsets); "
                  if n > 1 else "One seed; KID ± its spread over subsets; ")  # fmt: skip
        lines += ["", spread + f"tLPIPS over {r['tlpips_pairs']} pairs; FID/KID on {r['n_real']} real and "
                  f"{r['n_fake']} rendered test views (few images: read KID, FID is biased upwards).", ""]  # fmt: skip
        paired = [(v, res["runs"][f"{kind}.{v}"]["vs_base"]) for v in variants if "vs_base" in res["runs"][f"{kind}.{v}"]]
        if n > 1 and paired:
            lines += [f"Paired with `base`, seed by seed ({kind}): mean difference ± its standard error; in brackets "
                      "the seeds where the variant's figure is lower (better for LPIPS, tLPIPS, KID; worse for SSIM, "
                      "PSNR)", "", _DIFFERENCE_HEADER[0].format("variant"), _DIFFERENCE_HEADER[1]]  # fmt: skip
            lines += [_difference_row(v, d) for v, d in paired] + [""]
        effects = factor_effects(res["runs"], kind)
        if effects:
            lines += [f"Effect of each part ({kind}, all eight combinations on {effects['gan']['lpips']['seeds']} seeds): "
                      "per seed the mean of the four combinations with it minus the four without; mean ± standard "
                      "error over seeds (in brackets the seeds where it is negative)", "",
                      _DIFFERENCE_HEADER[0].format("part"), _DIFFERENCE_HEADER[1]]  # fmt: skip
            lines += [_difference_row(name, d) for name, d in effects.items()] + [""]
    if res["speed"]:
        load = res.get("speed_load", [float("nan")] * 2)
        lines += ["### speed", "", f"{res['config']['speed_size']}^2, medians of the variants' frames interleaved; "
                  f"1-minute load average {load[0]:.2f} before, {load[1]:.2f} after", "",
                  "| variant | path | frame ms | FPS | min ms | attention ms | generator ms | raster ms |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant, s in res["speed"].items():
        lines.append(f"| {variant} | {s['path']} | {s['ms']:.1f} | {s['fps']:.1f} | {s.get('min_ms', float('nan')):.1f} | "
                     f"{s['attention_ms']:.1f} | {s['generator_ms']:.1f} | {s['raster_ms']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
