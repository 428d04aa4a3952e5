"""Prepared corpora on disk, contiguous splits, and truncated-BPTT batching.

The token array is memory-mapped, so a corpus of any size costs only the pages a
batch touches. Batching follows char-rnn: a split is cut into `batch_size`
contiguous row streams of equal length; chunk k of an epoch is columns
[k*T, (k+1)*T) of every row (targets shifted by one). Because row b of chunk k+1
continues exactly where row b of chunk k stopped, the hidden state can be carried
across chunks (and detached: truncated backpropagation through time).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn_fast.charrnn.datameta import check_vocab, read_meta
from charrnn_fast.charrnn.errors import CorpusError, UserError
from charrnn_fast.charrnn.vocab import Vocab

SPLITS = ("train", "val", "test")
NANOGPT_FRACS = (0.9, 0.1)  # nanoGPT's shakespeare_char: 90% train, 10% val, no test


@dataclass
class PreparedData:
    """A prepared corpus: `tokens` is a read-only 1-D memmap of ids."""

    path: Path
    tokens: np.ndarray
    vocab: Vocab
    meta: dict

    def __len__(self) -> int:
        return len(self.tokens)


def load_prepared(data_dir: str | os.PathLike) -> PreparedData:
    """Open the output of `charrnn-fast prepare` (tokens.bin, vocab.json, meta.json)."""
    path = Path(data_dir)
    meta = read_meta(path)
    vocab = Vocab.load(path / "vocab.json")
    check_vocab(meta, vocab, path)
    dtype, n = np.dtype(meta["dtype"]), meta["num_tokens"]
    tokens_path = path / "tokens.bin"
    size = tokens_path.stat().st_size if tokens_path.is_file() else -1
    if dtype != vocab.dtype or size != n * dtype.itemsize:
        raise CorpusError(
            f"{path}: tokens.bin does not match meta.json/vocab.json "
            f"({size} bytes, expected {n} x {dtype.name}); prepare the data again"
        )
    tokens = np.memmap(tokens_path, dtype=dtype, mode="r", shape=(n,))
    verify_tokens(tokens, len(vocab), meta.get("crc32"), tokens_path)
    return PreparedData(path=path, tokens=tokens, vocab=vocab, meta=meta)


VERIFY_CHUNK = 1 << 24  # tokens per step of the check: bounded memory on any corpus


def verify_tokens(tokens: np.ndarray, vocab_size: int, crc32: int | None, where: Path) -> None:
    """CorpusError unless every id of `tokens` (1-D array of token ids, tokens.bin
    memory-mapped) is < vocab_size and its bytes match `crc32` (prepare's
    checksum of tokens.bin; None for data prepared before it was kept).

    One sequential read of the file (1.7-2.8 GB/s from the page cache), so a damaged corpus
    is refused when it is opened, not after hours of training at the bad id."""
    crc = 0
    for start in range(0, len(tokens), VERIFY_CHUNK):
        chunk = np.ascontiguousarray(tokens[start : start + VERIFY_CHUNK])
        crc = zlib.crc32(chunk, crc)
        if int(chunk.max()) >= vocab_size:
            at = start + int(np.argmax(chunk >= vocab_size))
            raise CorpusError(
                f"{where} is corrupt: token {at} is id {int(tokens[at])}, but the vocabulary "
                f"has {vocab_size} symbols; prepare the data again"
            )
    if crc32 is not None and crc != crc32:
        raise CorpusError(
            f"{where} is corrupt: its CRC-32 {crc:08x} differs from {crc32:08x} recorded "
            "by prepare in meta.json; prepare the data again"
        )


def split_bounds(n: int, train_frac: float, val_frac: float) -> dict[str, tuple[int, int]]:
    """Contiguous [start, end) token ranges of the train, val and test splits.

    Test gets the rest (1 - train_frac - val_frac). Contiguous rather than shuffled
    so that no validation text also sits, a few characters apart, in training rows.
    """
    if not (0 < train_frac <= 1 and 0 <= val_frac <= 1 and train_frac + val_frac <= 1 + 1e-9):
        raise UserError(
            f"bad split fractions: train_frac={train_frac}, val_frac={val_frac} "
            "(need 0 < train_frac, 0 <= val_frac, train_frac + val_frac <= 1)"
        )
    n_train = int(n * train_frac)
    n_val = min(int(n * val_frac), n - n_train)
    return {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }


def max_rows(n_tokens: int, seq_length: int) -> int:
    """Most row streams a split of `n_tokens` supports with at least one chunk each."""
    return max(0, (n_tokens - 1) // seq_length)


class StreamBatcher:
    """Truncated-BPTT batches over one split.

    Args:
        tokens: 1-D array (memmap) of the split's token ids.
        batch_size: number of row streams across all processes.
        seq_length: T, time steps per chunk.
        rows: which rows this process takes (distributed training gives each rank
            a disjoint share); default all.
        split: name for error messages.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        seq_length: int,
        rows: range | None = None,
        split: str = "train",
    ) -> None:
        if batch_size < 1 or seq_length < 1:
            raise UserError("batch_size and seq_length must be at least 1")
        n = len(tokens)
        # One extra token at the end: the last target of the last chunk.
        self.row_length = (n - 1) // batch_size if n > 0 else 0
        self.num_chunks = self.row_length // seq_length
        if self.num_chunks == 0:
            raise CorpusError(
                f"the {split} split has {n} tokens, but one batch needs "
                f"batch_size*seq_length+1 = {batch_size * seq_length + 1}; use a smaller "
                "--batch_size/--seq_length, other split fractions, or a bigger corpus"
            )
        self.tokens = tokens
        self.batch_size, self.seq_length = batch_size, seq_length
        self.rows = rows if rows is not None else range(batch_size)
        starts = np.arange(batch_size, dtype=np.int64) * self.row_length
        self._offsets = starts[list(self.rows)][:, None] + np.arange(seq_length + 1)[None, :]

    @property
    def tokens_per_chunk(self) -> int:
        """Tokens per chunk in this process's rows."""
        return len(self.rows) * self.seq_length

    def batch(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of chunk `chunk` (0 <= chunk < num_chunks).

        Returns x, y: int64 [rows, T]; y[:, t] is the token after x[:, t].
        """
        if not 0 <= chunk < self.num_chunks:
            raise IndexError(f"chunk {chunk} out of range 0..{self.num_chunks - 1}")
        window = np.asarray(self.tokens[self._offsets + chunk * self.seq_length], dtype=np.int64)
        t = torch.from_numpy(window)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def __iter__(self):
        for k in range(self.num_chunks):
            yield self.batch(k)


def split_tokens(data: PreparedData, train_frac: float, val_frac: float) -> dict[str, np.ndarray]:
    """Memmap views of the three splits (no copy)."""
    return {
        k: data.tokens[a:b] for k, (a, b) in split_bounds(len(data), train_frac, val_frac).items()
    }
