"""The numeric path: bf16 autocast where the hardware has native bf16, fp32 elsewhere.

CPUs differ: an AVX2-only AMD EPYC emulates bf16 matmul (measured ~10x slower than
fp32), an Intel Xeon with AMX-BF16 or a CPU with AVX512-BF16 runs it 2-4x faster
than fp32. A config's ``autocast`` field is ``"auto"`` (decided here from the CPU
flags, or ``torch.cuda.is_bf16_supported()`` on a GPU), ``"on"`` or ``"off"``.

``$PERENNIAL_AUTOCAST`` (``on`` / ``off``) pins what ``"auto"`` means: the test
suite pins it to ``off`` so that no test's outcome depends on the host, and the
tests of fast paths run both paths explicitly.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from perennial.errors import ConfigError

__all__ = ["AUTOCAST_MODES", "autocast", "bf16_enabled", "cpu_has_fast_bf16", "numeric_path", "one_thread"]

AUTOCAST_MODES = ("auto", "on", "off")
BF16_UNIT_ROUNDOFF = 2.0**-8
"""Unit roundoff of bfloat16 (8 significant bits): a rounding moves a value by at most this, relatively."""


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU lists ``amx_bf16`` or ``avx512_bf16`` (native bf16 matmul)."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def bf16_enabled(mode: str, device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast is on for ``mode`` (``auto``/``on``/``off``) on ``device``.

    Raises:
        ConfigError: an unknown mode.
    """
    if mode not in AUTOCAST_MODES:
        raise ConfigError(f"autocast must be one of {', '.join(AUTOCAST_MODES)}, got {mode!r}")
    kind = torch.device(device).type
    if mode == "auto":
        pinned = os.environ.get("PERENNIAL_AUTOCAST", "").strip().lower()
        if pinned in ("on", "off"):
            mode = pinned
    if mode == "off" or kind not in ("cpu", "cuda"):
        return False
    if mode == "on":
        return True
    return cpu_has_fast_bf16() if kind == "cpu" else torch.cuda.is_bf16_supported()


def autocast(mode: str, device: torch.device | str = "cpu"):
    """``torch.autocast`` to bf16 on ``device`` when :func:`bf16_enabled`, else a no-op context."""
    kind = torch.device(device).type
    return torch.autocast(kind if kind in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16,
                          enabled=bf16_enabled(mode, device))  # fmt: skip


def numeric_path(mode: str = "auto", device: torch.device | str = "cpu") -> str:
    """One line saying which path ``mode`` takes on ``device`` and why (printed by every benchmark)."""
    kind = torch.device(device).type
    on = bf16_enabled(mode, device)
    if kind == "cuda":
        return f"cuda {'bf16 autocast' if on else 'fp32'} ({torch.cuda.get_device_name(device)})"
    flags = _cpu_flags()
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    native = "native bf16" if cpu_has_fast_bf16() else "bf16 emulated"
    return f"cpu {'bf16 autocast' if on else 'fp32'} (autocast={mode}; {' '.join(isa) or 'no AVX'}: {native})"


@contextlib.contextmanager
def one_thread(device: torch.device | str = "cpu"):
    """Run the block on one intra-op thread (CPU only; elsewhere a no-op), then restore the count.

    For stretches of many tiny operations (the dual attention's 13 x 30-cell maps): each parallel
    operation wakes the other threads, which with ``OMP_WAIT_POLICY=PASSIVE`` sleep between them,
    and that costs more than the work. Measured on the 2-core EPYC (``bench_attention_threads`` in
    ``perennial.evaluate.bench_texture``, three runs): the attention module 1.3-1.7 ms on one thread against
    2.5-3.1 ms on two. The count is global to the
    process: use it in rendering, not around work other threads do at the same time.
    """
    n = torch.get_num_threads()
    if torch.device(device).type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
