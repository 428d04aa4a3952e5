"""`charrnn-fast compare`: equal parameter counts, every (model, seed) run, a
report with mean and spread, and a finished comparison is not trained again."""

from __future__ import annotations

import json
import re

from charrnn_fast.charrnn.cli import main
from charrnn_fast.charrnn.compare import count_params, size_for
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.trainconfig import TrainConfig

TEXT = "Pack my box with five dozen liquor jugs.\n" * 40


def test_sizes_match_the_parameter_budget():
    cfg = TrainConfig(num_layers=2, embedding_dim=0)
    for params in (50_000, 200_000, 1_000_000):
        for model in ("rnn", "gru", "lstm"):
            h, n = size_for(65, params, cfg, model)
            assert n == count_params(65, h, cfg, model)
            # No other hidden size comes closer to the budget.
            assert abs(n - params) <= abs(count_params(65, h + 1, cfg, model) - params)
            assert abs(n - params) <= abs(count_params(65, h - 1, cfg, model) - params)
            assert abs(n - params) / params < 0.02


def test_compare_trains_every_arm_and_reports(tmp_path, capsys):
    (tmp_path / "in.txt").write_text(TEXT)
    data, _ = prepare([str(tmp_path / "in.txt")], tmp_path / "data", progress=False)
    out = tmp_path / "cmp"
    argv = [
        "compare", "--data_dir", str(data), "--out_dir", str(out), "--params", "3000",
        "--seeds", "1", "2", "--max_iters", "4", "--eval_val_every", "2", "--batch_size", "4",
        "--seq_length", "8", "--num_layers", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    rows = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in rows] == ["rnn", "gru", "lstm"]
    assert all(r["seeds"] == 2 and r["val_min"] <= r["val_mean"] <= r["val_max"] for r in rows)
    assert all(abs(r["params"] - 3000) < 300 for r in rows)
    assert len(re.findall(r"^\| (rnn|gru|lstm) \|", (out / "compare.md").read_text(), re.M)) == 3
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "training lstm" in stdout
    # Run again: everything is done, nothing is trained, the numbers are the same.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/last.pt")}
    assert main(argv) == 0
    assert "training" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/last.pt")} == mtimes
    assert json.loads((out / "compare.json").read_text()) == rows


def test_compare_errors(tmp_path, capsys):
    for extra, needle in [
        (["--models", "lstm", "transformer"], "--models"),
        (["--params", "10"], "argument --params: expected an integer in [100,"),
    ]:
        assert main(["compare", "--data_dir", str(tmp_path), *extra]) == 2
        assert needle in capsys.readouterr().err
