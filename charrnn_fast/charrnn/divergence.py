"""A training run whose loss or gradient stops being finite has diverged.

Every step's loss and total gradient norm are checked before the optimiser
applies the gradients (one small host sync per step). With `--nonfinite stop`
(the default) the run ends there with one line naming the step and a likely
cause: nothing of it is saved, so the last checkpoint stays as it was. With
`--nonfinite skip` the step is dropped (no update, the carried state restarts)
and training goes on; MAX_SKIPPED non-finite steps in a row mean the weights
themselves are lost, and stop the run as well. A non-finite validation loss, or
non-finite weights at a save, always stop it.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from charrnn_fast.charrnn.errors import DivergedError
from charrnn_fast.charrnn.trainconfig import MAX_SKIPPED, TrainConfig


def grad_norm(params: list[nn.Parameter], cfg: TrainConfig) -> torch.Tensor:
    """Total 2-norm of the gradients (before clipping), clipping as configured."""
    if cfg.grad_clip > 0 and cfg.grad_clip_mode == "norm":
        return torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_value_(params, cfg.grad_clip)
    return norm


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity."""
    return [n for n, p in model.named_parameters() if not bool(p.isfinite().all())]


def likely_cause(cfg: TrainConfig, lr: float, loss: float, norm: float, weights: list[str]) -> str:
    """The most plausible reason for a divergence, and what to change."""
    if cfg.weight_decay >= 1:
        return (
            f"--weight_decay {cfg.weight_decay:g} is far too strong (usual values are 0 to "
            "0.1): the weights grow with every step"
        )
    if weights:
        return (
            f"an update made the weights non-finite ({', '.join(weights[:2])}): the learning "
            f"rate {lr:.3g} is too high for this model (lower --learning_rate)"
        )
    if cfg.dtype == "bfloat16" and not math.isfinite(loss):
        return "the bfloat16 forward pass overflowed (try --dtype float32)"
    if math.isfinite(loss) and cfg.grad_clip == 0:
        return "exploding gradients with clipping off (set --grad_clip, e.g. 1)"
    return f"the learning rate {lr:.3g} is too high (lower --learning_rate or --warmup_iters more)"


class DivergenceGuard:
    """Decides, step by step, whether an update may be applied (see module docstring)."""

    def __init__(self, cfg: TrainConfig, distributed: bool) -> None:
        self.cfg, self.distributed = cfg, distributed
        self.in_row = self.skipped = 0
        self.last_saved: tuple[int, str] | None = None  # (step, path) of the last save

    def finite(self, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        # Under DDP the gradient norm is the same on every rank (the gradients are
        # averaged), so every rank decides alike; the local loss need not be.
        ok = norm.isfinite() if self.distributed else norm.isfinite() & loss.isfinite()
        return bool(ok)

    def nonfinite_step(
        self, step: int, lr: float, loss: torch.Tensor, norm: torch.Tensor, model: nn.Module
    ) -> None:
        """Step `step` (1-based) had a non-finite loss or gradient: raise
        DivergedError, or count it as skipped."""
        loss = loss.detach()
        self.in_row += 1
        self.skipped += 1
        what = f"loss {float(loss.detach()):.4g}, gradient norm {float(norm):.4g}"
        if self.cfg.nonfinite == "skip" and self.in_row < MAX_SKIPPED:
            print(
                f"step {step}: non-finite {what}; step skipped (--nonfinite skip)",
                file=sys.stderr,
            )
            return
        many = f"{self.in_row} steps in a row, " if self.in_row > 1 else ""
        cause = likely_cause(self.cfg, lr, float(loss), float(norm), nonfinite_weights(model))
        self.fail(f"training diverged at step {step} ({many}{what}); likely cause: {cause}")

    def finite_step(self) -> None:
        self.in_row = 0

    def fail(self, what: str) -> None:
        """Raise DivergedError for `what`, saying which checkpoint is kept."""
        if self.last_saved is not None:
            step, path = self.last_saved
            kept = f"{path} (step {step}) is kept as it was"
        else:
            kept = "no checkpoint of this run was saved"
        raise DivergedError(f"{what}. {kept}")

    def check_val(self, step: int, val: float | None, lr: float, model: nn.Module) -> None:
        if val is not None and not math.isfinite(val):
            cause = likely_cause(self.cfg, lr, val, 0.0, nonfinite_weights(model))
            self.fail(f"training diverged at step {step} (validation loss {val}); "
                      f"likely cause: {cause}")  # fmt: skip

    def check_weights(self, step: int, lr: float, model: nn.Module) -> None:
        bad = nonfinite_weights(model)
        if bad:
            cause = likely_cause(self.cfg, lr, math.nan, math.nan, bad)
            self.fail(f"training diverged at step {step}; likely cause: {cause}")
