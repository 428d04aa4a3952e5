"""Faults an operator meets on a shared server: a second run on the same folder,
SIGTERM/SIGHUP, kill -9, altered bytes, a full disk, an unwritable folder,
mistyped devices. Each ends in one clear line and loses nothing."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn import checkpoint as checkpoint_module
from charrnn_fast.charrnn import runlock
from charrnn_fast.charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn_fast.charrnn.errors import CheckpointError
from charrnn_fast.charrnn.trainlog import drop_rows_after
from tests.charrnn.test_cli import (  # corpus: the CLI tests' fixture, a prepared corpus
    TRAIN,
    assert_user_error,
    corpus,  # noqa: F401
    run,
    subprocess_env,
    train_new,
)


def start_training(corpus_dir: Path, cv: Path, *extra: str) -> subprocess.Popen:
    """A long `train` in a child process, returned once it has logged 3 steps
    (and saved a checkpoint, when --eval_val_every is at most 3)."""
    cmd = [sys.executable, "-m", "charrnn_fast.charrnn", "train", "--data_dir", str(corpus_dir)]
    cmd += ["--checkpoint_dir", str(cv), "--max_iters", "1000000", *TRAIN, *extra]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    log, deadline = cv / "log.csv", time.monotonic() + 300
    saves = int(extra[extra.index("--eval_val_every") + 1]) <= 3
    while not (log.is_file() and len(log.read_text().splitlines()) >= 4) or (
        saves and not (cv / "last.pt").is_file()
    ):
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    return proc


def train_steps(log: Path) -> list[int]:
    rows = [line.split(",") for line in log.read_text().splitlines()[1:]]
    return [int(r[0]) for r in rows if r[3]]  # rows with a train loss


def test_one_writer_per_folder_and_kill_9_frees_it(corpus, tmp_path, capsys):  # noqa: F811
    cv = tmp_path / "cv"
    proc = start_training(corpus, cv, "--eval_val_every", "3")
    try:
        code, _, err = train_new(corpus, str(cv), 2, capsys)
        assert_user_error(code, err, "in use by another training run", f"pid {proc.pid} on ")
        code, _, err = run(["train", "--checkpoint_dir", str(cv), "--resume"], capsys)
        assert_user_error(code, err, "in use by another training run", f"pid {proc.pid} on ")
    finally:
        proc.kill()  # SIGKILL: no handler runs, the kernel drops the lock
        proc.communicate(timeout=60)
    # A save cut short by the kill leaves a temp file; the next run removes it.
    orphan = cv / ".last.pt.0a1b2c3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    step = load_checkpoint(cv / "last.pt")["step"]
    code, _, err = run(
        ["train", "--checkpoint_dir", str(cv), "--resume", "--max_iters", str(step + 2)], capsys
    )
    assert code == 0, err
    assert not list(cv.glob(".*.tmp")) and "unfinished file(s)" in err
    assert orphan.name in err
    # Rows the killed run logged after its last checkpoint are gone, not repeated.
    assert train_steps(cv / "log.csv") == list(range(1, step + 3))
    assert not (cv / runlock.LOCK_NAME).exists()  # released on a clean exit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_and_sighup_save_like_ctrl_c(corpus, tmp_path, sig):  # noqa: F811
    cv = tmp_path / "cv"
    proc = start_training(corpus, cv, "--eval_val_every", "1000000")
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert f"{sig.name}: saving a checkpoint" in err and "checkpoint saved" in err
    assert "Traceback" not in err
    last_logged = train_steps(cv / "log.csv")[-1]
    assert load_checkpoint(cv / "last.pt")["step"] == last_logged >= 3


def test_lock_is_per_folder_and_names_the_holder(tmp_path):
    with runlock.folder_lock(tmp_path / "a"):
        text = (tmp_path / "a" / runlock.LOCK_NAME).read_text()
        assert text.startswith(f"pid {os.getpid()} on ")
        with runlock.folder_lock(tmp_path / "b"):  # another folder: no conflict
            pass
        refused = pytest.raises(CheckpointError, match=f"in use .*pid {os.getpid()}")
        with refused, runlock.folder_lock(tmp_path / "a"):
            pass
    with runlock.folder_lock(tmp_path / "a"):  # released
        pass


def test_unwritable_checkpoint_folder(corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    (tmp_path / "file").write_text("not a folder")
    code, _, err = train_new(corpus, str(tmp_path / "file" / "cv"), 1, capsys)
    assert_user_error(
        code, err, "--checkpoint_dir", "is a file, so nothing can be written under it"
    )

    real_open = os.open

    def read_only_fs(path, flags, *args):
        if str(path).endswith(runlock.LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(runlock.os, "open", read_only_fs)
    code, _, err = train_new(corpus, str(tmp_path / "cv"), 1, capsys)
    assert_user_error(code, err, "cannot write to the checkpoint folder", "Read-only file system")


def _data_offset(path: Path, suffix: str) -> tuple[int, int]:
    """(file offset, size) of the stored bytes of the zip record ending in `suffix`."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def test_altered_tensor_bytes_are_refused(corpus, tmp_path, capsys):  # noqa: F811
    cv = tmp_path / "cv"
    code, _, err = train_new(corpus, str(cv), 2, capsys)
    assert code == 0, err
    path = cv / "last.pt"
    offset, size = _data_offset(path, "/data/0")
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x40  # one bit, mid-tensor: torch.load alone accepts it
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="CRC-32"):
        load_checkpoint(path)
    code, out, err = run(["sample", str(path), "-n", "5"], capsys)
    assert_user_error(code, err, "is corrupt", "CRC-32")
    assert out == ""


