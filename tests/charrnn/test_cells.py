"""`charrnn-fast cells`: the features mean what they say, the score is Pearson's r,
and on a corpus built so that a model must remember whether a quote is open, a
small trained LSTM has a cell the finder names for in_quote (and an untrained
one has not)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn_fast.charrnn.cells import (
    bracket_depth,
    correlations,
    find_cells,
    in_comment,
    in_quote,
    indent_depth,
    line_position,
    parse_feature,
    word_start,
)
from charrnn_fast.charrnn.cli import main
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig


def quote_corpus(n: int, seed: int) -> str:
    """Words of a-h; inside double quotes they are upper case. Predicting the case
    of a word's first letter needs the quote state, which the space before it
    does not show: the model has to carry it."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n:
        words = [
            "".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5)))
            for _ in range(rng.randint(1, 5))
        ]
        quoted = rng.random() < 0.4
        piece = '"' + " ".join(w.upper() for w in words) + '"' if quoted else " ".join(words)
        piece += "\n" if rng.random() < 0.2 else " "
        out.append(piece)
        size += len(piece)
    return "".join(out)


def test_features_on_a_known_text():
    text = 'a "bc" (d[e]\n\t  f) // g\nh /* i\nj */ k'
    assert in_quote('a "bc" d') == [0, 0, 1, 1, 1, 0, 0, 0]
    assert in_quote("x \u201cyz\u201d w") == [0, 0, 1, 1, 1, 0, 0, 0]
    assert line_position("ab\ncd") == [1, 2, 0, 1, 2]
    assert bracket_depth("(a[b]c)d)") == [1, 1, 2, 2, 1, 1, 0, 0, 0]
    assert indent_depth("x\n\t  y z\n  w") == [0, 0, 8, 9, 10, 10, 10, 10, 0, 1, 2, 2]
    assert word_start("ab c1 _d") == [1, 0, 0, 1, 0, 0, 0, 1]
    comment = in_comment(text)
    marked = "".join(ch for ch, v in zip(text, comment) if v)
    assert marked == "// g/* i\nj */"


def test_user_regex_features_and_bad_regexes():
    name, fn = parse_feature("digit=[0-9]+")
    assert name == "digit" and fn("a12b3") == [0, 1, 1, 0, 1]
    with pytest.raises(UserError, match="does not compile"):
        parse_feature("bad=(unclosed")
    for spec in ("noequals", "=x", "name="):
        with pytest.raises(UserError, match="NAME=REGEX"):
            parse_feature(spec)


def test_correlations_are_pearson_r():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 50, 7, generator=g)
    values[1, :, 3] = 0.5  # a constant cell scores 0, not NaN
    feature = torch.randn(50, generator=g)
    r = correlations(values, feature)
    for layer in range(2):
        for cell in range(7):
            x = values[layer, :, cell].numpy()
            want = 0.0 if x.std() == 0 else np.corrcoef(x, feature.numpy())[0, 1]
            assert abs(float(r[layer, cell]) - want) < 1e-5


def test_find_cells_ranks_by_absolute_r_and_skips_constant_features():
    text = "ab\ncd\nef"
    pos = torch.tensor(line_position(text))
    values = torch.zeros(1, len(text), 3)
    values[0, :, 0] = -pos  # perfectly anti-correlated
    values[0, :, 1] = pos + torch.tensor([0.5, -0.5, 0, 0.3, 0, 0, 0.2, 0])
    matches, constant = find_cells(
        values, text, {"line_position": line_position, "in_quote": in_quote}, top=2
    )
    assert constant == ["in_quote"]
    best = matches["line_position"]
    assert (best[0].cell, round(best[0].r, 6)) == (0, -1.0)
    assert best[1].cell == 1 and 0.8 < best[1].r < 1


def _train(root: Path, steps: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "in.txt").write_text(quote_corpus(20000, seed=0))
    data, _ = prepare([str(root / "in.txt")], root / "data", progress=False)
    cfg = TrainConfig(
        data_dir=str(data),
        checkpoint_dir=str(root / "cv"),
        rnn_size=16,
        num_layers=1,
        batch_size=16,
        seq_length=50,
        max_iters=steps,
        learning_rate=1e-2,
        lr_schedule="char-rnn",
        max_time=0,
        train_frac=0.9,
        val_frac=0.1,
        eval_val_every=steps,
        print_every=steps,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    return root / "cv"


def test_finder_names_a_quote_cell_of_a_trained_model(tmp_path, capsys):
    text = quote_corpus(3000, seed=1)
    (tmp_path / "held_out.txt").write_text(text)
    scores = {}
    for steps in (1, 60):  # untrained vs. a few seconds of training
        ckpt = _train(tmp_path / f"s{steps}", steps)
        out = tmp_path / f"found{steps}.html"
        argv = ["cells", str(ckpt), "--text", str(tmp_path / "held_out.txt"), "--out", str(out)]
        assert main(argv) == 0
        stdout = capsys.readouterr().out
        line = next(x for x in stdout.splitlines() if x.startswith("in_quote"))
        scores[steps] = abs(float(re.search(r"r=([+-][\d.]+)", line).group(1)))
        page = out.read_text(encoding="utf-8")
        assert '<h2 id="in_quote">' in page and "constant over this text" in stdout
    # Upper-case letters alone correlate with quotes a little even without memory;
    # a cell that carries the quote state follows it closely.
    assert scores[60] > 0.85
    assert scores[1] < 0.7


def test_cli_errors_are_one_line(tmp_path, capsys):
    ckpt = _train(tmp_path, 1)
    for argv, needle in [
        (["--feature", "q=(x"], "does not compile"),
        (["--text", "AbC!"], "not in the vocabulary"),
        (["--text", "missing_file.txt"], "no such file"),
        (["--only", "nonsense"], "unknown feature"),
    ]:
        code = main(["cells", str(ckpt), *argv, "--out", str(tmp_path / "x.html")])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("charrnn-fast: error:")]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
    code = main(["cells", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")])
    assert code == 2 and "not found" in capsys.readouterr().err
    # --skip_unknown drops what the vocabulary lacks.
    argv = ["cells", str(ckpt), "--text", "ab AbC! cd", "--literal", "--skip_unknown"]
    assert main([*argv, "--out", str(tmp_path / "x.html")]) == 0
