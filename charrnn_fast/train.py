"""Training loop: truncated BPTT over contiguous row streams, char-rnn style.

`train(cfg)` runs single-process or, under torchrun, data-parallel (DDP, each rank
a disjoint share of the rows). A run can always be continued exactly: the
checkpoint holds model, optimiser, RNG states, the carried hidden state and the
data position, and everything else (learning rate, batch order) is a function of
the step. Ctrl-C finishes the current step, saves, and stops.

Also runnable as `python -m charrnn_fast.train [options]` (= `charrnn-fast train`).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from charrnn_fast import distributed as ddp
from charrnn_fast.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from charrnn_fast.data import StreamBatcher, load_prepared, max_rows, split_tokens
from charrnn_fast.errors import CheckpointError, UserError, VocabError
from charrnn_fast.model import CharRNN, State, detach_state
from charrnn_fast.trainconfig import TrainConfig, last_checkpoint_path
from charrnn_fast.trainlog import TrainLog
from charrnn_fast.vocab import Vocab


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoint: str | None = None
    interrupted: bool = False


def learning_rate_at(cfg: TrainConfig, epochs_done: int) -> float:
    """char-rnn's schedule: after each completed epoch e >= decay_after, lr *= decay."""
    n = epochs_done - max(cfg.learning_rate_decay_after, 1) + 1
    return cfg.learning_rate * cfg.learning_rate_decay ** max(n, 0)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.learning_rate, alpha=cfg.decay_rate,
                               eps=1e-8, weight_decay=cfg.weight_decay)  # fmt: skip


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in fp32. logits: [T, B, V] (time-major); targets: [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.t().reshape(-1))