@pytest.mark.parametrize("as_torch_does", [False, True])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, as_torch_does):
    path = save_checkpoint({"model": {"w": torch.ones(3)}, "step": 1}, tmp_path / "last.pt")

    def fill_the_disk(obj, f):
        f.write(b"x" * 100)
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            if as_torch_does:  # torch.save's zip writer fails next, in its __exit__
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    monkeypatch.setattr(checkpoint_module.torch, "save", fill_the_disk)
    with pytest.raises(CheckpointError, match=r"ENOSPC.*previous last.pt is intact"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoints_and_logs_get_the_same_permissions(corpus, tmp_path, capsys, umask):  # noqa: F811
    old = os.umask(umask)
    try:
        code, _, err = train_new(corpus, str(tmp_path / "cv"), 2, capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    want = 0o666 & ~umask
    for name in ("last.pt", "best.pt", "log.csv"):
        assert (tmp_path / "cv" / name).stat().st_mode & 0o777 == want, name


def test_resume_drops_log_rows_past_the_checkpoint(tmp_path):
    log = tmp_path / "log.csv"
    head = "step,epoch,lr,train_loss,val_loss,tokens_per_s,elapsed_s\r\n"
    rows = [f"{s},0.1,0.002,1.5,,100.0,1.0\r\n" for s in range(1, 8)]
    log.write_text(head + "".join(rows) + "8,0.1,0.0", newline="")  # last line cut by a kill
    drop_rows_after(log, 5)
    assert log.read_bytes().decode() == head + "".join(rows[:5])


def test_device_and_backend_mistakes(corpus, tmp_path, capsys):  # noqa: F811
    cv = str(tmp_path / "cv")
    code, _, err = train_new(corpus, cv, 1, capsys)
    assert code == 0, err
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "x")]
    code, _, err = run([*argv, *TRAIN, "--device", "bogus"], capsys)
    assert_user_error(code, err, "--device 'bogus' is not a device")
    code, _, err = run(["sample", cv, "--device", "bogus"], capsys)
    assert_user_error(code, err, "--device 'bogus' is not a device")
    if not torch.cuda.is_available():
        code, _, err = run([*argv, *TRAIN, "--backend", "cuda"], capsys)
        assert_user_error(code, err, "--backend cuda cannot run on cpu")
        code, _, err = run([*argv, *TRAIN, "--device", "cuda"], capsys)
        assert_user_error(code, err, "no CUDA GPU is available")
        code, _, err = run(["sample", cv, "--backend", "cuda"], capsys)
        assert_user_error(code, err, "--backend cuda cannot run on cpu")


def test_init_from_refuses_other_model_options(corpus, tmp_path, capsys):  # noqa: F811
    code, _, err = train_new(corpus, str(tmp_path / "a"), 1, capsys)
    assert code == 0, err
    argv = ["train", "--data_dir", str(corpus), "--checkpoint_dir", str(tmp_path / "b")]
    argv += [*TRAIN, "--max_iters", "1", "--init_from", str(tmp_path / "a" / "last.pt")]
    code, _, err = run([*argv, "--rnn_size", "32", "--num_layers", "1"], capsys)
    assert_user_error(code, err, "cannot change on --init_from", "--rnn_size 32 (checkpoint: 16)")
    assert "num_layers" not in err  # the same as the checkpoint's: fine
    code, _, err = run(argv, capsys)  # TRAIN's --rnn_size 16 is the checkpoint's
    assert code == 0, err
    stored = load_checkpoint(tmp_path / "b" / "last.pt")
    assert stored["config"]["rnn_size"] == stored["model_config"]["rnn_size"] == 16


def test_missing_tensorboard_is_said_once(tmp_path, capsys, monkeypatch):
    from charrnn_fast.charrnn import trainlog
    from charrnn_fast.charrnn.trainconfig import TrainConfig

    monkeypatch.setattr(trainlog, "_tb_missing_said", False)
    monkeypatch.setattr(trainlog.importlib.util, "find_spec", lambda name: None)
    for _ in range(2):
        trainlog.TrainLog(TrainConfig(checkpoint_dir=str(tmp_path), tensorboard=True)).close()
    assert capsys.readouterr().err.count("tensorboard is not installed") == 1


def test_a_missing_optional_package_names_its_extra(capsys, monkeypatch):
    from charrnn_fast.charrnn import cli

    def no_matplotlib(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(cli, "_visualize", no_matplotlib)
    code, _, err = run(["visualize", "x.pt", "--text", "abc"], capsys)
    assert_user_error(code, err, "matplotlib is not installed", "charrnn_fast[plot]")
