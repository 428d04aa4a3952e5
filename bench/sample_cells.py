"""Sampling speed per cell type: the compiled decode loops
(charrnn_fast.generate.lstm_lm_generate / rnn_lm_generate) against the plain
PyTorch loop a user would write around nn.LSTM / nn.GRU / nn.RNN (one step
per token), same weights, one-hot input of V = 65 symbols, batch 1.

    python bench/sample_cells.py --threads 2

`bench/run.py --modes sample` times the LSTM presets with the full harness
(medians, checks, bandwidth); this covers the other cells of char-rnn's
comparison. Each figure is the best of 3 runs after a warm-up (noisy on a
shared machine: rerun). Greedy tokens of both paths are checked to agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.config import VOCAB
from charrnn_fast import generate

MODELS = (
    ("lstm", 2, 128),
    ("gru", 2, 128),
    ("rnn_tanh", 2, 128),
    ("lstm", 3, 512),
    ("gru", 3, 512),
)


def build(mode: str, L: int, H: int) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU}.get(mode, nn.RNN)(VOCAB, H, L)
    return rnn.eval(), nn.Linear(H, VOCAB).eval()


@torch.no_grad()
def decoders(mode: str, rnn: nn.Module, head: nn.Linear) -> tuple[Callable, Callable]:
    """(compiled, plain loop): each (n tokens, argmax) -> ids [1, n]."""
    L, H = rnn.num_layers, rnn.hidden_size
    start, zeros = torch.zeros(1, dtype=torch.long), torch.zeros(L, 1, H)
    weights = [getattr(rnn, n) for n in rnn._flat_weights_names]
    rows = torch.arange(1)

    def compiled(n: int, argmax: bool) -> Tensor:
        args = (None, weights, head.weight, head.bias, n)
        if mode == "lstm":
            return generate.lstm_lm_generate(start, zeros, zeros, *args, argmax=argmax)[0]
        return generate.rnn_lm_generate(mode, start, zeros, *args, argmax=argmax)[0]

    def loop(n: int, argmax: bool) -> Tensor:
        tok, state, out = start, (zeros, zeros) if mode == "lstm" else zeros, []
        for p in range(n):
            y, state = rnn(F.one_hot(tok, VOCAB).float().unsqueeze(0), state)
            tok = generate.pick(head(y[0]), argmax=argmax, rows=rows, pos=p)
            out.append(tok)
        return torch.stack(out, dim=1)

    return compiled, loop


def chars_per_second(decode: Callable, n: int) -> float:
    decode(8, False)  # warm-up: packing, caches
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        decode(n, False)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chars", type=int, default=2000, help="per compiled 2x128 run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch 1, {args.threads} thread(s), one-hot V = {VOCAB}, temperature 1")
    print("| model | compiled loop chars/s | plain PyTorch loop chars/s | speed-up |")
    print("|---|---:|---:|---:|")
    for mode, L, H in MODELS:
        fast, slow = decoders(mode, *build(mode, L, H))
        if not torch.equal(fast(16, True), slow(16, True)):
            raise SystemExit(f"{mode} {L}x{H}: greedy tokens of the two loops differ")
        n = args.chars if H <= 256 else args.chars // 8
        a, b = chars_per_second(fast, n), chars_per_second(slow, max(n // 10, 20))
        print(f"| {mode} {L}x{H} | {a:,.0f} | {b:,.0f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
