"""Data-parallel training under torchrun: 2 CPU processes (gloo) train like one
process with the whole batch, rank 0 alone writes, and the checkpoint resumes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TEXT = "All the world's a stage, and all the men and women merely players.\n" * 12
OPTS = dict(
    rnn_size=16,
    num_layers=2,
    batch_size=4,
    seq_length=8,
    learning_rate=1e-2,
    max_iters=8,
    print_every=1,
    eval_val_every=4,
    train_frac=0.8,
    val_frac=0.2,
    device="cpu",
    backend="cpu",
    dtype="float32",  # compared across runs: no per-run measured precision
    progress=False,
    tensorboard=False,
)


def logged(path: Path, column: str) -> list[float]:
    with open(path) as f:
        return [float(r[column]) for r in csv.DictReader(f) if r[column]]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    (tmp_path / "in.txt").write_text(TEXT)
    data = str(prepare([str(tmp_path / "in.txt")], tmp_path / "data", progress=False)[0])
    single = train(TrainConfig(data_dir=data, checkpoint_dir=str(tmp_path / "one"), **OPTS))

    args = []
    for k, v in OPTS.items():
        args += [f"--{k}"] if v is True else [f"--no-{k}"] if v is False else [f"--{k}", str(v)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "charrnn_fast.charrnn",
        "train",
        "--data_dir",
        data,
        "--checkpoint_dir",
        str(tmp_path / "two"),
        *args,
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    print(proc.stderr[-3000:])
    assert proc.returncode == 0

    one = torch.tensor([v for _, v in single.losses])
    two = torch.tensor(logged(tmp_path / "two" / "log.csv", "train_loss"))
    diff = (one - two).abs()
    print("1 process ", [f"{v:.6f}" for v in one.tolist()])
    print("2 processes", [f"{v:.6f}" for v in two.tolist()])
    print(f"max diff {diff.max():.2e}")
    # Same maths, different summation order (per-rank means, all-reduced gradients):
    # float32 rounding differences only.
    assert len(two) == 8 and diff.max() < 1e-5
    val_one = torch.tensor([v for _, v in single.val_losses])
    val_two = torch.tensor(logged(tmp_path / "two" / "log.csv", "val_loss"))
    assert len(val_two) == 2 and (val_one - val_two).abs().max() < 1e-5

    ckpt = load_checkpoint(tmp_path / "two")
    assert ckpt["step"] == 8
    # Rank 0 gathered both ranks' rows of the carried state.
    assert [tuple(h.shape) for h in ckpt["hidden"]] == [(2, 4, 16), (2, 4, 16)]
    ref = load_checkpoint(tmp_path / "one")
    param_diff = max((ckpt["model"][k] - v).abs().max().item() for k, v in ref["model"].items())
    state_diff = max(
        (a - b).abs().max().item() for a, b in zip(ckpt["hidden"], ref["hidden"], strict=True)
    )
    print(f"max parameter diff {param_diff:.2e}, max hidden-state diff {state_diff:.2e}")
    assert param_diff < 1e-5 and state_diff < 1e-5

    # The two-process checkpoint continues in a single process.
    more = train(
        TrainConfig(
            data_dir=data,
            checkpoint_dir=str(tmp_path / "two"),
            resume=True,
            **{**OPTS, "max_iters": 10},
        )
    )
    assert more.step == 10 and [s for s, _ in more.losses] == [9, 10]


@pytest.mark.slow
def test_torchrun_on_a_locked_folder_stops_every_rank(tmp_path):
    from charrnn_fast.charrnn.runlock import folder_lock

    (tmp_path / "in.txt").write_text(TEXT)
    data = str(prepare([str(tmp_path / "in.txt")], tmp_path / "data", progress=False)[0])
    args = ["--data_dir", data, "--checkpoint_dir", str(tmp_path / "cv"), "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "charrnn_fast.charrnn", "train", *args, "--batch_size", "4", "--max_iters", "2"]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    with folder_lock(tmp_path / "cv"):  # another run holds the folder
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    print(proc.stderr[-3000:])
    assert proc.returncode != 0
    assert (
        f"charrnn-fast: error: {tmp_path / 'cv'} is in use by another training run" in proc.stderr
    )
    assert "charrnn-fast: error: rank 0 could not lock" in proc.stderr  # rank 1 stopped too
    assert not (tmp_path / "cv" / "log.csv").exists()