class _StopFlag:
    """First Ctrl-C asks for a clean stop (finish the step, save); a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)  # fmt: skip

    @contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers live in the main thread only
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: CharRNN, batcher: StreamBatcher, cfg: TrainConfig, device: torch.device,
             info: ddp.DistInfo, stop: _StopFlag | None = None) -> float | None:  # fmt: skip
    """Mean loss per token over the split (all ranks' rows); None if stopped early."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [loss sum, tokens]
    state = None
    n = batcher.num_chunks if cfg.eval_max_batches <= 0 else min(cfg.eval_max_batches, batcher.num_chunks)
    for k in range(n):
        if stop is not None and stop.requested and not info.enabled:
            model.train(was_training)
            return None
        x, y = (t.to(device, non_blocking=True) for t in batcher.batch(k))
        with _autocast(cfg, device):
            logits, state = model(x, state)
        total[0] += lm_loss(logits, y).double() * y.numel()
        total[1] += y.numel()
    model.train(was_training)
    ddp.all_reduce_sum(total, info)
    return float(total[0] / total[1])


def _load_start(cfg: TrainConfig, vocab: Vocab) -> dict | None:
    """The checkpoint to resume or initialise from (validated against the data)."""
    if cfg.resume:
        path = last_checkpoint_path(cfg.checkpoint_dir)
        if not path.is_file():
            raise CheckpointError(f"nothing to resume: no checkpoint at {path}")
    elif cfg.init_from:
        path = Path(cfg.init_from)
    else:
        last = last_checkpoint_path(cfg.checkpoint_dir)
        if last.exists() and not cfg.overwrite:
            raise UserError(f"{last} exists: continue it with --resume, or start over with "
                            "--overwrite or another --checkpoint_dir")  # fmt: skip
        return None
    ckpt = load_checkpoint(path, map_location="cpu")
    stored = Vocab.from_dict(ckpt["vocab"])
    if stored != vocab:
        raise VocabError(f"vocabulary mismatch: {ckpt['path']} was trained on a different "
                         f"vocabulary than {cfg.data_dir} ({stored.difference(vocab)})")  # fmt: skip
    return ckpt


def train(cfg: TrainConfig, on_step: Callable[[int, float | None], None] | None = None) -> TrainResult:
    """Train a CharRNN as configured. `on_step(step, loss_or_None)` runs after each step
    (tests use it to simulate Ctrl-C). Returns the losses seen by this process."""
    cfg.validate()
    info, device = ddp.init_distributed(cfg.device)
    try:
        with _StopFlag().installed() as stop:
            return _train(cfg, info, device, stop, on_step)
    finally:
        ddp.shutdown()


def _train(cfg: TrainConfig, info: ddp.DistInfo, device: torch.device, stop: _StopFlag,
           on_step: Callable | None) -> TrainResult:  # fmt: skip
    data = load_prepared(cfg.data_dir)
    vocab = data.vocab
    ckpt = _load_start(cfg, vocab)
    splits = split_tokens(data, cfg.train_frac, cfg.val_frac)
    rows = ddp.row_share(cfg.batch_size, info)
    train_batches = StreamBatcher(splits["train"], cfg.batch_size, cfg.seq_length, rows, "train")
    val_batches = None
    val_rows = min(cfg.batch_size, max_rows(len(splits["val"]), cfg.seq_length))
    val_rows -= val_rows % info.world_size  # every rank an equal share
    if len(splits["val"]) > 0:
        val_batches = StreamBatcher(splits["val"], max(val_rows, 1), cfg.seq_length,
                                    ddp.row_share(max(val_rows, 1), info), "val")  # fmt: skip
    cpe = train_batches.num_chunks
    max_iters = cfg.max_iters or math.ceil(cfg.max_epochs * cpe)

    torch.manual_seed(cfg.seed)
    model_cfg = ckpt["model_config"] if ckpt is not None else {}
    model = CharRNN(
        len(vocab),
        rnn_size=model_cfg.get("rnn_size", cfg.rnn_size),
        num_layers=model_cfg.get("num_layers", cfg.num_layers),
        model=model_cfg.get("model", cfg.model),
        dropout=cfg.dropout,
        embedding_dim=model_cfg.get("embedding_dim", cfg.embedding_dim),
        backend=None if cfg.backend == "auto" else cfg.backend,
    ).to(device)
    optimizer = make_optimizer(cfg, model.parameters())
    step, state, best_val = 0, None, math.inf
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt['path']}: weights do not fit the model ({e})") from e
    if ckpt is not None and cfg.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        best_val = ckpt.get("best_val_loss") or math.inf
        hidden = ckpt.get("hidden") or []
        if hidden and hidden[0].shape[1] == cfg.batch_size:
            state = tuple(h[:, rows.start : rows.stop].to(device) for h in hidden)
        restore_rng_state(ckpt["rng"])
        if info.rank > 0:  # only rank 0's RNG is stored: other ranks get a fresh stream
            torch.manual_seed(cfg.seed + 7919 * info.rank + step)
    elif info.rank > 0:
        torch.manual_seed(cfg.seed + 7919 * info.rank)  # distinct dropout masks per rank
    net = model
    if info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    log = TrainLog(cfg, enabled=info.is_main, append=cfg.resume)
    result = TrainResult(step=step)

    def save(val_loss: float | None) -> str | None:
        nonlocal best_val
        full = ddp.gather_rows(state, info) if state is not None else None
        if not info.is_main:
            return None
        is_best = val_loss is not None and val_loss < best_val
        best_val = min(best_val, val_loss) if val_loss is not None else best_val
        epoch, chunk = divmod(step, cpe)
        blob = {
            "model": model.state_dict(),
            "model_config": model.config(),
            "optimizer": optimizer.state_dict(),
            "config": cfg.to_dict(),
            "vocab": vocab.to_dict(),
            "step": step,
            "position": {"epoch": epoch, "chunk": chunk, "chunks_per_epoch": cpe},
            "hidden": [h.detach().cpu() for h in full] if full is not None else [],
            "rng": capture_rng_state(),
            "val_loss": val_loss,
            "best_val_loss": None if math.isinf(best_val) else best_val,
            "data": {"path": str(data.path), "num_tokens": len(data)},
        }
        path = save_checkpoint(blob, last_checkpoint_path(cfg.checkpoint_dir))
        if is_best:
            save_checkpoint(blob, Path(cfg.checkpoint_dir) / "best.pt")
        return str(path)

    bar = tqdm(total=max_iters, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=(not cfg.progress or not info.is_main) or None)  # fmt: skip
    pending: list[torch.Tensor] = []
    tokens_since, t_last = 0, time.perf_counter()
    if info.is_main:
        print(f"training {model.config()} on {len(splits['train']):,} tokens ({cpe} chunks/epoch, "
              f"{max_iters} steps) on {device} x{info.world_size}", file=sys.stderr)  # fmt: skip
    net.train()
    try:
        while step < max_iters:
            epochs_done, chunk = divmod(step, cpe)
            if chunk == 0:
                state = None  # a new epoch restarts every row stream
            lr = learning_rate_at(cfg, epochs_done)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = (t.to(device, non_blocking=True) for t in train_batches.batch(chunk))
            with _autocast(cfg, device):
                logits, state = net(x, state)
            loss = lm_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0 and cfg.grad_clip_mode == "norm":
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            elif cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state = detach_state(state)
            step += 1
            pending.append(loss.detach())
            tokens_since += train_batches.tokens_per_chunk * info.world_size
            bar.update(1)
            last_loss = None
            at_print = step % cfg.print_every == 0 or step == max_iters
            if at_print:
                # One device sync per print, not per step, keeps GPUs busy.
                losses = ddp.all_reduce_mean(torch.stack(pending).float(), info).tolist()
                pending.clear()
                result.losses.extend(zip(range(step - len(losses) + 1, step + 1), losses))
                last_loss = losses[-1]
                now = time.perf_counter()
                tok_s = tokens_since / max(now - t_last, 1e-9)
                tokens_since, t_last = 0, now
                bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
                log.write(step, step / cpe, lr, train_loss=last_loss, tokens_per_s=tok_s,
                          bar_disabled=bar.disable)  # fmt: skip
            if on_step is not None:
                on_step(step, last_loss)
            # All ranks must agree to stop; they compare notes at print steps.
            stopping = stop.requested if not info.enabled else (
                at_print and ddp.broadcast_flag(stop.requested, info, device))  # fmt: skip
            if stopping:
                result.interrupted = True
                break
            if step % cfg.eval_val_every == 0 or step == max_iters:
                val = evaluate(model, val_batches, cfg, device, info, stop) if val_batches else None
                if val is not None:
                    result.val_losses.append((step, val))
                    log.write(step, step / cpe, lr, val_loss=val, bar_disabled=bar.disable)
                result.checkpoint = save(val)
                if stop.requested and not info.enabled:  # Ctrl-C during validation
                    result.interrupted = True
                    break
    finally:
        bar.close()
    if pending:  # stopped between prints
        losses = ddp.all_reduce_mean(torch.stack(pending).float(), info).tolist()
        result.losses.extend(zip(range(step - len(losses) + 1, step + 1), losses))
    if result.interrupted:
        result.checkpoint = save(None)
    log.close()
    result.step = step
    return result


def main(argv: list[str] | None = None) -> int:
    from charrnn_fast.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
