"""Progress of long work: an animated bar on a terminal, a line every ~10 % elsewhere.

Into a pipe or a file (CI, ``> log``) a carriage-return bar writes thousands of
updates; :func:`progress` then prints one plain line per tenth of the work instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

__all__ = ["progress"]


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, enabled: bool = True, leave: bool = True):  # fmt: skip
    """A progress reporter with tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``).

    Args:
        iterable: what to iterate (its ``len`` gives the total unless ``total`` is set).
        total: number of units of work.
        desc: what is being done.
        unit: name of one unit, for the rate.
        initial: units already done (a resumed run).
        enabled: False shows nothing.
        leave: keep the finished bar on a terminal; a transient one (False) writes no lines
            into a log.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if enabled and not sys.stderr.isatty():
        if not leave:
            enabled = False
        else:
            return _Lines(iterable, total, desc, unit, initial)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not enabled,
                leave=leave, dynamic_ncols=True)  # fmt: skip


class _Lines:
    """A line to stderr at every tenth of ``total`` (every 30 s when the total is unknown)."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str, initial: int) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start = initial
        self.t0 = self.last_print = time.monotonic()
        self.postfix = ""
        self.next_tenth = self._tenth() + 1

    def _tenth(self) -> int:
        return int(10 * self.n / self.total) if self.total else 0

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total and self._tenth() >= self.next_tenth:
            self.next_tenth = self._tenth() + 1
            self._print(now)
        elif not self.total and now - self.last_print >= 30:
            self._print(now)

    def close(self) -> None:
        if self.total is not None and self.next_tenth <= 10 and self.n > self.start:
            self._print(time.monotonic())  # the last line, unless the 100 % line was printed
            self.next_tenth = 11

    def _print(self, now: float) -> None:
        self.last_print = now
        elapsed = now - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.n < self.total:
            eta = f", ETA {_clock((self.total - self.n) / rate)}"
        tail = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {pct}{done} [{_clock(elapsed)}, {rate:.2f} {self.unit}/s{eta}]{tail}",
              file=sys.stderr, flush=True)  # fmt: skip


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
