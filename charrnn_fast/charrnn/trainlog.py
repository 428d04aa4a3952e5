"""Training logs: CHECKPOINT_DIR/log.csv, TensorBoard when installed, and plain
progress lines when no progress bar is shown (output not a terminal)."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.trainconfig import TrainConfig

COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "tokens_per_s", "elapsed_s")


class TrainLog:
    """Rows of COLUMNS appended to log.csv (flushed per row, so a crash keeps them).

    Args:
        cfg: the run's options (checkpoint_dir, tensorboard).
        enabled: False on ranks other than 0 (they write nothing).
        append: continue an existing log (resume) instead of starting a new one.
        keep_until: with `append`, the step of the checkpoint resumed from: rows
            past it, logged by a run killed before its next checkpoint, are dropped.
        elapsed_offset: seconds the run trained before this session (resume), so
            that elapsed_s keeps counting across sessions.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        enabled: bool = True,
        append: bool = False,
        keep_until: int | None = None,
        elapsed_offset: float = 0.0,
    ) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter() - elapsed_offset
        self.file = self.writer = self.tb = None
        if not enabled:
            return
        out = Path(cfg.checkpoint_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "log.csv"
        if append and keep_until is not None:
            drop_rows_after(path, keep_until)
        fresh = not (append and path.is_file() and path.stat().st_size > 0)
        self.file = open(path, "w" if fresh else "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        if fresh:
            self.writer.writerow(COLUMNS)
        self.tb = _tensorboard(out / "tb", cfg.tensorboard, keep_until if append else None)

    def write(
        self,
        step: int,
        epoch: float,
        lr: float,
        train_loss: float | None = None,
        val_loss: float | None = None,
        tokens_per_s: float | None = None,
        bar_disabled: bool = False,
    ) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        row = [
            step,
            f"{epoch:.4f}",
            f"{lr:.6g}",
            _fmt(train_loss),
            _fmt(val_loss),
            _fmt(tokens_per_s, 1),
            f"{elapsed:.1f}",
        ]
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for name, value in (
                ("loss/train", train_loss),
                ("loss/val", val_loss),
                ("tokens_per_s", tokens_per_s),
                ("lr", lr),
            ):
                if value is not None:
                    self.tb.add_scalar(name, value, step)
        if val_loss is not None:
            tqdm.write(f"step {step} (epoch {epoch:.2f}): val loss {val_loss:.4f}", file=sys.stderr)
        elif bar_disabled and train_loss is not None:
            print(
                f"step {step} (epoch {epoch:.2f}) loss {train_loss:.4f} lr {lr:.2e} "
                f"{tokens_per_s or 0:,.0f} tok/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _tensorboard(folder: Path, wanted: bool, resume_step: int | None):
    """A SummaryWriter when asked for and installed (said once per process when
    not installed). On resume, events past the checkpoint's step are purged."""
    global _tb_missing_said
    if not wanted:
        return None
    if importlib.util.find_spec("tensorboard") is None:
        if not _tb_missing_said:
            _tb_missing_said = True
            print(
                "tensorboard is not installed: logging to log.csv only "
                "(pip install tensorboard, or pass --no-tensorboard)",
                file=sys.stderr,
            )
        return None
    from torch.utils.tensorboard import SummaryWriter

    purge = None if resume_step is None else resume_step + 1
    return SummaryWriter(str(folder), purge_step=purge)


_tb_missing_said = False


def drop_rows_after(path: Path, step: int) -> None:
    """Rewrite log.csv without its rows past `step` or malformed (a line cut by a
    kill): a run killed after logging, before its next checkpoint, must not
    leave rows that the resumed run will write again."""
    if not path.is_file():
        return
    try:
        with open(path, encoding="utf-8", newline="") as f:  # keep csv's \r\n as written
            lines = f.read().splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not a text log ({e.reason} at byte {e.start}): it was damaged or "
            "replaced; move it away to continue with a new log"
        ) from None
    if not lines:
        return

    def keep(line: str) -> bool:  # a line cut by a kill has no newline
        first = line.split(",", 1)[0]
        return line.endswith("\n") and first.isdigit() and int(first) <= step

    kept = lines[:1] + [line for line in lines[1:] if keep(line)]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("".join(kept))
    os.replace(tmp, path)


def _fmt(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}f}"
