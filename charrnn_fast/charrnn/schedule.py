"""Learning-rate schedules and the run's length in steps and seconds.

Two schedules, both after an optional linear warm-up of `warmup_iters` steps:

* "char-rnn": constant, then multiplied by `learning_rate_decay` after each
  completed epoch from `learning_rate_decay_after` on (train.lua's schedule);
* "cosine": from `learning_rate` down to `learning_rate * min_lr_frac` along half
  a cosine over the run's progress.

A run ends at its last step or, with `max_time`, when its wall-time budget is
spent, whichever comes first; its progress is the larger of the two fractions.
A budget in seconds keeps "what fits in N minutes" true on a slower or busier
machine, at the price of exactness: a step-bounded run resumes bit-identically,
a time-bounded one follows the clock.
"""

from __future__ import annotations

import math

from charrnn_fast.charrnn.trainconfig import TrainConfig


def learning_rate_at(cfg: TrainConfig, epochs_done: int) -> float:
    """char-rnn's schedule: after each completed epoch e >= decay_after, lr *= decay."""
    n = epochs_done - max(cfg.learning_rate_decay_after, 1) + 1
    return cfg.learning_rate * cfg.learning_rate_decay ** max(n, 0)


def progress(cfg: TrainConfig, step: int, total_steps: int, elapsed_s: float) -> float:
    """Fraction of the run done, in [0, 1]: by steps, or by seconds under max_time."""
    p = step / max(total_steps, 1)
    if cfg.max_time > 0:
        p = max(p, elapsed_s / cfg.max_time)
    return min(p, 1.0)


def scheduled_lr(
    cfg: TrainConfig, step: int, chunks_per_epoch: int, total_steps: int, elapsed_s: float
) -> float:
    """Learning rate for step `step` (0-based: the step about to run)."""
    if cfg.lr_schedule == "cosine":
        p = progress(cfg, step, total_steps, elapsed_s)
        floor = cfg.learning_rate * cfg.min_lr_frac
        lr = floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        lr = learning_rate_at(cfg, step // max(chunks_per_epoch, 1))
    if step < cfg.warmup_iters:
        lr *= (step + 1) / cfg.warmup_iters
    return lr
