"""Small helpers every layer uses: the cache folder, file hashes, timings, PSNR.

Sits beside the layers (imports nothing of ours), like ``perennial._warp``.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_dir", "median_ms", "psnr_from_mse", "sha256_file"]


def cache_dir(sub: str | None = None) -> Path:
    """The perennial cache folder, created on demand.

    ``$PERENNIAL_CACHE`` if set, else ``$XDG_CACHE_HOME/perennial``, else
    ``~/.cache/perennial``; ``sub`` names a folder inside it.
    """
    root = os.environ.get("PERENNIAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "perennial"
    )
    path = Path(root).expanduser()
    if sub:
        path = path / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path, digest=None) -> str:
    """SHA-256 (hex) of a file, streamed in 1 MiB blocks.

    Args:
        path: the file.
        digest: a ``hashlib`` object to feed instead of a fresh one (to hash several
            files into one digest); its hex digest so far is returned.
    """
    digest = digest if digest is not None else hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of values in [0, 1] (``inf`` for 0, ``nan`` for nan)."""
    if math.isnan(mse):
        return float("nan")
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)
