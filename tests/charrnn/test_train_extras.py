"""Training additions: the cosine schedule with warm-up, --max_time, log.csv's
elapsed time across --resume, and --sample_every's page."""

from __future__ import annotations

import csv
import html
import itertools
import json
import math
import re
import time
from dataclasses import replace

import pytest

from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.schedule import scheduled_lr
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig

TEXT = "It was the best of times, it was the worst of times.\n" * 30


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("corpus")
    (root / "in.txt").write_text(TEXT)
    out, _ = prepare([str(root / "in.txt")], root / "data", progress=False)
    return str(out)


def tiny(data_dir: str, ckpt_dir, **kw) -> TrainConfig:
    base = dict(
        data_dir=data_dir,
        checkpoint_dir=str(ckpt_dir),
        rnn_size=16,
        num_layers=1,
        batch_size=4,
        seq_length=8,
        max_iters=8,
        max_time=0.0,
        print_every=1,
        eval_val_every=4,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_cosine_schedule_with_warmup_by_steps_and_by_time():
    cfg = TrainConfig(
        learning_rate=1.0, lr_schedule="cosine", warmup_iters=4, min_lr_frac=0.1, max_time=0
    )
    lrs = [scheduled_lr(cfg, s, 10, 100, 0.0) for s in range(101)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=0.01)
    assert lrs[50] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))  # decays monotonically
    # With a time budget, the clock counts when it is ahead of the steps.
    timed = replace(cfg, max_time=60.0)
    assert scheduled_lr(timed, 10, 10, 100, 30.0) == pytest.approx(0.55)
    assert scheduled_lr(timed, 10, 10, 100, 60.0) == pytest.approx(0.1)
    # char-rnn's schedule is unchanged by the option's existence.
    old = replace(cfg, lr_schedule="char-rnn", warmup_iters=0, learning_rate_decay=0.5)
    assert scheduled_lr(old, 25, 10, 100, 0.0) == old.learning_rate


def test_max_time_stops_the_run_validates_and_saves(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "cv", max_iters=100_000, max_time=1.0, eval_val_every=10_000)
    t = time.perf_counter()
    r = train(cfg)
    assert time.perf_counter() - t < 60  # it stopped on time, not after 100,000 steps
    assert r.out_of_time and 0 < r.step < 100_000 and r.elapsed_s >= 1.0
    assert r.val_losses and r.val_losses[-1][0] == r.step
    ckpt = load_checkpoint(tmp_path / "cv" / "last.pt")
    assert ckpt["step"] == r.step and ckpt["elapsed_s"] >= 1.0
    # The budget is spent: resuming does nothing until it is raised.
    again = train(replace(cfg, resume=True))
    assert again.step == r.step
    more = train(replace(cfg, resume=True, max_time=ckpt["elapsed_s"] + 0.5))
    assert more.step > r.step


def _elapsed(log) -> list[tuple[int, float]]:
    with open(log, newline="") as f:
        return [(int(r["step"]), float(r["elapsed_s"])) for r in csv.DictReader(f)]


def test_log_elapsed_time_continues_across_resume(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "cv", max_iters=4)
    train(cfg)
    first = _elapsed(tmp_path / "cv" / "log.csv")
    stored = load_checkpoint(tmp_path / "cv" / "last.pt")["elapsed_s"]
    time.sleep(0.3)  # time between sessions is not training time
    train(replace(cfg, resume=True, max_iters=8))
    rows = _elapsed(tmp_path / "cv" / "log.csv")
    resumed = [e for s, e in rows if s > 4]
    assert resumed and min(resumed) >= stored >= first[-1][1] - 0.1
    assert min(resumed) < stored + 0.3 + 5  # it did not restart at 0, nor count the pause
    assert [e for _, e in rows] == sorted(e for _, e in rows)


def test_sample_every_writes_a_page_of_samples(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "cv", sample_every=3, sample_length=40)
    train(cfg)
    entries = [json.loads(x) for x in (tmp_path / "cv" / "samples.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [3, 6]
    assert all(len(e["text"]) >= 40 for e in entries)  # 40 chars after the newline prime
    page = (tmp_path / "cv" / "samples.html").read_text(encoding="utf-8")
    assert re.findall(r'<h2 id="step-(\d+)">', page) == ["3", "6"]
    shown = re.findall(r"<pre>(.*?)</pre>", page, re.S)
    assert [html.unescape(s) for s in shown] == [e["text"] for e in entries]
    # A resumed run adds to the page; sampling does not change training.
    train(replace(cfg, resume=True, max_iters=9))
    page = (tmp_path / "cv" / "samples.html").read_text(encoding="utf-8")
    assert re.findall(r'<h2 id="step-(\d+)">', page) == ["3", "6", "9"]
    plain = train(tiny(data_dir, tmp_path / "plain", max_iters=9))
    sampled = load_checkpoint(tmp_path / "cv" / "last.pt")["model"]
    for k, v in load_checkpoint(tmp_path / "plain" / "last.pt")["model"].items():
        assert (v == sampled[k]).all(), k
    assert math.isfinite(plain.losses[-1][1])


def test_an_explicit_length_in_steps_turns_the_default_time_budget_off():
    from charrnn_fast.charrnn.trainconfig import config_from_args

    default = TrainConfig().max_time
    assert config_from_args({}).max_time == default
    assert config_from_args({"max_iters": 5}).max_time == 0
    assert config_from_args({"max_epochs": 2.0}).max_time == 0
    assert config_from_args({"max_iters": 5, "max_time": 10.0}).max_time == 10
    stored = TrainConfig(max_time=30.0).to_dict()
    assert config_from_args({}, stored).max_time == 30
    assert config_from_args({"max_iters": 50}, stored).max_time == 0
