"""`charrnn-fast eval` (val and test losses, --novel) and `charrnn-fast plot`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn.cli import main
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.data import load_prepared, split_bounds
from charrnn_fast.charrnn.evaluate import evaluate_checkpoint, novelty, split_loss
from charrnn_fast.charrnn.model import lm_loss
from charrnn_fast.charrnn.sample import load_model
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
TEXT = "".join(f"{WORDS[i % 9]}\n{WORDS[(i * 4) % 9]}{i % 7}\n" for i in range(400))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evalrun")
    (root / "in.txt").write_text(TEXT)
    data, _ = prepare([str(root / "in.txt")], root / "data", progress=False)
    cfg = TrainConfig(
        data_dir=str(data),
        checkpoint_dir=str(root / "cv"),
        rnn_size=24,
        num_layers=1,
        batch_size=8,
        seq_length=16,
        max_iters=30,
        max_time=0,
        learning_rate=1e-2,
        train_frac=0.8,
        val_frac=0.1,
        eval_val_every=10,
        print_every=5,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    return root / "cv"


def test_split_loss_is_the_mean_cross_entropy_of_the_stream(run_dir):
    model, vocab, ckpt = load_model(str(run_dir))
    data = load_prepared(ckpt["config"]["data_dir"])
    a, b = split_bounds(len(data), 0.8, 0.1)["test"]
    tokens = torch.from_numpy(data.tokens[a:b].astype("int64"))
    # The whole split as one sequence, scored in one forward pass.
    with torch.no_grad():
        logits, _ = model(tokens[None, :-1])
        want = float(lm_loss(logits, tokens[None, 1:]))
    got, n = split_loss(model, data.tokens[a:b], 1, len(tokens) - 1, torch.device("cpu"))
    assert n == len(tokens) - 1 and got == pytest.approx(want, rel=1e-5)
    # Chunked with the state carried, one row: the same numbers.
    got16, n16 = split_loss(model, data.tokens[a:b], 1, 16, torch.device("cpu"))
    scored = (len(tokens) - 1) // 16 * 16
    with torch.no_grad():
        logits, _ = model(tokens[None, :scored])
        want16 = float(lm_loss(logits, tokens[None, 1 : scored + 1]))
    assert n16 == scored and got16 == pytest.approx(want16, rel=1e-5)


def test_eval_reports_val_and_test_in_nats_and_bits(run_dir, capsys):
    ckpt, losses = evaluate_checkpoint(str(run_dir))
    assert [s.split for s in losses] == ["val", "test"]
    assert all(s.bits == pytest.approx(s.nats / math.log(2)) for s in losses)
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^(val|test)\s+[\d,]+\s+([\d.]+)\s+[\d.]+$", out, re.M))
    assert float(rows["test"]) == pytest.approx(losses[1].nats, abs=1e-4)
    assert float(rows["val"]) == pytest.approx(ckpt["val_loss"], abs=0.05)  # other batching


def test_novel_counts_lines_absent_from_the_corpus(run_dir, capsys):
    nov = novelty(str(run_dir), 30, temperature=1.0, seed=3)
    corpus = set(TEXT.split("\n"))
    assert len(nov.lines) == 30
    assert nov.new_vs_corpus == sum(s not in corpus for s in nov.lines)
    assert nov.new_vs_train >= nov.new_vs_corpus
    assert main(["eval", str(run_dir), "--novel", "10"]) == 0
    assert re.search(r"novel: \d+ of 10 sampled lines", capsys.readouterr().out)


def test_eval_errors(run_dir, tmp_path, capsys):
    for argv, needle in [
        ([str(tmp_path / "missing")], "checkpoint not found"),
        ([str(run_dir), "--novel", "-1"], "argument --novel: expected an integer in [0,"),
        ([str(run_dir), "--data_dir", str(tmp_path)], "not prepared data"),
        (
            [str(run_dir), "--batch_size", "0"],
            "argument --batch_size/--batch-size: expected an integer in [1,",
        ),
    ]:
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("charrnn-fast: error:") == 1 and needle in err, err


def test_plot_draws_several_runs(run_dir, tmp_path, capsys):
    out = tmp_path / "curves.png"
    argv = ["plot", str(run_dir), str(run_dir), "--labels", "a", "b", "--x", "time"]
    assert main([*argv, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.count("30 steps, last val") == 2
    (tmp_path / "empty").mkdir()
    for bad, needle in [(tmp_path / "empty", "no log.csv"), (tmp_path / "nope", "no such folder")]:
        assert main(["plot", str(bad), "--out", str(out)]) == 2
        assert needle in capsys.readouterr().err
