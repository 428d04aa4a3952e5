"""Stopping a training run cleanly on a signal: the step finishes, a checkpoint
is saved, and the process exits with status 128 + the signal (cli.py)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Aborted(KeyboardInterrupt):
    """A second stop signal: abort now. `signum` gives the exit status 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """The first Ctrl-C, SIGTERM or SIGHUP (docker stop, timeout, job schedulers,
    a closed terminal) asks for a clean stop: finish the step, save. A second
    one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise Aborted(signum)
        self.requested, self.signum = True, signum
        again = "Ctrl-C" if signum == signal.SIGINT else "send it"
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
            f"({again} again to abort)",
            file=sys.stderr,
            flush=True,
        )

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers live in the main thread only
            return
        previous = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
