"""User-facing errors of the char-rnn layer.

A `UserError` is a problem with what the user asked for (a missing file, bad
option, corrupt checkpoint). The CLI prints its message as one line and exits
with code 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as a one-line message."""


class CorpusError(UserError):
    """The corpus cannot be prepared or used (empty, binary, too small, ...)."""


class VocabError(UserError):
    """Text or a checkpoint does not fit a vocabulary."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or incompatible."""
