"""Sweep char-rnn training recipes under a wall-time budget, one run after another.

Each run is `python -m charrnn_fast.charrnn train --data_dir D --max_time S
ARGS...` in its own checkpoint folder; the row it adds to OUT.csv holds the
settings, the steps reached, the training wall time, the final validation loss
(on the whole validation split) and the 1-minute load average before and after
the run (the machine may be shared: runs under load reach fewer steps, and the
load column says so). A run whose folder already has a checkpoint is skipped,
so a sweep can be stopped and continued.

    python bench/recipe_sweep.py --data_dir /tmp/shk --max_time 90 --out bench/results/x \\
        --run 'h256=--rnn_size 256 --num_layers 2 --embedding_dim 64' --run 'h384=...'
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

COLUMNS = (
    "name",
    "args",
    "max_time_s",
    "steps",
    "train_s",
    "tokens",
    "val_loss",
    "load_before",
    "load_after",
    "started_utc",
)


def load1() -> float:
    return os.getloadavg()[0]


def run_one(name: str, args: str, data_dir: str, max_time: float, root: Path) -> dict:
    ckpt_dir = root / "runs" / name
    cmd = [
        sys.executable,
        "-m",
        "charrnn_fast.charrnn",
        "train",
        "--data_dir",
        data_dir,
        "--checkpoint_dir",
        str(ckpt_dir),
        "--max_time",
        str(max_time),
        "--no-progress",
        "--no-tensorboard",
        "--device",
        "cpu",
        *shlex.split(args),
    ]
    before, started = load1(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"== {name}: load {before:.2f}; {' '.join(cmd[3:])}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = load1()
    ckpt = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
    cfg = ckpt["config"]
    row = {
        "name": name,
        "args": args,
        "max_time_s": max_time,
        "steps": ckpt["step"],
        "train_s": round(float(ckpt.get("elapsed_s") or 0.0), 1),
        "tokens": ckpt["step"] * cfg["batch_size"] * cfg["seq_length"],
        "val_loss": round(float(ckpt["val_loss"]), 4),
        "load_before": round(before, 2),
        "load_after": round(after, 2),
        "started_utc": started,
    }
    print(f"   -> {row}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--max_time", type=float, required=True, help="seconds per run")
    ap.add_argument("--out", required=True, help="folder for runs/ and sweep.csv")
    ap.add_argument("--run", action="append", required=True, metavar="NAME=ARGS")
    a = ap.parse_args()
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    table = root / "sweep.csv"
    new = not table.is_file()
    with open(table, "a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        if new:
            w.writeheader()
        for spec in a.run:
            name, _, args = spec.partition("=")
            if (root / "runs" / name / "last.pt").is_file():
                print(f"== {name}: done before, skipped")
                continue
            w.writerow(run_one(name, args, a.data_dir, a.max_time, root))
            f.flush()


if __name__ == "__main__":
    main()
