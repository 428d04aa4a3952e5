"""Vocabulary: deterministic order, round trips, dtypes, unknown characters."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn_fast.charrnn.errors import VocabError
from charrnn_fast.charrnn.vocab import Vocab, token_dtype

TEXT = "Héllo, wörld! ∑ 日本\n\tend🙂"


def test_char_vocab_is_sorted_code_points_and_round_trips():
    v = Vocab.from_text(TEXT, "char")
    assert list(v.symbols) == sorted({ord(c) for c in TEXT})
    ids = v.encode(TEXT)
    assert len(ids) == len(TEXT)  # one id per code point, not per byte
    assert v.decode(ids) == TEXT
    # Same characters in another order: same vocabulary, same ids.
    assert Vocab.from_text(TEXT[::-1], "char") == v


def test_byte_vocab_round_trips_utf8_and_streams_whole_characters():
    v = Vocab.from_text(TEXT, "byte")
    data = TEXT.encode("utf-8")
    assert list(v.symbols) == sorted(set(data))
    ids = v.encode(TEXT)
    assert len(ids) == len(data)
    assert v.decode(ids) == TEXT
    pieces = list(v.stream_decode(ids))
    assert "".join(pieces) == TEXT
    # Multi-byte characters come out whole, never as replacement characters.
    assert "🙂" in pieces and "日" in pieces
    assert all("\ufffd" not in p for p in pieces)


def test_byte_vocab_invalid_utf8_decodes_with_replacement():
    v = Vocab(range(256), "byte")
    assert v.decode([0x61, 0xFF, 0x62]) == "a\ufffdb"


@pytest.mark.parametrize(
    ("size", "dtype"),
    [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_token_dtype(size, dtype):
    assert token_dtype(size) == np.dtype(dtype)


def test_wide_vocab_uses_uint16():
    text = "".join(chr(0x4E00 + i) for i in range(300))
    v = Vocab.from_text(text)
    assert len(v) == 300 and v.dtype == np.uint16
    assert v.decode(v.encode(text)) == text


def test_unknown_characters_are_listed_or_skipped():
    v = Vocab.from_text("abc \n")
    with pytest.raises(VocabError) as e:
        v.encode("abz é!")
    msg = str(e.value)
    assert "'z'" in msg and "U+00E9" in msg and "'!'" in msg and "--skip_unknown" in msg
    assert "'a'" not in msg
    assert v.decode(v.encode("abz é!", skip_unknown=True)) == "ab "
    assert v.unknown("abz") == [ord("z")]


def test_json_round_trip(tmp_path):
    v = Vocab.from_text(TEXT, "char")
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w == v and w.level == "char"
    assert Vocab.from_dict(v.to_dict()) == v
    assert Vocab.from_text(TEXT, "byte") != v


def test_bad_vocab_files(tmp_path):
    with pytest.raises(VocabError, match="not found"):
        Vocab.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VocabError, match="not valid JSON"):
        Vocab.load(tmp_path / "bad.json")
    with pytest.raises(VocabError, match="not a charrnn_fast vocabulary"):
        Vocab.from_dict({"symbols": [1, 2]})
    with pytest.raises(VocabError):
        Vocab([300], "byte")


def test_difference_names_the_extra_symbols():
    a, b = Vocab.from_text("abc"), Vocab.from_text("abd")
    d = a.difference(b)
    assert "only in first: 'c'" in d and "only in second: 'd'" in d
