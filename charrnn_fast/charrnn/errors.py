"""User-facing errors of the char-rnn layer.

A `UserError` is a problem with what the user asked for (a missing file, bad
option, corrupt checkpoint). The CLI prints its message as one line and exits
with code 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re


class UserError(Exception):
    """A problem with the user's input, reported as a one-line message."""


class CorpusError(UserError):
    """The corpus cannot be prepared or used (empty, binary, too small, ...)."""


class VocabError(UserError):
    """Text or a checkpoint does not fit a vocabulary."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or incompatible."""


class DivergedError(UserError):
    """Training stopped: its loss or gradient stopped being finite."""


# The machine, not the program: a full disk, a read-only or foreign file.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_ALLOC = re.compile(r"(?:tried to allocate|allocate)\s+([0-9.]+)\s*(bytes|[KMGT]i?B)", re.I)


def one_line(e: BaseException) -> str | None:
    """The one-line message for an exception that is the user's or the machine's
    to fix, not a bug (None: a bug, which keeps its traceback)."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError) and (e.filename or e.errno in ENVIRONMENT_ERRNOS):
        where = f": {e.filename}" if e.filename else ""
        code = f" ({errno.errorcode[e.errno]})" if e.errno in errno.errorcode else ""
        return f"{e.strerror or e}{code}{where}"
    if isinstance(e, MemoryError) or _is_out_of_memory(e):
        m = _ALLOC.search(str(e))
        size = f" (it asked for {m.group(1)} {m.group(2)})" if m else ""
        return (
            f"out of memory{size}; use a smaller model (--rnn_size, --num_layers, "
            "--embedding_dim) or batch (--batch_size, --seq_length)"
        )
    if isinstance(e, (ValueError, RuntimeError)) and _from_library_setup(e):
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"charrnn_fast: {first}"
    return None


def _is_out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text
    )


def _from_library_setup(e: BaseException) -> bool:
    """Whether `e` comes from the library choosing its backend or path (an unknown
    backend, one that cannot run here, an environment variable it does not know)."""
    if "CHARRNN_FAST_" in str(e):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    # Raised by the library's own Python code about a backend choice (select(),
    # get(), the forced-path grammar); a kernel's failure says other things.
    return module.startswith("charrnn_fast.backends") and "backend" in str(e).lower()
