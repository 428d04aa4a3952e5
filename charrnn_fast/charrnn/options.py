"""Option types of the `charrnn-fast` command line, each with what it accepts.

Every numeric option is parsed by a `Number` with a declared range, every path
option by a `PathArg` that says whether it is read or written, and every free
text by `Text`. argparse turns their refusals into `charrnn-fast: error:
argument --x: ...` (exit 2), so a value outside its range never reaches the
code that would choke on it (NaN, infinity, 2**70, a negative count). The same
declarations check configurations that do not come from the command line
(`TrainConfig.validate`), and tests/charrnn/test_edges.py generates its cases
from them.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

# Limits of counts that no real run reaches but that keep every derived
# quantity inside int64 (seeds, step counters, token offsets).
MAX_COUNT = 2**53  # also the last integer a float64 holds exactly
MAX_SEED = 2**63 - 1
_POWERS = {10.0**k for k in range(6, 16)}
_NAMED = {MAX_COUNT: "2**53", MAX_SEED: "2**63 - 1"}


class Number:
    """argparse `type=` for an int or finite float in [lo, hi] (or open ends).

    Args:
        kind: int or float.
        lo, hi: bounds (None: none on that side; a float option is always finite).
        lo_open, hi_open: exclude the bound itself.
    """

    def __init__(
        self,
        kind: type,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
    ) -> None:
        self.kind, self.lo, self.hi = kind, lo, hi
        self.lo_open, self.hi_open = lo_open, hi_open
        self.__name__ = kind.__name__  # argparse names the type in some messages

    @staticmethod
    def _show(x: float) -> str:
        if x in _NAMED:
            return _NAMED[x]
        if float(x).is_integer() and abs(x) >= 1e6:
            return f"1e{round(math.log10(abs(x)))}" if abs(x) in _POWERS else f"{int(x):,}"
        return f"{x:g}"

    def describe(self) -> str:
        """'an integer >= 1', 'a number in (0, 1]', ..."""
        what = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what} in {left}{self._show(self.lo)}, {self._show(self.hi)}{right}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {self._show(self.lo)}"
        if self.hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {self._show(self.hi)}"
        return what

    def problem(self, value: object) -> str | None:
        """Why `value` is refused (None: accepted)."""
        if self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        if ok and self.lo is not None:
            ok = value > self.lo if self.lo_open else value >= self.lo
        if ok and self.hi is not None:
            ok = value < self.hi if self.hi_open else value <= self.hi
        return None if ok else f"expected {self.describe()}, got {value!r}"

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text.strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {self.describe().split(' in ')[0]}"
            ) from None
        if self.problem(value) is not None:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}")
        return value


def count(lo: int = 1, hi: int = MAX_COUNT) -> Number:
    return Number(int, lo, hi)


def fraction(lo_open: bool = False, hi_open: bool = False) -> Number:
    return Number(float, 0.0, 1.0, lo_open=lo_open, hi_open=hi_open)


def positive(hi: float = 1e9) -> Number:
    return Number(float, 0.0, hi, lo_open=True)


SEED = Number(int, 0, MAX_SEED)


def _utf8(text: str) -> str | None:
    """Why `text` (from argv, decoded with surrogateescape) is not UTF-8, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start].encode("utf-8", "surrogateescape")
        return f"not valid UTF-8 (byte 0x{bad.hex()} at character {e.start})"
    return None


class Text:
    """argparse `type=` for free text (a prime, a title, a regex): it must be UTF-8,
    since the program encodes it; a file name needs no such thing."""

    __name__ = "text"

    def __call__(self, text: str) -> str:
        why = _utf8(text)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return text


TEXT = Text()


class PathArg:
    """argparse `type=` for a path. `role` is "in" (read: checked where it is
    opened, with the file's own message) or "out" (written, checked now so that
    a long run cannot fail at its end). `kind` is "file", "dir" or "any"; `suffixes`,
    for an output file, the extensions it may have (None: any)."""

    __name__ = "path"

    def __init__(self, role: str, kind: str = "any", suffixes: tuple[str, ...] | None = None):
        self.role, self.kind, self.suffixes = role, kind, suffixes

    def __call__(self, text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("an empty path")
        if "\0" in text:
            raise argparse.ArgumentTypeError("a path cannot hold a NUL character")
        if self.role == "out":
            why = writable_problem(Path(text), self.kind)
            if why is None and self.suffixes is not None:
                why = _suffix_problem(text, self.suffixes)
            if why is not None:
                raise argparse.ArgumentTypeError(why)
        return text


def writable_problem(path: Path, kind: str) -> str | None:
    """Why `path` cannot be written as a `kind` ("file" or "dir"), or None."""
    if kind == "file" and path.is_dir():
        return f"{path} is a folder, expected a file name"
    if kind == "dir" and path.exists() and not path.is_dir():
        return f"{path} is a file, expected a folder"
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        return f"{path}: no permission to write it"
    # The nearest part of the path that exists must be a folder we may write in
    # (folders below it are created).
    parent = path if kind == "dir" else path.parent
    parent = parent if str(parent) else Path(".")
    while not parent.exists():
        if parent.is_symlink():
            return f"{parent} is a broken link"
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, so nothing can be written under it"
    if kind == "file" and parent != path.parent:
        return f"no such folder: {path.parent}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"no permission to write in {parent}"
    return None


def _suffix_problem(text: str, suffixes: tuple[str, ...]) -> str | None:
    suffix = Path(text).suffix.lower().lstrip(".")
    if suffix in suffixes:
        return None
    return f"{text}: unknown picture format {suffix or '(none)'!r}, expected one of " + ", ".join(
        f".{s}" for s in suffixes
    )


def picture_formats() -> tuple[str, ...]:
    """File extensions matplotlib can write (its pictures: PNG, SVG, PDF, ...)."""
    from charrnn_fast.charrnn.plot import pyplot

    plt = pyplot()
    fig = plt.figure()
    try:
        return tuple(sorted(fig.canvas.get_supported_filetypes()))
    finally:
        plt.close(fig)


class PictureArg(PathArg):
    """An output picture: its extension must be one matplotlib writes."""

    def __init__(self) -> None:
        super().__init__("out", "file")

    def __call__(self, text: str) -> str:
        text = super().__call__(text)
        why = _suffix_problem(text, picture_formats())
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return text


IN_FILE, IN_DIR, IN_ANY = PathArg("in", "file"), PathArg("in", "dir"), PathArg("in")
OUT_FILE, OUT_DIR, PICTURE = PathArg("out", "file"), PathArg("out", "dir"), PictureArg()
