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
import torch

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
        lr_schedule="char-rnn",  # constant: runs of different lengths stay comparable
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
    def slow(step, loss):
        time.sleep(0.1)  # make the training time measurable at log.csv's 0.1 s

    cfg = tiny(data_dir, tmp_path / "cv", max_iters=4)
    train(cfg, on_step=slow)
    stored = load_checkpoint(tmp_path / "cv" / "last.pt")["elapsed_s"]
    assert stored >= 0.4
    time.sleep(0.5)  # time between sessions is not training time
    train(replace(cfg, resume=True, max_iters=8), on_step=slow)
    rows = _elapsed(tmp_path / "cv" / "log.csv")
    resumed = [e for s, e in rows if s > 4]
    assert resumed and min(resumed) >= stored - 0.06  # counting on, not from 0
    assert max(resumed) < stored + 0.5 + 30  # nor counting the pause
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


def test_reset_rows_is_a_function_of_seed_and_step_over_the_whole_batch():
    from charrnn_fast.charrnn.train import reset_rows

    cfg = TrainConfig(batch_size=1000, reset_prob=0.3, seed=5)
    state = (torch.ones(2, 1000, 3), torch.full((2, 1000, 3), 2.0))
    out = reset_rows(state, cfg, 17, range(1000))
    zero = (out[0] == 0).all(dim=(0, 2))
    assert 0.25 < zero.float().mean() < 0.35
    assert torch.equal((out[1] == 0).all(dim=(0, 2)), zero)  # h and c together
    assert torch.equal(out[1][:, ~zero], state[1][:, ~zero])  # the rest untouched
    assert torch.equal(reset_rows(state, cfg, 17, range(1000))[0], out[0])
    assert not torch.equal(reset_rows(state, cfg, 18, range(1000))[0], out[0])
    # A rank holding rows 500..999 resets exactly those rows of the same draw.
    half = tuple(s[:, 500:] for s in state)
    assert torch.equal(reset_rows(half, cfg, 17, range(500, 1000))[0], out[0][:, 500:])


def test_resume_stays_exact_with_state_resets(data_dir, tmp_path):
    kw = dict(reset_prob=0.5, max_iters=8, eval_val_every=4)
    train(tiny(data_dir, tmp_path / "a", **kw))
    train(tiny(data_dir, tmp_path / "b", **{**kw, "max_iters": 4}))
    train(replace(tiny(data_dir, tmp_path / "b", **kw), resume=True))
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    train(tiny(data_dir, tmp_path / "c", max_iters=8, eval_val_every=4))
    other = load_checkpoint(tmp_path / "c" / "last.pt")["model"]
    assert not all(torch.equal(plain[k], other[k]) for k in plain)  # resets changed training
