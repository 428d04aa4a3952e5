"""Hostile and careless runs: a loss that turns NaN, options that contradict each
other, sizes that cannot be allocated, environment variables with unknown values,
text that is not UTF-8, pictures in unknown formats, a second SIGTERM during a
slow save. Each ends in one clear line (or, for a skipped step, goes on and
says so), never a traceback, and never reports a diverged run as done."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from charrnn_fast import backends
from charrnn_fast.charrnn import sizes
from charrnn_fast.charrnn import train as train_module
from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.errors import one_line
from tests.charrnn.test_cli import (  # corpus: the CLI tests' fixture, a prepared corpus
    TRAIN,
    assert_user_error,
    corpus,  # noqa: F401
    run,
    subprocess_env,
    train_new,
)


def nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """Make the training loss of the given (1-based) steps NaN."""
    real, calls = train_module.lm_loss, [0]

    def loss(logits, y):
        calls[0] += 1
        out = real(logits, y)
        return out * math.nan if calls[0] in steps else out

    monkeypatch.setattr(train_module, "lm_loss", loss)


def test_a_nan_loss_stops_training_and_keeps_the_checkpoint(corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    cv = tmp_path / "cv"
    nan_loss_at(monkeypatch, {6})
    code, _, err = train_new(corpus, str(cv), 8, capsys)  # saves at step 4 (--eval_val_every 4)
    assert_user_error(code, err, "training diverged at step 6", "loss nan", "likely cause")
    assert f"{cv / 'last.pt'} (step 4) is kept as it was" in err
    assert "done:" not in err
    assert load_checkpoint(cv / "last.pt")["step"] == 4


def test_nonfinite_skip_skips_the_step_and_goes_on(corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    nan_loss_at(monkeypatch, {3})
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "cv")]
    code, _, err = run([*argv, *TRAIN, "--max_iters", "6", "--nonfinite", "skip"], capsys)
    assert code == 0, err
    assert "step 3: non-finite loss nan" in err and "step skipped" in err
    assert "(1 non-finite step(s) skipped)" in err
    ckpt = load_checkpoint(tmp_path / "cv")
    assert ckpt["step"] == 6 and math.isfinite(ckpt["val_loss"])


def test_nonfinite_skip_stops_when_every_step_is_lost(corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    nan_loss_at(monkeypatch, set(range(2, 100)))
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "cv")]
    code, _, err = run([*argv, *TRAIN, "--max_iters", "50", "--nonfinite", "skip"], capsys)
    assert_user_error(code, err, "training diverged at step 11 (10 steps in a row")


def test_a_real_divergence_names_its_cause(corpus, tmp_path, capsys):  # noqa: F811
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "cv")]
    argv += [*TRAIN, "--max_iters", "60", "--optimizer", "adamw", "--weight_decay", "1e6"]
    code, _, err = run([*argv, "--learning_rate", "1"], capsys)
    assert_user_error(code, err, "training diverged at step", "--weight_decay")
    assert "val loss nan" not in err and "done:" not in err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--optimizer", "rmsprop", "--decay_rate", "2"], "argument --decay_rate"),
        (["--decay_rate", "-1"], "argument --decay_rate"),
        (["--weight_decay", "-1"], "argument --weight_decay"),
        (["--weight_decay", "nan"], "argument --weight_decay"),
        (["--max_epochs", "inf"], "argument --max_epochs"),
        (["--seed", str(2**63)], "argument --seed"),
        (["--learning_rate", "nan"], "argument --learning_rate"),
        (["--train_frac", "0.9", "--val_frac", "0.5"], "--train_frac + --val_frac"),
        (["--rnn_size", "200000"], "200000 units"),
        (["--embedding_dim", "1000000000"], "GiB"),
    ],
)
def test_train_options_are_checked(corpus, tmp_path, capsys, extra, needle):  # noqa: F811
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "cv")]
    code, _, err = run([*argv, *TRAIN, "--max_iters", "1", *extra], capsys)
    assert_user_error(code, err, needle)
    assert not (tmp_path / "cv" / "last.pt").exists()


def test_a_huge_seed_trains(corpus, tmp_path, capsys):  # noqa: F811
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "cv")]
    code, _, err = run([*argv, *TRAIN, "--max_iters", "2", "--seed", str(2**63 - 1)], capsys)
    assert code == 0, err


def test_resume_and_init_from_contradict(corpus, tmp_path, capsys):  # noqa: F811
    code, _, err = train_new(corpus, str(tmp_path / "a"), 1, capsys)
    assert code == 0, err
    argv = ["train", "--checkpoint_dir", str(tmp_path / "a"), "--resume"]
    code, _, err = run([*argv, "--init_from", str(tmp_path / "a" / "last.pt")], capsys)
    assert_user_error(code, err, "either --resume", "--init_from", "not both")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seeds", "1", "1"], "--seeds: 1 given more than once"),
        (["--models", "lstm", "lstm"], "--models: lstm given more than once"),
        (["--params", str(10**12)], "GiB"),
    ],
)
def test_compare_contradictions_and_sizes(corpus, tmp_path, capsys, extra, needle):  # noqa: F811
    argv = ["compare", "--data_dir", str(corpus), "--out_dir", str(tmp_path / "c")]
    code, _, err = run([*argv, "--max_iters", "1", *extra], capsys)
    assert_user_error(code, err, needle)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


@pytest.mark.parametrize("value", ["garbage", "cuda"])
def test_unknown_or_unusable_backend_variable(corpus, tmp_path, capsys, monkeypatch, value):  # noqa: F811
    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("cuda runs here")
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 1, capsys)
    assert code == 0, err
    monkeypatch.setenv("CHARRNN_FAST_BACKEND", value)
    for argv in (
        ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "b"), *TRAIN],
        ["sample", str(tmp_path / "cv"), "-n", "5"],
    ):
        code, out, err = run(argv, capsys)
        assert_user_error(code, err, f"CHARRNN_FAST_BACKEND={value}" if value == "cuda" else "")
        assert "CHARRNN_FAST_BACKEND" in err and out == ""


def test_library_setup_errors_are_one_line():
    try:
        backends.get("no-such-backend")
    except ValueError as e:
        assert one_line(e) == "charrnn_fast: " + str(e)
    try:
        raise ValueError("an app bug")
    except ValueError as e:
        assert one_line(e) is None  # a bug keeps its traceback


def test_out_of_memory_is_one_line():
    e = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 64 bytes")
    assert one_line(e).startswith("out of memory (it asked for 64 bytes)")


def test_every_command_checks_memory_before_it_allocates(corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    cv = tmp_path / "cv"
    code, _, err = train_new(corpus, str(cv), 1, capsys)
    assert code == 0, err
    monkeypatch.setattr(sizes, "memory_of", lambda device: 10_000)  # a 10 kB machine
    text = ["--text", "It was the best", "--literal"]
    for argv in (
        ["sample", str(cv), "-n", "5"],
        ["eval", str(cv)],
        ["visualize", str(cv), *text, "--out", str(tmp_path / "v.html")],
        ["cells", str(cv), *text, "--out", str(tmp_path / "c.html")],
        ["guesses", str(cv), *text, "--out", str(tmp_path / "g.html")],
        ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "b"), *TRAIN],
    ):
        code, out, err = run(argv, capsys)
        assert_user_error(code, err, "needs at least", "bytes) but cpu has 0.0 GiB")
        assert out == ""
    assert not (tmp_path / "b" / "last.pt").exists()


@pytest.mark.parametrize("command", ["sample", "eval"])
@pytest.mark.parametrize("device", ["bogus", "cuda", "cuda:99"])
def test_devices_for_sample_and_eval(corpus, tmp_path, capsys, command, device):  # noqa: F811
    if device != "bogus" and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 1, capsys)
    assert code == 0, err
    code, out, err = run([command, str(tmp_path / "cv"), "--device", device], capsys)
    assert_user_error(code, err, "--device", device)
    assert out == ""


@pytest.mark.parametrize("skip", [[], ["--skip_unknown"]])
def test_a_prime_that_is_not_utf8(corpus, tmp_path, capsys, skip):  # noqa: F811
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 1, capsys)
    assert code == 0, err
    prime = b"It \xff was".decode("utf-8", "surrogateescape")  # as Python decodes argv
    code, out, err = run(["sample", str(tmp_path / "cv"), "--prime", prime, *skip], capsys)
    assert_user_error(code, err, "argument --prime", "not valid UTF-8", "0xff")
    assert out == ""


def test_pictures_in_unknown_formats(corpus, tmp_path, capsys):  # noqa: F811
    cv = tmp_path / "cv"
    code, _, err = train_new(corpus, str(cv), 4, capsys)
    assert code == 0, err
    for argv, flag in (
        (["visualize", str(cv), "--text", "It was", "--png", str(tmp_path / "x.xyz")], "--png"),
        (["cells", str(cv), "--png", str(tmp_path / "x.docx")], "--png"),
        (["plot", str(cv), "--out", str(tmp_path / "x.xyz")], "--out"),
        (["plot", str(cv), "--out", str(tmp_path / "noextension")], "--out"),
    ):
        code, _, err = run(argv, capsys)
        assert_user_error(code, err, f"argument {flag}", "unknown picture format", ".png")
    for lim in (["nan", "nan"], ["1", "0"], ["-inf", "1"]):
        code, _, err = run(
            ["plot", str(cv), "--out", str(tmp_path / "c.png"), "--ylim", *lim], capsys
        )
        assert_user_error(code, err, "--ylim")
    assert not (tmp_path / "c.png").exists()


SLOW_SAVE = """
import sys, time
from charrnn_fast.charrnn import checkpoint
from charrnn_fast.charrnn.cli import main
real = checkpoint.torch.save

class Slow:  # each write of a save takes a while: signals land inside torch.save
    def __init__(self, f): self.f = f
    def write(self, b): time.sleep(0.02); return self.f.write(b)
    def flush(self): self.f.flush()

def save(obj, f):
    print("SAVING", file=sys.stderr, flush=True)
    real(obj, Slow(f))

checkpoint.torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_sigterm_during_a_slow_save(corpus, tmp_path):  # noqa: F811
    cv = tmp_path / "cv"
    cmd = [sys.executable, "-c", SLOW_SAVE, "train", "--data_dir", str(corpus)]
    cmd += ["--checkpoint_dir", str(cv), "--max_iters", "1000000", *TRAIN]
    cmd += ["--eval_val_every", "2", "--print_every", "1000"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        deadline = time.monotonic() + 300
        while not (cv / "last.pt").is_file():  # one checkpoint saved before the signals
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        line = ""
        while "SAVING" not in line:  # the save the first SIGTERM asked for, or a periodic one
            line = proc.stderr.readline()
            assert line, "training ended before saving"
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "charrnn-fast: interrupted" in err
    assert load_checkpoint(cv / "last.pt")["step"] >= 2  # intact: the one saved before
    assert not list(cv.glob(".*.tmp"))
