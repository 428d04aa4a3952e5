"""`--dtype auto`: bfloat16 autocast where it trains clearly faster here.

Whether bfloat16 pays depends on the CPU: with AVX512-BF16 or AMX, oneDNN's
bfloat16 LSTM and GEMMs run 2-3x faster than float32; without them bfloat16 is
emulated and slower. So the choice is measured on the model about to be trained:
a few forward+backward passes of one batch in each precision, interleaved,
and bfloat16 wins when it is at least MIN_SPEEDUP faster. The loss per token in
bfloat16 autocast matched float32 within the spread of seeds
(docs/charrnn.md, "Precision"). The measurement leaves the model, its
gradients and every random stream as they were. On a GPU auto means float32
(bfloat16 there is not yet measured; ask for it with --dtype bfloat16).
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from charrnn_fast.charrnn.model import CharRNN, lm_loss

MIN_SPEEDUP = 1.15
ROUNDS = 3


def _autocast(dtype: str, device: torch.device):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def measure(model: CharRNN, vocab_size: int, batch: int, seq: int, device: torch.device) -> float:
    """How many times faster one forward+backward of a [batch, seq] chunk runs in
    bfloat16 autocast than in float32 (median of ROUNDS interleaved rounds)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ids = torch.randint(vocab_size, (batch, seq + 1), device=device)
        x, y = ids[:, :-1], ids[:, 1:]

        def once(dtype: str) -> float:
            t0 = time.perf_counter()
            with _autocast(dtype, device):
                logits, _ = model(x)
            lm_loss(logits, y).backward()
            return time.perf_counter() - t0

        was_training = model.training
        model.train()
        try:
            once("float32"), once("bfloat16")  # warm-up: packing, the dispatch's first calls
            ratios = [once("float32") / once("bfloat16") for _ in range(ROUNDS)]
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    return statistics.median(ratios)


def choose(model: CharRNN, vocab_size: int, batch: int, seq: int, device: torch.device):
    """(dtype, why) for --dtype auto."""
    if device.type != "cpu":
        return "float32", "auto on a GPU is float32 (--dtype bfloat16 asks for bfloat16)"
    speedup = measure(model, vocab_size, batch, seq, device)
    if speedup >= MIN_SPEEDUP:
        return "bfloat16", f"bfloat16 autocast trains {speedup:.2f}x as fast as float32 here"
    return "float32", f"bfloat16 autocast would train {speedup:.2f}x as fast here (not enough)"
