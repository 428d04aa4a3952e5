"""Parts of a training step that train.py puts together: the optimiser, the
random state resets, autocast, the validation pass, and the memory check made
before a model is built."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from charrnn_fast.charrnn import distributed as ddp
from charrnn_fast.charrnn.data import StreamBatcher
from charrnn_fast.charrnn.model import CharRNN, State, lm_loss
from charrnn_fast.charrnn.sizes import (
    check_disk,
    check_fits,
    checkpoint_bytes,
    param_count,
    train_bytes,
)
from charrnn_fast.charrnn.stopping import StopFlag
from charrnn_fast.charrnn.trainconfig import TrainConfig


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(
        params, lr=cfg.learning_rate, alpha=cfg.decay_rate, eps=1e-8, weight_decay=cfg.weight_decay
    )


def reset_rows(state: State, cfg: TrainConfig, step: int, rows: range) -> State:
    """Zero the carried state of each row with probability cfg.reset_prob.

    Without resets a row's state is zero once per epoch only, and a model trained
    for an epoch or two may never learn to start from a zero state (as validation
    and sampling do): from some starting texts it settles into a state where its
    predictions are wrong for thousands of characters. The draw is a function of
    (seed, step) over the whole batch, so every rank and every resume agrees.
    state: [num_layers, len(rows), H] tensors (this rank's rows)."""
    gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) % (1 << 63))
    keep = (torch.rand(cfg.batch_size, generator=gen) >= cfg.reset_prob)[rows.start : rows.stop]
    if bool(keep.all()):
        return state
    mask = keep.to(device=state[0].device, dtype=state[0].dtype)[None, :, None]
    return tuple(s * mask for s in state)


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: CharRNN,
    batcher: StreamBatcher,
    cfg: TrainConfig,
    device: torch.device,
    info: ddp.DistInfo,
    stop: StopFlag | None = None,
) -> float | None:
    """Mean loss per token over the split (all ranks' rows); None if stopped early."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [loss sum, tokens]
    state = None
    n = (
        batcher.num_chunks
        if cfg.eval_max_batches <= 0
        else min(cfg.eval_max_batches, batcher.num_chunks)
    )
    for k in range(n):
        if stop is not None and stop.requested and not info.enabled:
            model.train(was_training)
            return None
        x, y = (t.to(device, non_blocking=True) for t in batcher.batch(k))
        with autocast(cfg, device):
            logits, state = model(x, state)
        total[0] += lm_loss(logits, y).double() * y.numel()
        total[1] += y.numel()
    model.train(was_training)
    ddp.all_reduce_sum(total, info)
    return float(total[0] / total[1])


def check_memory(
    cfg: TrainConfig, arch: dict, vocab_size: int, rows: int, device: torch.device
) -> None:
    """UserError, before anything is allocated, when the model and a batch of
    this run cannot fit in the device's memory, or its checkpoints on the disk."""
    config = {**arch, "vocab_size": vocab_size}
    params = param_count(vocab_size, *(arch[k] for k in MODEL_KEYS))
    needed = train_bytes(params, config, rows, cfg.seq_length, cfg.optimizer)
    what = (
        f"the model ({arch['model']}, {arch['num_layers']} x {arch['rnn_size']} units, "
        f"{params:,} parameters) trained on batches of {rows} x {cfg.seq_length}"
    )
    hint = "use a smaller --rnn_size, --num_layers, --embedding_dim, --batch_size or --seq_length"
    check_fits(needed, device, what, hint)
    # last.pt, best.pt and the temporary file of a save, side by side.
    disk = 3 * checkpoint_bytes(params, cfg.optimizer)
    check_disk(disk, cfg.checkpoint_dir, f"the checkpoints of {params:,} parameters")


MODEL_KEYS = ("rnn_size", "num_layers", "model", "embedding_dim")
