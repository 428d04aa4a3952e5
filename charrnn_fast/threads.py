"""Intra-op threads that follow the cores actually free.

On a machine shared with another busy process, PyTorch's threads wait for
each other by spinning: with two cores and a second process computing, each
of two processes ran at about a fifth of its speed alone, while one thread
each would have had a core to itself. `FreeCores` watches how much CPU time
the other processes of the machine take (Linux /proc/stat less this process's
own time from /proc/self/stat) and sets torch's intra-op thread count to the
cores left free, never more than the count it started with. Call `update()`
once per step of a loop; it reads the counters at most every `period` seconds.
"""

from __future__ import annotations

import os
import time

import torch


def _busy_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes spent busy, CPU seconds this process spent), or
    None where /proc is missing."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        with open("/proc/self/stat") as f:
            mine = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user..steal; guest time is already in user
    own = int(mine[11]) + int(mine[12])  # utime, stime (fields 14, 15 of stat)
    return busy / hz, own / hz


class FreeCores:
    """Keeps torch.get_num_threads() at the number of cores other processes leave free."""

    def __init__(self, period: float = 2.0, max_threads: int | None = None) -> None:
        self.period = period
        self.max_threads = max_threads or torch.get_num_threads()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self._last = _busy_seconds()
        self._t = time.monotonic()
        self.others = 0.0  # cores the other processes kept busy over the last period

    def update(self) -> int:
        """Re-reads the counters if `period` has passed; returns the thread count in force."""
        now = time.monotonic()
        if self._last is None or now - self._t < self.period:
            return torch.get_num_threads()
        cur = _busy_seconds()
        if cur is None:
            return torch.get_num_threads()
        wall = now - self._t
        self.others = max(0.0, ((cur[0] - self._last[0]) - (cur[1] - self._last[1])) / wall)
        self._last, self._t = cur, now
        # Round half down: a process that takes 0.5 of a core is still leaving
        # us most of it, but one that takes a whole core should get it.
        free = int(self.cores - self.others + 0.4)
        want = max(1, min(self.max_threads, free))
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
        return want
