"""The `sample` mode: tokens per second of decoding a char model, and start-up times.

One timed step generates T tokens for B streams (the shape's batch and steps)
from a zero state with a fixed seed: the char-rnn model (one-hot input of
V = 65 symbols -> L x H LSTM -> linear head) and multinomial sampling at
temperature 1. `torch-cpu` / `cudnn` run the plain PyTorch loop a user would
write around nn.LSTM (one step per token); the `cpu` backend runs
charrnn_fast.generate.lstm_lm_generate (the whole loop in compiled code); other
backends run the same Python loop around charrnn_fast.LSTM(backend=...).
The check: the first tokens of greedy (argmax) decoding equal the baseline's.
Legend: L layers, H hidden units, V vocabulary, B streams, T tokens per step.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import providers
from bench.config import VOCAB, Shape
from charrnn_fast import generate

CHECK_TOKENS = 16


def _model(provider: str, shape: Shape, device: torch.device, seed: int):
    """(lstm, head) with seeded weights: the LSTM's input is one-hot over VOCAB."""
    g = torch.Generator().manual_seed(seed)
    ref = nn.LSTM(VOCAB, shape.hidden, shape.layers)
    bound = shape.hidden**-0.5
    weights = {k: torch.empty(v.shape).uniform_(-bound, bound, generator=g)
               for k, v in ref.state_dict().items()}  # fmt: skip
    head = nn.Linear(shape.hidden, VOCAB)
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.uniform_(-bound, bound, generator=g)
    impl = providers.impl_of(provider)
    if impl == "torch":
        lstm: nn.LSTM = nn.LSTM(VOCAB, shape.hidden, shape.layers)
    else:
        import charrnn_fast

        lstm = charrnn_fast.LSTM(VOCAB, shape.hidden, shape.layers, backend=impl)
    lstm.load_state_dict(weights)
    return lstm.to(device).eval(), head.to(device).eval()


def decoder(
    provider: str, shape: Shape, device: str, seed: int = 0
) -> Callable[[int, bool], Tensor]:
    """A function (tokens T, argmax) -> ids [B, T] for this provider."""
    dev = providers.device_of(provider, device)
    lstm, head = _model(provider, shape, dev, seed)
    B, L, H = shape.batch, shape.layers, shape.hidden
    start = torch.zeros(B, dtype=torch.long, device=dev)
    zeros = torch.zeros(L, B, H, device=dev)
    weights = [getattr(lstm, n) for n in lstm._flat_weights_names]
    rows = torch.arange(B, device=dev)
    model = (weights, head.weight, head.bias)

    @torch.no_grad()
    def compiled(n: int, argmax: bool) -> Tensor:
        sampler = generate.SamplerOptions(argmax=argmax, seed=seed)
        ids, _, _ = generate.lstm_lm_generate(start, zeros, zeros, None, *model, n, sampler)
        return ids

    @torch.no_grad()
    def loop(n: int, argmax: bool) -> Tensor:
        tok, state, out = start, (zeros, zeros), []
        for p in range(n):
            y, state = lstm(F.one_hot(tok, VOCAB).float().unsqueeze(0), state)
            tok = generate.pick(head(y[0]), argmax=argmax, seed=seed, rows=rows, pos=p)
            out.append(tok)
        return torch.stack(out, dim=1)

    return compiled if provider == "cpu" else loop


def weight_bytes(shape: Shape) -> int:
    """fp32 bytes a token must read: every W_hh, the W_ih of layers >= 1 (layer 0's
    one-hot input reads one column of its W_ih), the head."""
    L, H = shape.layers, shape.hidden
    return 4 * (L * 4 * H * H + (L - 1) * 4 * H * H + VOCAB * H)


_bandwidth: dict[int, float] = {}


def read_bandwidth_gbps(nbytes: int, seconds: float = 0.5) -> float:
    """Best GB/s of summing an fp32 buffer of `nbytes` (warm, at the current thread
    count): how fast this machine streams data of the weights' size."""
    if nbytes not in _bandwidth:
        buf = torch.ones(max(nbytes // 4, 1))
        buf.sum()
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            buf.sum()
            best = max(best, nbytes / (time.perf_counter() - t0) / 1e9)
        _bandwidth[nbytes] = best
    return _bandwidth[nbytes]


def workload(provider: str, shape: Shape, device: str, seed: int = 0) -> tuple[Callable, str]:
    dec = decoder(provider, shape, device, seed)
    how = "compiled decode loop" if provider == "cpu" else "Python loop, one step per token"
    note = f"{how}; one-hot V={VOCAB}, T=1 sampling"
    if providers.device_of(provider, device).type == "cpu":
        nbytes = weight_bytes(shape)
        gbps = read_bandwidth_gbps(nbytes)
        note += (
            f"; weights {nbytes / 2**20:.1f} MiB, read at {gbps:.0f} GB/s (measured) = "
            f"{nbytes / gbps / 1e3:.1f} us per step of {shape.batch} token(s)"
        )
    return (lambda: dec(shape.seq, False)), note


def check(provider: str, baseline: str, shape: Shape, device: str, seed: int = 0) -> str | None:
    """None when greedy decoding agrees with the baseline's, else what differs."""
    n = min(shape.seq, CHECK_TOKENS)
    got = decoder(provider, shape, device, seed)(n, True).cpu()
    want = decoder(baseline, shape, device, seed)(n, True).cpu()
    if torch.equal(got, want):
        return None
    first = int((got != want).flatten().nonzero()[0])
    return f"greedy tokens differ from {baseline}'s at flat index {first} of {got.numel()}"


def startup_times(repeats: int = 3) -> dict[str, float]:
    """Median wall seconds of `import torch`, `import charrnn_fast` and the CLI's --help
    in fresh interpreters."""
    root = str(Path(__file__).resolve().parents[1])
    commands = {
        "import_torch_s": [sys.executable, "-c", "import torch"],
        "import_charrnn_fast_s": [sys.executable, "-c", "import charrnn_fast"],
        "cli_help_s": [sys.executable, "-m", "charrnn_fast.charrnn", "--help"],
    }
    out = {}
    for key, cmd in commands.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=root, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        out[key] = round(statistics.median(times), 3)
    return out
