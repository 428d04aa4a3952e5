"""Training loop: truncated BPTT over contiguous row streams, char-rnn style.

`train(cfg)` runs single-process or, under torchrun, data-parallel (DDP, each rank
a disjoint share of the rows). A run can always be continued exactly: the
checkpoint holds model, optimiser, RNG states, the carried hidden state and the
data position, and everything else (learning rate, batch order) is a function of
the step. Ctrl-C, SIGTERM or SIGHUP finishes the current step, saves, and stops
(stopping.py); the checkpoint folder is locked for the run (runlock.py). A
step whose loss or gradient is not finite stops the run, or is skipped with
`--nonfinite skip` (divergence.py): a diverged run is never saved or called done.

Run it as `charrnn-fast train [options]`, or under torchrun as
`torchrun --nproc_per_node=N -m charrnn_fast.charrnn train [options]`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from charrnn_fast.charrnn import distributed as ddp
from charrnn_fast.charrnn import precision
from charrnn_fast.charrnn.checkpoint import (
    capture_rng_state,
    clear_old_run,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from charrnn_fast.charrnn.data import StreamBatcher, load_prepared, max_rows, split_tokens
from charrnn_fast.charrnn.devices import check_backend
from charrnn_fast.charrnn.divergence import DivergenceGuard, grad_norm
from charrnn_fast.charrnn.errors import CheckpointError, CorpusError, UserError, VocabError
from charrnn_fast.charrnn.model import CharRNN, State, detach_state, lm_loss
from charrnn_fast.charrnn.progress import progress_bar
from charrnn_fast.charrnn.runlock import rank0_folder_lock
from charrnn_fast.charrnn.schedule import scheduled_lr
from charrnn_fast.charrnn.stopping import StopFlag
from charrnn_fast.charrnn.trainconfig import TrainConfig, last_checkpoint_path
from charrnn_fast.charrnn.trainlog import TrainLog
from charrnn_fast.charrnn.trainparts import (
    autocast,
    check_memory,
    evaluate,
    make_optimizer,
    reset_rows,
)
from charrnn_fast.charrnn.trainsamples import SampleWriter
from charrnn_fast.charrnn.vocab import Vocab
from charrnn_fast.threads import FreeCores


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoint: str | None = None
    interrupted: bool = False
    stop_signal: int | None = None  # the signal that interrupted the run
    rank: int = 0  # distributed rank of this process (0 writes checkpoints and logs)
    elapsed_s: float = 0.0  # wall time trained, over all sessions of the run
    out_of_time: bool = False  # stopped by --max_time
    skipped: int = 0  # non-finite steps skipped (--nonfinite skip)


def _load_start(cfg: TrainConfig, vocab: Vocab) -> dict | None:
    """The checkpoint to resume or initialise from (validated against the data)."""
    last = last_checkpoint_path(cfg.checkpoint_dir)
    if cfg.resume:
        if not last.is_file():
            raise CheckpointError(f"nothing to resume: no checkpoint at {last}")
        ckpt = load_checkpoint(last, map_location="cpu")
    else:
        old = [p for p in (last, last.with_name("best.pt")) if p.exists()]
        if old and not cfg.overwrite:
            raise UserError(
                f"{old[0]} exists: continue it with --resume, or start over with "
                "--overwrite or another --checkpoint_dir"
            )
        if not cfg.init_from:
            return None
        # Read now, before the old run is cleared: it may be one of its files.
        ckpt = load_checkpoint(cfg.init_from, map_location="cpu")
    stored = Vocab.from_dict(ckpt["vocab"])
    if stored != vocab:
        raise VocabError(
            f"vocabulary mismatch: {ckpt['path']} was trained on a different "
            f"vocabulary than {cfg.data_dir} ({stored.difference(vocab)})"
        )
    return ckpt


def train(
    cfg: TrainConfig, on_step: Callable[[int, float | None], None] | None = None
) -> TrainResult:
    """Train a CharRNN as configured. `on_step(step, loss_or_None)` runs after each step
    (tests use it to simulate Ctrl-C). Returns the losses seen by this process."""
    cfg.validate()
    info, device = ddp.init_distributed(cfg.device)
    try:
        lock = rank0_folder_lock(cfg.checkpoint_dir, info, device)
        with lock, StopFlag().installed() as stop:
            run = _Run(cfg, info, device)
            try:
                return run.loop(stop, on_step)
            finally:
                run.log.close()
    finally:
        ddp.shutdown()


class _Run:
    """One training run: data, model, optimiser and position, restored or fresh."""

    def __init__(self, cfg: TrainConfig, info: ddp.DistInfo, device: torch.device) -> None:
        self.cfg, self.info, self.device = cfg, info, device
        self.data = load_prepared(cfg.data_dir)
        self.vocab = self.data.vocab
        ckpt = _load_start(cfg, self.vocab)
        splits = split_tokens(self.data, cfg.train_frac, cfg.val_frac)
        self.n_train = len(splits["train"])
        self.rows = ddp.row_share(cfg.batch_size, info)
        self.batches = StreamBatcher(
            splits["train"], cfg.batch_size, cfg.seq_length, self.rows, "train"
        )
        self.val_batches = None
        if len(splits["val"]) > 0:
            # The val split may be smaller than train: fewer rows, as many as fit,
            # an equal share for every rank.
            n = min(cfg.batch_size, max_rows(len(splits["val"]), cfg.seq_length))
            n -= n % info.world_size
            if n == 0:
                raise CorpusError(
                    f"the val split ({len(splits['val'])} tokens) is too small for one "
                    f"row of seq_length {cfg.seq_length} per process; use a larger "
                    "--val_frac or --val_frac 0"
                )
            self.val_batches = StreamBatcher(
                splits["val"], n, cfg.seq_length, ddp.row_share(n, info), "val"
            )
        self.cpe = self.batches.num_chunks  # chunks (steps) per epoch
        self.max_iters = cfg.max_iters or math.ceil(cfg.max_epochs * self.cpe)

        torch.manual_seed(cfg.seed)
        arch = {
            "rnn_size": cfg.rnn_size,
            "num_layers": cfg.num_layers,
            "model": cfg.model,
            "embedding_dim": cfg.embedding_dim,
        }
        if ckpt is not None:  # --init_from/--resume: the checkpoint's architecture wins
            arch = {k: ckpt["model_config"][k] for k in arch}
        check_memory(cfg, arch, len(self.vocab), len(self.rows), device)
        backend = None if cfg.backend == "auto" else cfg.backend
        if arch["model"] == "lstm":  # the other cells are torch's, with no backend
            dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
            check_backend(backend, device, dtype, arch["rnn_size"], cfg.seq_length, len(self.rows))
        self.model = CharRNN(len(self.vocab), dropout=cfg.dropout, backend=backend, **arch)
        self.model.to(device)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.step, self.best_val = 0, math.inf
        # Wall time of earlier sessions of this run (resume), and of this one.
        self.elapsed_base, self.clock_start = 0.0, time.perf_counter()
        self.time_seen = 0.0  # elapsed time as all ranks agree on it (print steps)
        self.state: State | None = None
        if ckpt is not None:
            try:
                self.model.load_state_dict(ckpt["model"])
            except RuntimeError as e:
                raise CheckpointError(f"{ckpt['path']}: weights do not fit ({e})") from e
        if cfg.dtype == "auto":  # measured on this model and machine (precision.py)
            choice, why = precision.choose(
                self.model, len(self.vocab), len(self.rows), cfg.seq_length, device
            )
            if info.enabled:  # every rank trains in rank 0's choice
                flag = ddp.broadcast_flag(choice == "bfloat16", info, device)
                choice = "bfloat16" if flag else "float32"
            cfg.dtype = choice  # recorded resolved in every checkpoint
            if info.is_main:
                print(f"--dtype auto: {choice} ({why})", file=sys.stderr)
        if ckpt is not None and cfg.resume:
            self._restore(ckpt)
        elif info.rank > 0:
            torch.manual_seed(cfg.seed + 7919 * info.rank)  # distinct dropout masks per rank
        self.net: torch.nn.Module = self.model
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.overwrite and not cfg.resume and info.is_main:
            clear_old_run(cfg.checkpoint_dir)  # a new run: nothing of the old one stays
        self.log = TrainLog(
            cfg,
            enabled=info.is_main,
            append=cfg.resume,
            keep_until=self.step,
            elapsed_offset=self.elapsed_base,
        )
        self.samples = SampleWriter(cfg, self.vocab) if info.is_main and cfg.sample_every else None
        self.guard = DivergenceGuard(cfg, info.enabled)
        self.lr = cfg.learning_rate

    def _restore(self, ckpt: dict) -> None:
        try:
            self._restore_state(ckpt)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise CheckpointError(
                f"{ckpt['path']}: its training state does not load ({type(e).__name__}: {e}); "
                "continue from another checkpoint, or start over with --init_from"
            ) from e

    def _restore_state(self, ckpt: dict) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])
        self.best_val = ckpt.get("best_val_loss") or math.inf
        self.elapsed_base = self.time_seen = float(ckpt.get("elapsed_s") or 0.0)
        hidden = ckpt.get("hidden") or []
        if hidden and hidden[0].shape[1] == self.cfg.batch_size:
            r = self.rows
            self.state = tuple(h[:, r.start : r.stop].to(self.device) for h in hidden)
        restore_rng_state(ckpt["rng"])
        if self.info.rank > 0:  # only rank 0's RNG is stored: other ranks get a fresh stream
            torch.manual_seed(self.cfg.seed + 7919 * self.info.rank + self.step)

    def save(self, val_loss: float | None) -> str | None:
        """Checkpoint to last.pt (and best.pt on a new best val loss); rank 0 writes."""
        self.guard.check_weights(self.step, self.lr, self.model)  # never save a lost model
        full = ddp.gather_rows(self.state, self.info) if self.state is not None else None
        if not self.info.is_main:
            return None
        is_best = val_loss is not None and val_loss < self.best_val
        if is_best:
            self.best_val = val_loss
        epoch, chunk = divmod(self.step, self.cpe)
        blob = {
            "model": self.model.state_dict(),
            "model_config": self.model.config(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "vocab": self.vocab.to_dict(),
            "step": self.step,
            "position": {"epoch": epoch, "chunk": chunk, "chunks_per_epoch": self.cpe},
            "hidden": [h.detach().cpu() for h in full] if full is not None else [],
            "rng": capture_rng_state(),
            "val_loss": val_loss,
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "data": {"path": str(self.data.path), "num_tokens": len(self.data)},
            "elapsed_s": self.elapsed(),
        }
        path = save_checkpoint(blob, last_checkpoint_path(self.cfg.checkpoint_dir))
        if is_best:
            save_checkpoint(blob, Path(self.cfg.checkpoint_dir) / "best.pt")
        self.guard.last_saved = (self.step, str(path))
        return str(path)

    def elapsed(self) -> float:
        """Seconds of wall time this run has trained, over all its sessions."""
        return self.elapsed_base + time.perf_counter() - self.clock_start

    def sync_clock(self) -> bool:
        """Update `time_seen` (the same on every rank); True when --max_time is spent."""
        self.time_seen = ddp.all_reduce_max(self.elapsed(), self.info, self.device)
        return self.cfg.max_time > 0 and self.time_seen >= self.cfg.max_time

    def train_step(self, lr: float) -> torch.Tensor:
        """One optimisation step on the next chunk; returns the (unsynced) loss."""
        cfg = self.cfg
        chunk = self.step % self.cpe
        if chunk == 0:
            self.state = None  # a new epoch restarts every row stream
        elif cfg.reset_prob > 0 and self.state is not None:
            self.state = reset_rows(self.state, cfg, self.step, self.rows)
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = (t.to(self.device, non_blocking=True) for t in self.batches.batch(chunk))
        with autocast(cfg, self.device):
            logits, state = self.net(x, self.state)
        loss = lm_loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm(list(self.model.parameters()), cfg)
        self.step += 1
        if not self.guard.finite(loss, norm):
            self.guard.nonfinite_step(self.step, lr, loss, norm, self.model)  # raises on stop
            self.optimizer.zero_grad(set_to_none=True)
            self.state = None  # skipped: the carried state may hold the NaN too
            return loss.detach()
        self.guard.finite_step()
        self.optimizer.step()
        self.state = detach_state(state)
        return loss.detach()

    def loop(self, stop: StopFlag, on_step: Callable | None) -> TrainResult:
        cfg, info = self.cfg, self.info
        result = TrainResult(step=self.step, rank=info.rank)
        pending: list[torch.Tensor] = []

        def flush() -> float:
            # One device sync per print, not per step, keeps GPUs busy.
            losses = ddp.all_reduce_mean(torch.stack(pending).float(), info).tolist()
            first = self.step - len(losses) + 1
            result.losses.extend(zip(range(first, self.step + 1), losses, strict=True))
            pending.clear()
            return losses[-1]

        if info.is_main:
            print(
                f"training {self.model.config()} on {self.n_train:,} tokens, {self.cpe} "
                f"chunks/epoch, {self.max_iters} steps, {self.device} x{info.world_size}",
                file=sys.stderr,
            )
        bar = progress_bar(
            None if cfg.max_time > 0 else self.max_iters,  # time-bound: no step ETA
            "train",
            unit="step",
            initial=self.step,
            enabled=cfg.progress and info.is_main,
        )
        out_of_time = cfg.max_time > 0 and self.elapsed_base >= cfg.max_time
        if (self.step >= self.max_iters or out_of_time) and info.is_main:
            print(
                f"already at step {self.step} of {self.max_iters}, "
                f"{self.elapsed_base:.0f} s trained: nothing to do (raise --max_iters, "
                "--max_epochs or --max_time to train further)",
                file=sys.stderr,
            )
        tokens, t_last = 0, time.perf_counter()
        self.clock_start = t_last
        self.log.t0 = t_last - self.elapsed_base  # the log's clock is the run's clock
        self.net.train()
        threads = None
        if self.device.type == "cpu":
            if cfg.threads > 0:
                torch.set_num_threads(cfg.threads)
            else:
                threads = FreeCores()
        try:
            while self.step < self.max_iters and not out_of_time:
                if threads is not None:
                    threads.update()
                lr = scheduled_lr(cfg, self.step, self.cpe, self.max_iters, self.time_seen)
                pending.append(self.train_step(lr))
                tokens += self.batches.tokens_per_chunk * info.world_size
                bar.update(1)
                step, loss = self.step, None
                at_print = step % cfg.print_every == 0 or step == self.max_iters
                # The clock is read (and agreed on by all ranks) at print steps only.
                out_of_time = at_print and self.sync_clock()
                if at_print:
                    loss = flush()
                    now = time.perf_counter()
                    tok_s, tokens, t_last = tokens / max(now - t_last, 1e-9), 0, now
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
                    self.log.write(
                        step,
                        step / self.cpe,
                        lr,
                        train_loss=loss,
                        tokens_per_s=tok_s,
                        bar_disabled=bar.disable,
                    )
                if on_step is not None:
                    on_step(step, loss)
                # Ranks must agree to stop; they compare notes at print steps only.
                if info.enabled:
                    stopping = at_print and ddp.broadcast_flag(stop.requested, info, self.device)
                else:
                    stopping = stop.requested
                if stopping:
                    result.interrupted = True
                    break
                if self.samples is not None and step % cfg.sample_every == 0:
                    self.samples.write(self.model, step, loss, self.elapsed())
                if step % cfg.eval_val_every == 0 or step == self.max_iters or out_of_time:
                    val = None
                    if self.val_batches is not None:
                        val = evaluate(self.model, self.val_batches, cfg, self.device, info, stop)
                    self.guard.check_val(step, val, lr, self.model)
                    if val is not None:
                        result.val_losses.append((step, val))
                        self.log.write(
                            step, step / self.cpe, lr, val_loss=val, bar_disabled=bar.disable
                        )
                    result.checkpoint = self.save(val)
                    if stop.requested and not info.enabled:  # Ctrl-C during validation
                        result.interrupted = True
                        break
        finally:
            bar.close()
        if pending:  # stopped between prints
            flush()
        if result.interrupted:
            result.stop_signal = stop.signum
            result.checkpoint = self.save(None)
        result.step, result.elapsed_s, result.out_of_time = self.step, self.elapsed(), out_of_time
        result.skipped = self.guard.skipped
        return result
