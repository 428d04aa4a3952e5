"""Hostile and careless files: a second `prepare` into a busy folder, outputs in
impossible places, edited vocab.json and meta.json, malformed and diverged
checkpoints, logs that are not text, unreadable corpus folders. Each ends in one
line `charrnn-fast: error: ...` (exit 2) naming what is wrong, never a traceback
or a silently wrong result."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn import corpora, runlock, sources
from charrnn_fast.charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn_fast.charrnn.data import load_prepared
from charrnn_fast.charrnn.errors import CheckpointError, CorpusError
from tests.charrnn.test_cli import (  # corpus: the CLI tests' fixture, a prepared corpus
    TEXT,
    TRAIN,
    assert_user_error,
    corpus,  # noqa: F401
    run,
    train_new,
)


def test_prepare_refuses_a_folder_another_prepare_holds(corpus, tmp_path, capsys):  # noqa: F811
    before = {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()}
    with runlock.folder_lock(corpus, corpora.PREPARE_LOCK, "prepare run", "--out"):
        code, _, err = run(
            ["prepare", str(tmp_path / "in.txt"), "--out", str(corpus), "--no-progress"], capsys
        )
    assert_user_error(code, err, "in use by another prepare run", f"pid {os.getpid()}", "--out")
    after = {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()}
    assert after == before  # the first run's files are untouched
    assert len(load_prepared(corpus)) == 2120


def test_prepare_removes_what_a_killed_prepare_left(corpus, tmp_path, capsys):  # noqa: F811
    (corpus / "tokens.bin.tmp").write_bytes(b"half")
    code, _, err = run(
        ["prepare", str(tmp_path / "in.txt"), "--out", str(corpus), "--no-progress"], capsys
    )
    assert code == 0, err
    assert "tokens.bin.tmp" in err and not (corpus / "tokens.bin.tmp").exists()
    assert not (corpus / corpora.PREPARE_LOCK).exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_prepare_out_in_an_impossible_place(tmp_path, capsys, where):
    (tmp_path / "in.txt").write_text(TEXT)
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "sub"
    code, _, err = run(["prepare", str(tmp_path / "in.txt"), "--out", str(out)], capsys)
    assert_user_error(code, err, "argument --out", str(tmp_path / "f"))


@pytest.mark.parametrize("pattern", ["/etc/*", "~/x"])
def test_prepare_glob_must_be_relative(tmp_path, capsys, pattern):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text(TEXT)
    code, _, err = run(["prepare", str(tmp_path / "texts"), "--glob", pattern], capsys)
    assert_user_error(code, err, "--glob", "relative")


def test_prepare_names_unreadable_folders(tmp_path, capsys, monkeypatch):
    top = tmp_path / "texts"
    (top / "locked").mkdir(parents=True)
    (top / "a.txt").write_text(TEXT)
    (top / "locked" / "b.txt").write_text(TEXT)
    real = os.scandir

    def no_permission(path="."):
        if Path(path).name == "locked":  # root reads any folder: refuse as chmod 000 would
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", no_permission)
    code, _, err = run(["prepare", str(top), "--out", str(tmp_path / "d")], capsys)
    assert_user_error(code, err, "cannot read 1 folder(s)", str(top / "locked"))
    assert not (tmp_path / "d" / "meta.json").exists()


def test_prepare_names_unreadable_files(tmp_path, capsys, monkeypatch):
    top = tmp_path / "texts"
    top.mkdir()
    (top / "a.txt").write_text(TEXT)
    (top / "b.txt").write_text(TEXT)

    def no_permission(path, *args, **kwargs):
        if Path(path).name == "b.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", no_permission, raising=False)  # files_source opens
    code, _, err = run(["prepare", str(top), "--out", str(tmp_path / "d")], capsys)
    assert_user_error(code, err, "Permission denied (EACCES)", str(top / "b.txt"))
    assert not (tmp_path / "d" / "meta.json").exists()


def _edit_json(path: Path, change) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda v: v["symbols"].__setitem__(3, 0x263A), "symbols do not match the CRC-32"),
        (lambda v: v.__setitem__("level", "byte"), "level byte, meta.json says char"),
    ],
    ids=["symbol replaced", "level changed"],
)
def test_an_edited_vocabulary_is_refused(corpus, tmp_path, capsys, edit, needle):  # noqa: F811
    _edit_json(corpus / "vocab.json", edit)
    with pytest.raises(CorpusError, match=needle):
        load_prepared(corpus)
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 1, capsys)
    assert_user_error(code, err, "vocab.json was altered", needle)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("crc32", "deadbeef", "crc32 is str"),
        ("crc32", 2**40, "crc32 1099511627776 is out of range"),
        ("num_tokens", 2120.5, "num_tokens is float"),
        ("dtype", "float64", "dtype 'float64' is not one of"),
        ("level", 7, "level is int"),
        ("num_skipped", True, "num_skipped is bool"),
        ("description", "edited by hand", "altered after prepare wrote it"),
    ],
)
def test_meta_json_fields_are_checked(corpus, tmp_path, capsys, field, value, needle):  # noqa: F811
    _edit_json(corpus / "meta.json", lambda m: m.__setitem__(field, value))
    with pytest.raises(CorpusError, match=needle):
        load_prepared(corpus)
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 1, capsys)
    assert_user_error(code, err, "meta.json", needle)


def test_data_prepared_before_the_checksums_still_loads(corpus):  # noqa: F811
    def old(m: dict) -> None:
        del m["vocab_crc32"], m["meta_crc32"]

    _edit_json(corpus / "meta.json", old)
    assert len(load_prepared(corpus)) == 2120
    # ... but what is recorded is still checked: tokens.bin's CRC-32.
    _edit_json(corpus / "meta.json", lambda m: m.__setitem__("crc32", (m["crc32"] + 1) % 2**32))
    with pytest.raises(CorpusError, match="CRC-32"):
        load_prepared(corpus)


@pytest.fixture
def ckpt(corpus, tmp_path, capsys) -> Path:  # noqa: F811
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 2, capsys)
    assert code == 0, err
    return tmp_path / "cv" / "last.pt"


def _rewrite(path: Path, change) -> None:
    blob = torch.load(path, weights_only=True)
    change(blob)
    save_checkpoint(blob, path)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda c: c.__setitem__("model_config", "lstm"), "model_config is str"),
        (lambda c: c.__setitem__("config", [1, 2]), "config is list"),
        (lambda c: c.__setitem__("step", "2"), "step is str"),
        (lambda c: c["model_config"].__setitem__("rnn_size", "16"), "model_config.rnn_size is str"),
        (lambda c: c["model_config"].__setitem__("rnn_size", 10**6), "make 4,000,"),
        (lambda c: c["model"].__setitem__("head.bias", [0.0]), "model.head.bias is list"),
        (lambda c: c.__setitem__("hidden", "h"), "hidden is str"),
        (lambda c: c["config"].__setitem__("train_frac", "most"), "stored training options"),
        (lambda c: c["config"].__setitem__("data_dir", 3), "--data_dir: expected str"),
        (lambda c: c.__setitem__("val_loss", "low"), "val_loss is str"),
    ],
)
def test_malformed_checkpoints_are_refused(ckpt, capsys, change, needle):
    _rewrite(ckpt, change)
    with pytest.raises(CheckpointError, match="malformed|make .* weights|stored training"):
        load_checkpoint(ckpt)
    for argv in (["sample", str(ckpt), "-n", "3"], ["eval", str(ckpt)]):
        code, out, err = run(argv, capsys)
        assert_user_error(code, err, needle)
        assert out == ""


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_diverged_weights_are_refused_everywhere(ckpt, tmp_path, capsys, bad):
    _rewrite(ckpt, lambda c: c["model"]["rnn.weight_hh_l0"].view(-1).__setitem__(0, bad))
    for argv in (
        ["sample", str(ckpt), "-n", "50"],
        ["eval", str(ckpt)],
        ["visualize", str(ckpt), "--text", "It was", "--out", str(tmp_path / "v.html")],
        ["guesses", str(ckpt), "--text", "It was", "--out", str(tmp_path / "g.html")],
        ["temperatures", str(ckpt), "--out", str(tmp_path / "t.html")],
        ["train", "--checkpoint_dir", str(ckpt.parent), "--resume", "--max_iters", "3"],
    ):
        code, out, err = run(argv, capsys)
        assert_user_error(code, err, "weights are not finite", "rnn.weight_hh_l0")
        assert out == ""


def test_options_newer_than_a_checkpoint_get_their_defaults(ckpt, capsys):
    _rewrite(ckpt, lambda c: [c["config"].pop(k) for k in ("nonfinite", "train_frac")])
    assert load_checkpoint(ckpt)["config"]["nonfinite"] == "stop"
    code, out, err = run(["eval", str(ckpt)], capsys)
    assert code == 0 and "val" in out, err


def test_resume_with_a_broken_optimizer_state(ckpt, capsys):
    _rewrite(ckpt, lambda c: c.__setitem__("optimizer", {"state": {}, "param_groups": 5}))
    code, _, err = run(["train", "--checkpoint_dir", str(ckpt.parent), "--resume"], capsys)
    assert_user_error(code, err, "its training state does not load")


def test_eval_refuses_a_model_whose_outputs_overflow(ckpt, capsys, monkeypatch):
    from charrnn_fast.charrnn import evaluate

    # Finite weights whose logits overflow (huge weights) give a NaN loss.
    monkeypatch.setattr(evaluate, "split_loss", lambda *args: (math.nan, 100))
    code, out, err = run(["eval", str(ckpt)], capsys)
    assert_user_error(code, err, "its loss on the val split is nan", "overflow")


def test_resume_with_a_log_that_is_not_text(ckpt, capsys):
    (ckpt.parent / "log.csv").write_bytes(b"step,epoch\n\xff\xfe\x00garbage")
    code, _, err = run(["train", "--checkpoint_dir", str(ckpt.parent), "--resume"], capsys)
    assert_user_error(code, err, "log.csv is not a text log")
    code, _, err = run(["plot", str(ckpt.parent), "--out", str(ckpt.parent / "c.png")], capsys)
    assert_user_error(code, err, "log.csv: not a text log")


def test_overwrite_leaves_nothing_of_the_old_run(corpus, tmp_path, capsys):  # noqa: F811
    cv = tmp_path / "cv"
    code, _, err = train_new(corpus, str(cv), 4, capsys)  # validates: best.pt
    assert code == 0 and (cv / "best.pt").is_file(), err
    (cv / "samples.html").write_text("old samples")
    (cv / "tb").mkdir()
    (cv / "tb" / "events.out.tfevents.1.host").write_bytes(b"old events")
    (cv / "notes.txt").write_text("the user's own file")
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(cv), "--overwrite"]
    argv += [*TRAIN, "--max_iters", "2", "--val_frac", "0", "--rnn_size", "8"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert not (cv / "best.pt").exists() and not (cv / "samples.html").exists()
    assert not list((cv / "tb").iterdir()) and (cv / "notes.txt").is_file()
    assert load_checkpoint(cv)["model_config"]["rnn_size"] == 8  # the folder's model is new
    assert [r.split(",")[0] for r in (cv / "log.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_a_new_run_refuses_a_folder_with_only_best_pt(ckpt, corpus, capsys):  # noqa: F811
    ckpt.unlink()  # last.pt gone, best.pt left: still an old run
    code, _, err = train_new(corpus, str(ckpt.parent), 1, capsys)
    assert_user_error(code, err, "best.pt exists", "--overwrite")


def test_vocab_checksum_is_of_the_content(corpus):  # noqa: F811
    # Re-serialising vocab.json (spacing, key order) is not an alteration.
    v = json.loads((corpus / "vocab.json").read_text())
    (corpus / "vocab.json").write_text(json.dumps(dict(reversed(v.items())), indent=3))
    assert len(load_prepared(corpus).vocab) == v["size"]
