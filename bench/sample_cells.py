"""Sampling speed of each cell type through `charrnn_fast.charrnn.sample.generate`:
the compiled decode loop against one model call per token (the path that GRU
and vanilla-RNN models took before rnn_lm_generate), same model, batch 1.

    python bench/sample_cells.py --threads 2

Random weights (speed does not depend on training); chars/s over one
generation after a warm-up, so a figure is noisy on a shared machine: rerun.
"""

from __future__ import annotations

import argparse
import time

import torch

from charrnn_fast.charrnn import sample as S
from charrnn_fast.charrnn.model import CharRNN
from charrnn_fast.charrnn.vocab import Vocab

MODELS = (("lstm", 2, 128), ("gru", 2, 128), ("rnn", 2, 128), ("lstm", 3, 512), ("gru", 3, 512))


def chars_per_second(model: CharRNN, vocab: Vocab, decode_loop: bool, n: int) -> float:
    real = S._uses_decode_loop
    S._uses_decode_loop = real if decode_loop else (lambda m: False)
    try:
        "".join(S.generate(model, vocab, length=20, seed=1))  # warm-up: packing, caches
        t0 = time.perf_counter()
        "".join(S.generate(model, vocab, length=n, seed=1))
        return n / (time.perf_counter() - t0)
    finally:
        S._uses_decode_loop = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chars", type=int, default=2000, help="per 2x128 run (3x512: a quarter)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vocab = Vocab.from_text("".join(chr(32 + i) for i in range(65)))
    print(f"batch 1, {args.threads} thread(s), V = {len(vocab)}, one-hot input")
    print("| model | decode loop chars/s | one call per token chars/s | speed-up |")
    print("|---|---:|---:|---:|")
    for kind, layers, hidden in MODELS:
        torch.manual_seed(0)
        model = CharRNN(len(vocab), hidden, layers, model=kind).eval()
        n = args.chars if hidden <= 256 else args.chars // 4
        fast = chars_per_second(model, vocab, True, n)
        slow = chars_per_second(model, vocab, False, max(n // 8, 20))
        print(f"| {kind} {layers}x{hidden} | {fast:,.0f} | {slow:,.0f} | {fast / slow:.1f}x |")


if __name__ == "__main__":
    main()
