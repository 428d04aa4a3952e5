"""Training logs: CHECKPOINT_DIR/log.csv, TensorBoard when installed, and plain
progress lines when no progress bar is shown (output not a terminal)."""

from __future__ import annotations

import csv
import importlib.util
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from charrnn_fast.charrnn.trainconfig import TrainConfig

COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "tokens_per_s", "elapsed_s")


class TrainLog:
    """Rows of COLUMNS appended to log.csv (flushed per row, so a crash keeps them).

    Args:
        cfg: the run's options (checkpoint_dir, tensorboard).
        enabled: False on ranks other than 0 (they write nothing).
        append: continue an existing log (resume) instead of starting a new one.
        elapsed_offset: seconds the run trained before this session (resume), so
            that elapsed_s keeps counting across sessions.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        enabled: bool = True,
        append: bool = False,
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
        fresh = not (append and path.is_file() and path.stat().st_size > 0)
        self.file = open(path, "w" if fresh else "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        if fresh:
            self.writer.writerow(COLUMNS)
        # TensorBoard is optional: use it only when the package is there.
        if cfg.tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

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


def _fmt(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}f}"
