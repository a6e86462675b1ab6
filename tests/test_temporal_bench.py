"""The temporal bench's figures over several seeds: means, spreads and paired differences to ``base``."""

import math
import statistics

import pytest

from perennial.evaluate.temporal_figures import aggregate, format_markdown


def _row(seed: int, lpips: float, tlpips: float) -> dict:
    return {"seed": seed, "ssim": 0.9, "lpips": lpips, "psnr": 28.0 + lpips, "tlpips": tlpips, "fid": 100.0,
            "kid": 0.1, "kid_std": 0.01, "tlpips_pairs": 11, "n_real": 18, "n_fake": 18, "train_seconds": 10.0,
            "steps": 800, "groups": {"novel_view": {"lpips": lpips, "psnr": 28.0, "count": 9}}}  # fmt: skip


def test_aggregate_pairs_each_variant_with_base_seed_by_seed():
    base = [_row(0, 0.10, 0.005), _row(1, 0.12, 0.006), _row(2, 0.11, 0.004)]
    full = [_row(0, 0.09, 0.006), _row(1, 0.125, 0.004), _row(2, 0.10, 0.003)]
    runs = aggregate({"skirt.base": base, "skirt.full": full})
    f = runs["skirt.full"]
    assert f["lpips"] == pytest.approx((0.09 + 0.125 + 0.10) / 3)
    assert f["sd"]["lpips"] == pytest.approx(statistics.stdev([0.09, 0.125, 0.10]))
    d = [-0.01, 0.005, -0.01]  # full - base, seed by seed
    v = f["vs_base"]["lpips"]
    assert v["mean"] == pytest.approx(sum(d) / 3)
    assert v["se"] == pytest.approx(statistics.stdev(d) / math.sqrt(3))
    assert (v["lower"], v["seeds"]) == (2, 3)
    assert f["vs_base"]["tlpips"]["lower"] == 2
    assert "vs_base" not in runs["skirt.base"]
    # a variant whose base seeds are missing is not paired; one of another capture neither
    partial = aggregate({"skirt.base": base[:1], "skirt.full": full, "painted.full": full})
    assert partial["skirt.full"]["vs_base"]["lpips"]["seeds"] == 1
    assert "vs_base" not in partial["painted.full"]


def test_markdown_shows_spread_and_paired_table_only_with_several_seeds():
    runs = aggregate({"skirt.base": [_row(0, 0.1, 0.005), _row(1, 0.12, 0.006)],
                      "skirt.full": [_row(0, 0.09, 0.004), _row(1, 0.13, 0.005)]})  # fmt: skip
    md = format_markdown({"numeric_path": "cpu fp32", "config": {}, "runs": runs, "speed": {}})
    assert "| full | 0.9000 ± 0.0000 | 0.1100 ± 0.0283 |" in md
    assert "| full | +0.0000 ± 0.0100 (1/2) | -0.0010 ± 0.0000 (2/2) |" in md
    one = format_markdown({"numeric_path": "cpu fp32", "config": {}, "speed": {},
                           "runs": aggregate({"skirt.base": [_row(0, 0.1, 0.005)], "skirt.full": [_row(0, 0.09, 0.004)]})})  # fmt: skip
    assert "Paired with" not in one and "| full | 0.9000 | 0.0900 | 0.0040 |" in one


def test_factor_effects_recover_known_main_effects_and_interaction(tmp_path):
    """All eight combinations of (spatial, temporal, GAN) with LPIPS = 0.1 + 0.01 S + 0.002 G + 0.005 S T
    (+ a seed offset): spatial +0.0125, temporal +0.0025, GAN +0.002, spatial x temporal +0.0025."""
    import json

    from perennial.evaluate.temporal_figures import VARIANTS, factor_effects, merge_runs

    per_seed = {}
    for v, (s, t, g) in VARIANTS.items():
        per_seed[f"skirt.{v}"] = [_row(seed, 0.1 + 0.01 * s + 0.002 * g + 0.005 * s * t + 0.003 * seed, 0.005)
                                  for seed in range(3)]  # fmt: skip
    runs = aggregate(per_seed)
    e = factor_effects(runs, "skirt")
    want = {"spatial": 0.0125, "temporal": 0.0025, "gan": 0.002, "spatial x temporal": 0.0025}
    for name, value in want.items():
        assert e[name]["lpips"]["mean"] == pytest.approx(value) and e[name]["lpips"]["seeds"] == 3
        assert e[name]["lpips"]["se"] == pytest.approx(0, abs=1e-12)  # the seed offset cancels
    assert factor_effects(aggregate({k: v for k, v in per_seed.items() if "only_gan" not in k}), "skirt") is None
    assert "Effect of each part (skirt" in format_markdown({"numeric_path": "p", "config": {}, "runs": runs, "speed": {}})
    # two runs of one setting join: the only_* variants from one, the rest from the other
    for name, keys in (("a", [k for k in per_seed if "only" not in k]), ("b", [k for k in per_seed if "only" in k])):
        res = {"config": {"size": 128, "variants": keys}, "numeric_path": "p", "speed": {},
               "runs": aggregate({k: per_seed[k] for k in keys})}  # fmt: skip
        (tmp_path / f"{name}.json").write_text(json.dumps(res))
    merged = merge_runs([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert factor_effects(merged["runs"], "skirt")["spatial"]["lpips"]["mean"] == pytest.approx(0.0125)
    other = {"config": {"size": 256}, "numeric_path": "p", "speed": {}, "runs": {}}
    (tmp_path / "c.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="another setting"):
        merge_runs([str(tmp_path / "a.json"), str(tmp_path / "c.json")])
