"""The `charrnn-fast` command line: the happy path, and every kind of bad input
ending in one clear line, exit status 2, no traceback, and nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.cli import main

REPO = Path(__file__).resolve().parents[2]
TEXT = "It was the best of times, it was the worst of times.\n" * 40
TRAIN = [
    "--rnn_size",
    "16",
    "--num_layers",
    "1",
    "--batch_size",
    "4",
    "--seq_length",
    "8",
    "--print_every",
    "1",
    "--eval_val_every",
    "4",
    "--device",
    "cpu",
    "--no-progress",
    "--no-tensorboard",
]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def train_new(corpus: Path, cv: str, iters: int, capsys) -> tuple[int, str, str]:
    """A fresh training run of `iters` steps on `corpus` into checkpoint dir `cv`."""
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", cv]
    return run([*argv, "--max_iters", str(iters), *TRAIN], capsys)


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("charrnn-fast: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def corpus(tmp_path, capsys) -> Path:
    (tmp_path / "in.txt").write_text(TEXT)
    code, out, _ = run(
        ["prepare", str(tmp_path / "in.txt"), "--out", str(tmp_path / "data"), "--no-progress"],
        capsys,
    )
    assert code == 0 and "prepared 2,120 tokens" in out
    return tmp_path / "data"


def test_prepare_train_resume_sample(corpus, tmp_path, capsys):
    cv = str(tmp_path / "cv")
    code, _, err = train_new(corpus, cv, 4, capsys)
    assert code == 0 and "val loss" in err
    # --resume takes data_dir and the model from the checkpoint's stored options.
    code, _, err = run(["train", "--checkpoint_dir", cv, "--resume", "--max_iters", "6"], capsys)
    assert code == 0, err
    assert load_checkpoint(cv)["step"] == 6
    code, out, _ = run(["sample", cv, "-n", "40", "--prime", "It was", "--seed", "1"], capsys)
    assert code == 0 and out.startswith("It was") and len(out) >= 46


def test_empty_file(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run(["prepare", str(tmp_path / "empty.txt"), "--no-progress"], capsys)
    assert_user_error(code, err, "empty")


def test_binary_file(tmp_path, capsys):
    (tmp_path / "a.out").write_bytes(bytes(range(256)) * 4)
    code, _, err = run(["prepare", str(tmp_path / "a.out"), "--no-progress"], capsys)
    assert_user_error(code, err, "binary", "a.out")


def test_corpus_smaller_than_one_batch(corpus, tmp_path, capsys):
    code, _, err = run(
        [
            "train",
            "--data_dir",
            str(corpus),
            "--checkpoint_dir",
            str(tmp_path / "cv"),
            "--batch_size",
            "100",
            "--seq_length",
            "100",
        ],
        capsys,
    )
    assert_user_error(code, err, "one batch needs", "10001")


def test_unprepared_data_dir(tmp_path, capsys):
    code, _, err = run(
        ["train", "--data_dir", str(tmp_path), "--checkpoint_dir", str(tmp_path / "cv")], capsys
    )
    assert_user_error(code, err, "charrnn-fast prepare")


def test_vocabulary_mismatch_on_resume_loses_nothing(corpus, tmp_path, capsys):
    cv = str(tmp_path / "cv")
    code, _, err = train_new(corpus, cv, 2, capsys)
    assert code == 0, err
    before = (tmp_path / "cv" / "last.pt").read_bytes()
    (tmp_path / "other.txt").write_text("Completely different: XYZ 123!\n" * 80)
    run(
        ["prepare", str(tmp_path / "other.txt"), "--out", str(tmp_path / "other"), "--no-progress"],
        capsys,
    )
    code, _, err = run(
        [
            "train",
            "--checkpoint_dir",
            cv,
            "--resume",
            "--data_dir",
            str(tmp_path / "other"),
            "--max_iters",
            "4",
        ],
        capsys,
    )
    assert_user_error(code, err, "vocabulary mismatch")
    assert (tmp_path / "cv" / "last.pt").read_bytes() == before
    code, _, err = run(["train", "--checkpoint_dir", cv, "--resume", "--rnn_size", "32"], capsys)
    assert_user_error(code, err, "cannot change on --resume", "--rnn_size 32 (checkpoint: 16)")
    code, _, err = run(["train", "--checkpoint_dir", str(tmp_path / "none"), "--resume"], capsys)
    assert_user_error(code, err, "nothing to resume")


def test_missing_and_corrupt_checkpoint(tmp_path, capsys):
    code, _, err = run(["sample", str(tmp_path / "nope.pt")], capsys)
    assert_user_error(code, err, "checkpoint not found")
    (tmp_path / "bad.pt").write_bytes(os.urandom(300))
    code, out, err = run(["sample", str(tmp_path / "bad.pt")], capsys)
    assert_user_error(code, err, "not a valid checkpoint")
    assert out == ""


def test_temperature_must_be_positive(corpus, tmp_path, capsys):
    cv = str(tmp_path / "cv")
    code, _, err = train_new(corpus, cv, 1, capsys)
    assert code == 0, err
    for t in ("0", "-0.5"):
        code, out, err = run(["sample", cv, "--temperature", t], capsys)
        assert_user_error(code, err, "argument -t/--temperature", "expected a number in (0,")
        assert out == ""
    code, out, err = run(["sample", cv, "--prime", "It was ~", "-n", "3"], capsys)
    assert_user_error(code, err, "not in the vocabulary", "'~'")


def test_bad_option(capsys):
    code, _, err = run(["train", "--model", "transformer"], capsys)
    assert_user_error(code, err, "invalid choice")


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_console_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "charrnn_fast.charrnn", "sample", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"charrnn-fast: error: checkpoint not found: {tmp_path / 'x.pt'}"


def test_ctrl_c_during_training_saves_a_checkpoint(corpus, tmp_path):
    cv = tmp_path / "cv"
    cmd = [
        sys.executable,
        "-m",
        "charrnn_fast.charrnn",
        "train",
        "--data_dir",
        str(corpus),
        "--checkpoint_dir",
        str(cv),
        "--max_iters",
        "1000000",
        *TRAIN,
        "--eval_val_every",
        "1000000",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    try:
        log = cv / "log.csv"
        deadline = time.monotonic() + 300
        # Wait until a few steps are logged, i.e. we are inside the training loop.
        while not (log.is_file() and len(log.read_text().splitlines()) >= 4):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved" in err
    ckpt = torch.load(cv / "last.pt", weights_only=True)
    last_logged = int(log.read_text().splitlines()[-1].split(",")[0])
    assert ckpt["step"] == last_logged >= 3  # every finished step is in the checkpoint


def test_reader_leaving_early_and_closed_stdout(corpus, tmp_path, capsys):
    """`sample ... | head` ends quietly with status 0 (the reader left, no error);
    `sample ... >&-` says that standard output is closed."""
    cv = str(tmp_path / "cv")
    code, _, err = train_new(corpus, cv, 1, capsys)
    assert code == 0, err
    cmd = [
        sys.executable,
        "-m",
        "charrnn_fast.charrnn",
        "sample",
        cv,
        "-n",
        "200000",
        "--seed",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env()
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()  # as `head -c 20` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    shell = " ".join(f"'{a}'" for a in cmd[:-4]) + " -n 5 >&-"
    closed = subprocess.run(
        ["bash", "-c", shell], capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert closed.returncode == 2, closed.stderr
    assert closed.stderr.strip() == "charrnn-fast: error: standard output is closed"


def test_checkpoint_whose_vocabulary_and_model_disagree(corpus, tmp_path, capsys):
    cv = tmp_path / "cv"
    code, _, err = train_new(corpus, str(cv), 1, capsys)
    assert code == 0, err
    ckpt = torch.load(cv / "last.pt", weights_only=True)
    ckpt["vocab"]["symbols"] = ckpt["vocab"]["symbols"][:5]  # a consistent vocabulary of 5
    ckpt["vocab"]["size"] = 5
    torch.save(ckpt, tmp_path / "cut.pt")
    code, out, err = run(["sample", str(tmp_path / "cut.pt")], capsys)
    assert_user_error(code, err, "its vocabulary has 5 symbols but its model was built for")
    assert out == ""
