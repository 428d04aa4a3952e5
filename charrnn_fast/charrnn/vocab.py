"""Character- or byte-level vocabulary.

A vocabulary is a sorted tuple of symbols: Unicode code points (level "char") or
byte values 0..255 (level "byte"). Token id = position in that tuple, so the same
corpus always gives the same ids, whatever order the text was read in.
Encoding is vectorised with numpy (searchsorted over the sorted symbols) because
corpora run to gigabytes.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from charrnn_fast.charrnn.errors import VocabError

Level = Literal["char", "byte"]
LEVELS: tuple[str, ...] = ("char", "byte")
VOCAB_FORMAT = "charrnn_fast.vocab"


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds ids 0..vocab_size-1."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def text_to_symbols(text: str | bytes, level: Level) -> np.ndarray:
    """Symbols of `text` as a 1-D uint32 array (code points, or byte values)."""
    if level == "byte":
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint32)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    # UTF-32-LE is exactly one uint32 code point per character, no BOM.
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint32)


def describe_symbol(symbol: int, level: Level) -> str:
    """A readable form of one symbol for error messages: 'x', '\\n', U+00E9 'é', 0xff."""
    if level == "byte":
        return repr(chr(symbol)) if 32 <= symbol < 127 else f"0x{symbol:02x}"
    ch = chr(symbol)
    if ch.isprintable() and symbol < 128:
        return repr(ch)
    return f"U+{symbol:04X} {ch!r}"


class Vocab:
    """Sorted symbols <-> token ids.

    Args:
        symbols: the distinct symbols (code points or byte values), any order.
        level: "char" (Unicode code points, UTF-8 text) or "byte" (raw bytes).
    """

    def __init__(self, symbols: Iterable[int], level: Level = "char") -> None:
        if level not in LEVELS:
            raise VocabError(f"unknown vocabulary level {level!r} (expected char or byte)")
        syms = sorted({int(s) for s in symbols})
        if not syms:
            raise VocabError("a vocabulary needs at least one symbol")
        top = 0xFF if level == "byte" else 0x10FFFF
        if syms[0] < 0 or syms[-1] > top:
            raise VocabError(f"symbol out of range for a {level}-level vocabulary")
        self.level: Level = level
        self.symbols: tuple[int, ...] = tuple(syms)
        self._array = np.asarray(syms, dtype=np.uint32)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_text(cls, text: str | bytes, level: Level = "char") -> Vocab:
        return cls(np.unique(text_to_symbols(text, level)).tolist(), level)

    def to_dict(self) -> dict:
        """JSON- and `torch.load(weights_only=True)`-safe representation."""
        return {
            "format": VOCAB_FORMAT,
            "version": 1,
            "level": self.level,
            "size": len(self),
            "dtype": self.dtype.name,
            "symbols": list(self.symbols),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if not isinstance(d, dict) or d.get("format") != VOCAB_FORMAT:
            raise VocabError("not a charrnn_fast vocabulary")
        try:
            return cls(d["symbols"], d["level"])
        except (KeyError, TypeError, ValueError) as e:
            raise VocabError(f"malformed vocabulary ({type(e).__name__}: {e})") from e

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise VocabError(f"vocabulary file not found: {path}") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VocabError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(d)

    # -- basics -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab) and self.level == other.level and self.symbols == other.symbols
        )

    def __hash__(self) -> int:
        return hash((self.level, self.symbols))

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)})"

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of encoded corpora: uint8 when the vocabulary fits, else wider."""
        return token_dtype(len(self))

    def difference(self, other: Vocab) -> str:
        """Short human description of how `other` differs from this vocabulary."""
        if self.level != other.level:
            return f"level {self.level} vs {other.level}"
        mine, theirs = set(self.symbols), set(other.symbols)
        parts = []
        for label, extra in (("only in first", mine - theirs), ("only in second", theirs - mine)):
            if extra:
                shown = ", ".join(describe_symbol(s, self.level) for s in sorted(extra)[:10])
                more = f" (+{len(extra) - 10} more)" if len(extra) > 10 else ""
                parts.append(f"{label}: {shown}{more}")
        return "; ".join(parts) or "same symbols"

    # -- encoding -----------------------------------------------------------
    def encode_symbols(self, symbols: np.ndarray, skip_unknown: bool = False) -> np.ndarray:
        """Map a 1-D array of symbols to ids (int64 array of the same or shorter length).

        Raises VocabError listing the unknown symbols unless `skip_unknown`.
        """
        symbols = np.asarray(symbols, dtype=np.uint32)
        ids = np.searchsorted(self._array, symbols)
        known = self._array[np.minimum(ids, len(self) - 1)] == symbols
        if not known.all():
            if not skip_unknown:
                bad = np.unique(symbols[~known]).tolist()
                shown = ", ".join(describe_symbol(s, self.level) for s in bad[:20])
                more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
                raise VocabError(
                    f"{len(bad)} character(s) not in the vocabulary: {shown}{more}"
                    " (use --skip_unknown to drop them)"
                )
            ids = ids[known]
        return ids.astype(np.int64)

    def encode(self, text: str | bytes, skip_unknown: bool = False) -> list[int]:
        """Token ids of `text` (str is UTF-8 encoded first at byte level)."""
        return self.encode_symbols(text_to_symbols(text, self.level), skip_unknown).tolist()

    def unknown(self, text: str | bytes) -> list[int]:
        """Sorted symbols of `text` that the vocabulary lacks."""
        syms = np.unique(text_to_symbols(text, self.level))
        return sorted(set(syms.tolist()) - set(self.symbols))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`; at byte level, invalid UTF-8 becomes U+FFFD."""
        return "".join(self.stream_decode(ids))

    def stream_decode(self, ids: Iterable[int]) -> Iterator[str]:
        """Decode ids one by one, yielding text as soon as it is complete.

        At byte level a multi-byte UTF-8 character yields only when its last byte
        arrives, so streamed output never splits a character.
        """
        decoder = self.incremental_decoder()
        for i in ids:
            piece = decoder(int(i), False)
            if piece:
                yield piece
        tail = decoder(None, True)
        if tail:
            yield tail

    def incremental_decoder(self):
        """A function (id | None, final: bool) -> str for streaming output."""
        symbols = self.symbols
        if self.level == "char":

            def decode_char(i: int | None, final: bool = False) -> str:
                return "" if i is None else chr(symbols[i])

            return decode_char
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def decode_byte(i: int | None, final: bool = False) -> str:
            data = b"" if i is None else bytes((symbols[i],))
            return utf8.decode(data, final)

        return decode_byte
