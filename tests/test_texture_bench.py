"""The texture avatar's speed benchmarks run and report what they promise (tiny sizes)."""

from __future__ import annotations

from perennial.avatar.texture.model import STAGES
from perennial.evaluate.bench_texture import (
    bench_generator_widths,
    bench_texture_lookup,
    bench_texture_raster,
    bench_texture_speed,
)


def test_bench_texture_speed_reports_every_stage_and_path(template):
    res = bench_texture_speed(sizes=(48,), repeats=1)
    assert set(res["paths"]) == {"off", "on"} and "fp32" in res["paths"]["off"]
    assert "bf16" in res["paths"]["on"] and res["numeric_path"].startswith("cpu")
    for m in ("off", "on"):
        assert res[f"{m}_48_ms"] > 0 and res[f"{m}_48_fps"] == 1000.0 / res[f"{m}_48_ms"]
        for s in STAGES:
            assert res[f"{m}_48_{s}_ms"] >= 0
        assert res[f"{m}_48_covered"] > 50
    assert res["fastest"][48] in ("off", "on")
    assert 0 < res["shared_MB"] <= 20 and 0 < res["appearance_MB"] <= 4


def test_bench_texture_choices_run(template):
    r = bench_texture_raster(sizes=(48,), repeats=1)
    assert r["warp_48_ms"] > 0 and r["torch_48_ms"] > 0 and r["covered_48"] > 50
    t = bench_texture_lookup(sizes=(48,), repeats=1, atlas=32, triplane=16)
    assert {"uv_forward_48_ms", "triplane_forward_backward_48_ms", "uv_MB", "triplane_MB"} <= set(t)
    g = bench_generator_widths(widths=((4, 8),), sizes=(48,), repeats=1, modes=("off",))
    assert g["4-8_off_48_ms"] > 0 and g["4-8_params"] > 0
