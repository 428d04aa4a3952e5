"""Progress that reads well on a terminal and in a log file.

On a terminal: a tqdm bar. Anywhere else (output redirected to a file, a job
scheduler, `nohup`), a bar's carriage-return frames pile up into one unreadable
line, so progress becomes a plain line at most every LOG_INTERVAL_S seconds and
at the end: done/total, rate, elapsed, ETA and the caller's postfix (loss, ...).
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # between two lines in a log: a day-long run writes ~3,000


class Progress(Protocol):
    """The part of tqdm's interface the application uses."""

    disable: bool

    def update(self, n: int = 1) -> object: ...
    def set_postfix(self, **kwargs: object) -> None: ...
    def close(self) -> None: ...


def progress_bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    unit_scale: bool = False,
    enabled: bool = True,
) -> Progress:
    """A progress display on stderr: a bar on a terminal, lines otherwise,
    nothing when not `enabled`. Use it as a context manager or close() it."""
    if not enabled:
        return tqdm(disable=True)
    if sys.stderr.isatty():
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            dynamic_ncols=True,
        )
    return LineProgress(total, desc, unit, initial, unit_scale)


class LineProgress:
    """Plain progress lines for logs (see the module docstring)."""

    disable = False

    def __init__(
        self, total: int | None, desc: str, unit: str, initial: int = 0, unit_scale: bool = False
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self.start = self.shown = initial
        self.t0 = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        at_end = bool(self.total) and self.n >= self.total
        if self.n != self.shown and (at_end or now - self.last >= LOG_INTERVAL_S):
            self._line(now)

    def set_postfix(self, **kwargs: object) -> None:
        self.postfix = " ".join(f"{k} {v}" for k, v in kwargs.items())

    def close(self) -> None:
        if not self.closed and self.n != self.shown:
            self._line(time.monotonic())
        self.closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _num(self, x: float) -> str:
        return tqdm.format_sizeof(x, divisor=1000) if self.unit_scale else f"{x:,.0f}"

    def _line(self, now: float) -> None:
        self.last, self.shown = now, self.n
        elapsed = now - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        done = f"{self._num(self.n)}"
        if self.total:
            done += f"/{self._num(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        parts = [f"{self.desc}: {done}"]
        if rate > 0:
            slow = rate < 1 and not self.unit_scale  # 0.2 step/s reads better as 5 s/step
            speed = self._num(rate) if self.unit_scale else f"{rate:.3g}"
            parts.append(f"{1 / rate:.3g} s/{self.unit}" if slow else f"{speed} {self.unit}/s")
        parts.append(f"elapsed {tqdm.format_interval(elapsed)}")
        if rate > 0 and self.total and self.n < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=sys.stderr, flush=True)
