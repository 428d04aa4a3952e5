"""Progress in a log (output not a terminal): plain lines with done/total and an
ETA, no carriage-return frames."""

from __future__ import annotations

import re

from charrnn_fast.charrnn import progress
from charrnn_fast.charrnn.cli import main
from tests.charrnn.test_cli import TEXT, TRAIN


def test_train_and_prepare_print_lines_with_total_and_eta(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # a line per update
    (tmp_path / "in.txt").write_text(TEXT)
    assert main(["prepare", str(tmp_path / "in.txt"), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert re.search(r"^encode in: [\d.]+k?/2\.12k B \(100%\), .*elapsed", err, re.M), err

    argv = ["train", "--data_dir", str(tmp_path / "d"), "--checkpoint_dir", str(tmp_path / "cv")]
    argv += [a for a in TRAIN if a != "--no-progress"] + ["--max_iters", "6"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    assert [line.split()[1] for line in lines] == [f"{s}/6" for s in range(1, 7)], err
    assert re.search(r"step/s, elapsed [\d:]+, ETA [\d:]+, loss [\d.]+", lines[2]), lines[2]
    assert "ETA" not in lines[-1] and "(100%)" in lines[-1]


def test_lines_are_rate_limited(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.LineProgress(100, "work", "it")
    for _ in range(99):
        clock[0] += 1.0  # 1 s per item: a line every LOG_INTERVAL_S items
        bar.update()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 99 // int(progress.LOG_INTERVAL_S) + 1
    assert lines[0] == "work: 30/100 it (30%), 1 it/s, elapsed 00:30, ETA 01:10"
    assert lines[-1].startswith("work: 99/100 it (99%)")
