"""Vanilla RNN vs GRU vs LSTM at equal parameter counts (`charrnn-fast compare`).

Each model type gets the hidden size whose CharRNN comes closest to a parameter
budget (same layers, same input encoding, same data, same steps and schedule)
and is trained with several seeds; every run is a normal checkpoint folder
OUT_DIR/<model>_s<seed> (a finished run is not trained again, an unfinished
one is resumed, so a long comparison can be stopped and continued). The result:
a plot of the validation curves (mean per model, the band spanning the seeds'
minimum and maximum, one thin line per seed), and a table of the final
validation losses (mean, sample standard deviation, min, max) with the hidden
sizes and exact parameter counts, written to OUT_DIR/compare.md and .json.

The model types see the same text in the same order (batches are a function of
the step), but the seeds change the initialisation and dropout masks.
"""

from __future__ import annotations

import json
import statistics
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.data import load_prepared
from charrnn_fast.charrnn.devices import resolve_device
from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.model import MODELS
from charrnn_fast.charrnn.plot import pyplot, read_log, save_figure
from charrnn_fast.charrnn.sizes import param_count
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig
from charrnn_fast.charrnn.trainparts import check_memory


def count_params(vocab_size: int, rnn_size: int, cfg: TrainConfig, model: str) -> int:
    return param_count(vocab_size, rnn_size, cfg.num_layers, model, cfg.embedding_dim)


def size_for(vocab_size: int, params: int, cfg: TrainConfig, model: str) -> tuple[int, int]:
    """(hidden size, parameter count) closest to `params` for this model type."""
    lo, hi = 1, 1 << 40  # counted, never built: any budget has its size
    while lo < hi:  # smallest H with count >= params (counts grow with H)
        mid = (lo + hi) // 2
        if count_params(vocab_size, mid, cfg, model) >= params:
            hi = mid
        else:
            lo = mid + 1
    options = [(h, count_params(vocab_size, h, cfg, model)) for h in {max(lo - 1, 1), lo}]
    return min(options, key=lambda hc: (abs(hc[1] - params), hc[0]))


@dataclass
class Arm:
    model: str
    rnn_size: int
    params: int
    finals: list[float]  # final validation loss per seed
    seconds: list[float]  # training wall time per seed
    dirs: list[str]

    def summary(self) -> dict:
        f = self.finals
        return {
            "model": self.model,
            "rnn_size": self.rnn_size,
            "params": self.params,
            "seeds": len(f),
            "val_mean": statistics.fmean(f),
            "val_std": statistics.stdev(f) if len(f) > 1 else 0.0,
            "val_min": min(f),
            "val_max": max(f),
            "seconds_mean": statistics.fmean(self.seconds),
            "runs": self.dirs,
        }


def compare(
    base: TrainConfig,
    out_dir: str,
    models: list[str],
    seeds: list[int],
    params: int,
) -> list[Arm]:
    """Train every (model, seed) pair of `base` at ~`params` parameters; summarise."""
    if not models or any(m not in MODELS for m in models):
        raise UserError(f"--models takes some of {', '.join(MODELS)}")
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    for name, given in (("--models", models), ("--seeds", seeds)):
        twice = sorted({str(x) for x in given if given.count(x) > 1})
        if twice:
            raise UserError(f"{name}: {', '.join(twice)} given more than once")
    if params < 100:
        raise UserError(f"--params must be >= 100 (got {params})")
    if base.max_iters < 1 and base.max_time <= 0:
        raise UserError("--max_iters must be >= 1 (runs are compared at equal steps)")
    vocab_size = len(load_prepared(base.data_dir).vocab)
    sizes = {m: size_for(vocab_size, params, base, m) for m in models}
    device = resolve_device(base.device)
    for model, (h, _) in sizes.items():  # every arm fits before the first one trains
        arch = {"rnn_size": h, "num_layers": base.num_layers, "model": model}
        check_memory(base, {**arch, "embedding_dim": base.embedding_dim}, vocab_size,
                     base.batch_size, device)  # fmt: skip
    arms = []
    for model in models:
        h, n = sizes[model]
        arm = Arm(model, h, n, [], [], [])
        for seed in seeds:
            run_dir = str(Path(out_dir) / f"{model}_s{seed}")
            cfg = replace(base, model=model, rnn_size=h, seed=seed, checkpoint_dir=run_dir)
            last = Path(run_dir) / "last.pt"
            if last.is_file():
                ckpt = load_checkpoint(last)
                cfg = replace(cfg, resume=True, overwrite=False)
                done = ckpt["step"] >= base.max_iters and ckpt.get("val_loss") is not None
            else:
                done = False
            if not done:
                print(f"training {model} (H={h}, {n:,} parameters), seed {seed}", flush=True)
                if train(cfg.validate()).interrupted:
                    raise KeyboardInterrupt  # Ctrl-C: the run is saved; rerun to continue
                ckpt = load_checkpoint(last)
            if ckpt.get("val_loss") is None:
                raise UserError(f"{run_dir}: no validation loss (is --val_frac 0?)")
            arm.finals.append(float(ckpt["val_loss"]))
            arm.seconds.append(float(ckpt.get("elapsed_s") or 0.0))
            arm.dirs.append(run_dir)
        arms.append(arm)
    write_report(arms, base, out_dir)
    return arms


def write_report(arms: list[Arm], base: TrainConfig, out_dir: str) -> None:
    out = Path(out_dir)
    rows = [a.summary() for a in arms]
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    lines = [
        f"{base.num_layers} layers, embedding {base.embedding_dim or 'one-hot'}, "
        f"batch {base.batch_size} x seq {base.seq_length}, {base.max_iters} steps, "
        f"lr {base.learning_rate} ({base.lr_schedule}, warm-up {base.warmup_iters}), "
        f"clip {base.grad_clip}, dropout {base.dropout}, state resets {base.reset_prob}, "
        f"data {base.data_dir}",
        "",
        "| model | hidden | parameters | seeds | final val loss mean | std | min | max "
        "| train s (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['rnn_size']} | {r['params']:,} | {r['seeds']} | "
            f"{r['val_mean']:.4f} | {r['val_std']:.4f} | {r['val_min']:.4f} | "
            f"{r['val_max']:.4f} | {r['seconds_mean']:.0f} |"
        )
    (out / "compare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_arms(arms, out / "compare.png", lines[0])


def plot_arms(arms: list[Arm], path: Path, subtitle: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for i, arm in enumerate(arms):
        color = f"C{i}"
        curves = [read_log(d).val for d in arm.dirs]
        steps = sorted(set.intersection(*(set(c["step"]) for c in curves)))
        if not steps:
            continue
        per_step = [
            [dict(zip(c["step"], c["val_loss"]))[s] for c in curves] for s in steps
        ]  # [step][seed]
        for c in curves:
            ax.plot(c["step"], c["val_loss"], color=color, lw=0.6, alpha=0.5)
        mean = [statistics.fmean(v) for v in per_step]
        ax.fill_between(
            steps, [min(v) for v in per_step], [max(v) for v in per_step], color=color, alpha=0.2
        )
        ax.plot(
            steps,
            mean,
            "o-",
            color=color,
            lw=2,
            ms=3,
            label=f"{arm.model} H={arm.rnn_size} ({arm.params:,} params): {mean[-1]:.3f}",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    wrapped = textwrap.fill(subtitle, 120)
    ax.set_title(f"RNN vs GRU vs LSTM, mean and min-max over seeds\n{wrapped}", fontsize=8)
    save_figure(fig, path)
