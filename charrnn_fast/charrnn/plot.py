"""`charrnn-fast plot`: training and validation curves of one or more runs (PNG).

Reads each run's CHECKPOINT_DIR/log.csv (written by `train`): the training loss
(thin line, at every --print_every step) and the validation loss (thick line
with dots, at every --eval_val_every step) share one colour per run, so several
runs compare on one plot. The x axis is the step, the epoch, or the elapsed
wall time (which continues across --resume).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from charrnn_fast.charrnn.errors import UserError

X_AXES = {"step": "step", "epoch": "epoch", "time": "elapsed_s"}
X_LABELS = {"step": "step", "epoch": "epoch", "time": "training wall time (s)"}


@dataclass
class RunLog:
    """The curves of one run; x values keyed by X_AXES' column names."""

    name: str
    train: dict[str, list[float]] = field(default_factory=dict)  # column -> values
    val: dict[str, list[float]] = field(default_factory=dict)

    @property
    def best_val(self) -> float | None:
        return min(self.val["val_loss"]) if self.val.get("val_loss") else None

    @property
    def last_val(self) -> float | None:
        return self.val["val_loss"][-1] if self.val.get("val_loss") else None


def read_log(run_dir: str | Path) -> RunLog:
    """The rows of RUN_DIR/log.csv; a step logged twice (a resume from an earlier
    checkpoint replays steps) keeps its latest row."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        what = "no such folder" if not Path(run_dir).exists() else "no log.csv in it"
        raise UserError(f"{run_dir}: {what} (expected a checkpoint folder of `train`)")
    try:
        log = _parse_log(path, Path(run_dir).name or str(run_dir))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text log ({e.reason} at byte {e.start})") from None
    except (csv.Error, ValueError, TypeError) as e:
        raise UserError(f"{path}: not a training log ({e})") from None
    if not log.train.get("train_loss") and not log.val.get("val_loss"):
        raise UserError(f"{path}: no losses logged yet")
    return log


def _parse_log(path: Path, name: str) -> RunLog:
    train_rows: dict[int, dict] = {}
    val_rows: dict[int, dict] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError("no step column")
        for row in reader:
            step = int(row["step"])
            if row.get("train_loss"):
                train_rows[step] = row
            if row.get("val_loss"):
                val_rows[step] = row
    log = RunLog(name)
    for rows, target, loss in (
        (train_rows, log.train, "train_loss"),
        (val_rows, log.val, "val_loss"),
    ):
        ordered = [rows[k] for k in sorted(rows)]
        for c in ("step", "epoch", "elapsed_s", loss):
            target[c] = [float(r[c]) for r in ordered if r.get(c) not in (None, "")]
    return log


def plot_runs(
    run_dirs: list[str],
    out: str | Path = "curves.png",
    x: str = "step",
    labels: list[str] | None = None,
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> list[RunLog]:
    """Draw every run's curves into one PNG; returns the logs read."""
    if x not in X_AXES:
        raise UserError(f"--x must be one of {', '.join(X_AXES)}")
    if not run_dirs:
        raise UserError("name at least one checkpoint folder")
    if ylim is not None and not (all(math.isfinite(v) for v in ylim) and ylim[0] < ylim[1]):
        raise UserError(f"--ylim {ylim[0]} {ylim[1]}: expected finite LO < HI")
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"--labels: {len(labels)} given for {len(run_dirs)} runs")
    logs = [read_log(d) for d in run_dirs]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    col = X_AXES[x]
    for i, log in enumerate(logs):
        color = f"C{i % 10}"
        name = labels[i] if labels else log.name
        if log.train.get("train_loss"):
            ax.plot(log.train[col], log.train["train_loss"], color=color, lw=0.7, alpha=0.45)
        if log.val.get("val_loss"):
            ax.plot(log.val[col], log.val["val_loss"], "o-", color=color, lw=2, ms=4)
        best = f", best val {log.best_val:.3f}" if log.best_val is not None else ""
        ax.plot([], [], color=color, lw=2, label=f"{name}{best}")
    ax.plot([], [], color="gray", lw=0.7, alpha=0.6, label="thin: train loss")
    ax.plot([], [], "o-", color="gray", lw=2, ms=4, label="thick: validation loss")
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel("loss (nats per token)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "charrnn-fast: training curves")
    save_figure(fig, out)
    return logs


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display), or a clear error."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # must precede the pyplot import
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError("plots need matplotlib (pip install matplotlib)") from e
    return plt


def save_figure(fig, out: str | Path) -> None:
    plt = pyplot()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            fig.savefig(out, dpi=110)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from e
    finally:
        plt.close(fig)
