"""Benchmarks behind ``perennial bench``: each prints the figures it measures.

Timings are medians over repeats within one run (these machines are shared,
so compare ratios measured together, not figures from different runs).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_body(repeats: int = 10) -> dict:
    """Body template: cold/warm construction and forward time at B=1 and B=64."""
    import torch

    from perennial.body.anny import AnnyTemplate, _cache_file

    res: dict = {}
    if not _cache_file().exists():
        t0 = time.perf_counter()
        AnnyTemplate()
        res["cold_construction_s"] = time.perf_counter() - t0
    # warm construction in a fresh process, imports included and excluded
    code = (
        "import time;t0=time.perf_counter();from perennial.body.anny import AnnyTemplate;"
        "t1=time.perf_counter();AnnyTemplate();t2=time.perf_counter();print(t2-t0,t2-t1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    total, construct = map(float, out.stdout.split())
    res["warm_construction_s"] = construct
    res["warm_import_and_construction_s"] = total
    template = AnnyTemplate()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for B in (1, 64):
            rv = torch.randn(B, template.num_bones, 3, generator=g) * 0.2
            tr = torch.zeros(B, 3)
            res[f"forward_B{B}_ms"] = median_ms(lambda rv=rv, tr=tr: template(rv, tr), repeats)
    return res


def bench_raycast(sizes=(256, 512), repeats: int = 10) -> dict:
    """Ray casting the posed body: warp BVH vs the torch z-buffer twin, median ms."""
    import torch

    from perennial.body.anny import load_template
    from perennial.render.raycast import bench_raycast as _bench

    template = load_template()
    rv, tr = template.rest_pose(1)
    tr[:, 2] = 0.9
    with torch.no_grad():
        v = template(rv, tr).vertices[0]
    return _bench(v, template.faces, sizes=sizes, repeats=repeats)


def bench_synth(cameras: int = 8, frames: int = 30, size: int = 256) -> dict:
    """Wall time of ``perennial synth OUT --cameras 8 --frames 30 --size 256`` (warm cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "perennial.cli", "synth", str(Path(tmp) / "cap"),
               "--cameras", str(cameras), "--frames", str(frames), "--size", str(size), "--quiet"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        return {"synth_wall_s": time.perf_counter() - t0, "views": cameras * frames, "size": size}


def default_bvh_samples() -> list[str]:
    """The CMU sample clips shipped beside the repository (``shared/data/motion/cmu``)."""
    here = Path(__file__).resolve()
    for root in [Path.cwd(), *here.parents]:
        d = root.parent / "shared" / "data" / "motion" / "cmu"
        if d.is_dir():
            return sorted(str(p) for p in d.glob("*.bvh"))
    return []


def bench_motion(paths: list[str] | None = None, strip: str | None = None) -> dict:
    """Retargeting figures per clip (joint error, floor, flips) and bank import speed."""
    from perennial.motion.evaluate import bench_motion as _bench

    paths = paths or default_bvh_samples()
    if not paths:
        raise FileNotFoundError("no BVH files given (--bvh) and shared/data/motion/cmu not found")
    res = _bench(paths, strip=strip)
    flat: dict = {}
    for c in res["clips"]:
        name = Path(c.get("source", c.get("path", "clip"))).stem
        for k, v in c.items():
            if isinstance(v, (int, float)):
                flat[f"{name}.{k}"] = v
    for k, v in res["import"].items():
        if isinstance(v, (int, float)):
            flat[f"import.{k}"] = v
    if res.get("strip"):
        flat["strip"] = res["strip"]
    return flat
