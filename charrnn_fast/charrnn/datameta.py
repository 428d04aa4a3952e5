"""meta.json of a prepared corpus: written last and atomically, read back whole.

`prepare` records the CRC-32 of tokens.bin (`crc32`), of the vocabulary's
content (`vocab_crc32`: its level and symbols, whatever the JSON layout) and
of meta.json's own fields (`meta_crc32`: every other field, canonical JSON).
Loading checks every field's type, that meta.json, vocab.json and tokens.bin
agree, and the checksums that are recorded: a field edited by hand, a symbol
replaced in vocab.json or a level switched from char to byte is refused, not
used to train on or to print the wrong characters. Folders prepared before a
checksum was kept lack it; a missing checksum is "not recorded", a wrong one an
error.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

from charrnn_fast.charrnn.errors import CorpusError
from charrnn_fast.charrnn.vocab import LEVELS, Vocab

DATA_FORMAT = "charrnn_fast.data"
DTYPES = ("uint8", "uint16", "uint32")
CRC_FIELDS = ("crc32", "vocab_crc32", "meta_crc32")
# Each field's type(s); fields absent from meta.json are checked where needed.
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "version": int,
    "source": str,
    "description": str,
    "level": str,
    "vocab_size": int,
    "dtype": str,
    "num_tokens": int,
    "crc32": int,
    "vocab_crc32": int,
    "meta_crc32": int,
    "documents": int,
    "skipped": list,
    "num_skipped": int,
}


def vocab_crc32(vocab: Vocab) -> int:
    """CRC-32 of the vocabulary's content (level and symbols)."""
    return zlib.crc32(json.dumps([vocab.level, list(vocab.symbols)]).encode())


def _meta_crc32(meta: dict) -> int:
    fields = {k: v for k, v in meta.items() if k != "meta_crc32"}
    return zlib.crc32(json.dumps(fields, sort_keys=True, ensure_ascii=True).encode())


def write_meta(out_dir: Path, meta: dict, vocab: Vocab) -> dict:
    """Write meta.json (atomically) with the vocabulary's and its own checksums;
    returns what was written."""
    meta = {**meta, "vocab_crc32": vocab_crc32(vocab)}
    meta["meta_crc32"] = _meta_crc32(meta)
    tmp = out_dir / "meta.json.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / "meta.json")
    return meta


def read_meta(path: Path) -> dict:
    """meta.json of prepared-data folder `path`, its fields' types and its own
    checksum checked (CorpusError otherwise)."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        what = "does not exist" if not path.exists() else "is not prepared data (no meta.json)"
        raise CorpusError(f"{path} {what}; run `charrnn-fast prepare ... --out {path}` first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{meta_path}: corrupt ({e}); prepare the data again") from e
    if not isinstance(meta, dict) or meta.get("format") != DATA_FORMAT:
        raise CorpusError(f"{meta_path}: not charrnn_fast prepared data")
    missing = [k for k in ("dtype", "num_tokens") if k not in meta]
    if missing:
        raise CorpusError(
            f"{meta_path} lacks {', '.join(missing)}; prepare the data again "
            "(a complete meta.json is written last)"
        )
    wrong = [
        f"{k} is {type(meta[k]).__name__} {meta[k]!r:.40}"
        for k, t in FIELD_TYPES.items()
        if k in meta and (not isinstance(meta[k], t) or isinstance(meta[k], bool))
    ]
    wrong += [f"{k} {meta[k]} is out of range" for k in CRC_FIELDS if _bad_crc(meta.get(k))]
    if meta["dtype"] not in DTYPES:
        wrong.append(f"dtype {meta['dtype']!r} is not one of {', '.join(DTYPES)}")
    if "level" in meta and meta["level"] not in LEVELS:
        wrong.append(f"level {meta['level']!r} is not one of {', '.join(LEVELS)}")
    if isinstance(meta["num_tokens"], int) and meta["num_tokens"] < 0:
        wrong.append("num_tokens is negative")
    if wrong:
        raise CorpusError(f"{meta_path} is malformed: {'; '.join(wrong)}; prepare the data again")
    if "meta_crc32" in meta and meta["meta_crc32"] != _meta_crc32(meta):
        raise CorpusError(
            f"{meta_path} was altered after prepare wrote it (its fields do not match "
            "their recorded CRC-32); prepare the data again"
        )
    return meta


def _bad_crc(value: object) -> bool:
    return isinstance(value, int) and not 0 <= value < 2**32


def check_vocab(meta: dict, vocab: Vocab, path: Path) -> None:
    """CorpusError unless vocab.json agrees with meta.json (level, size, checksum)."""
    wrong = []
    if meta.get("level", vocab.level) != vocab.level:
        wrong.append(f"level {vocab.level}, meta.json says {meta['level']}")
    if meta.get("vocab_size", len(vocab)) != len(vocab):
        wrong.append(f"{len(vocab)} symbols, meta.json says {meta['vocab_size']}")
    if not wrong and meta.get("vocab_crc32", vocab_crc32(vocab)) != vocab_crc32(vocab):
        wrong.append("its symbols do not match the CRC-32 recorded by prepare")
    if wrong:
        raise CorpusError(
            f"{path / 'vocab.json'} was altered after prepare wrote it ({'; '.join(wrong)}); "
            "prepare the data again"
        )
