"""Providers: who runs the LSTM (cuDNN, nn.LSTM on CPU, or a charrnn_fast backend),
whether it can serve a configuration, and the timed step of each mode.

- `cudnn`: torch.nn.LSTM on CUDA (flattened weights), the GPU baseline.
- `torch-cpu`: torch.nn.LSTM on CPU, the CPU baseline.
- every registered backend (`cuda`, `triton`, `cpu`, `reference`, ...):
  charrnn_fast.LSTM(backend=name) on the --device.

Every provider of a configuration gets the same weights (one seed), so the
correctness check and the timing see the same model.
Legend: L layers, T steps, B batch, I input size (= H), H hidden units, V vocab.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import charrnn_fast
from bench.config import DTYPES, SAME_KERNELS, VOCAB, Shape
from charrnn_fast import backends

BASELINE = {"cuda": "cudnn", "cpu": "torch-cpu"}  # device type -> baseline provider
TORCH_PROVIDERS = {"cudnn": "cuda", "torch-cpu": "cpu"}  # provider -> its fixed device
# The reference backend is a Python loop over steps: it is timed on small shapes only.
REFERENCE_MAX_HIDDEN = 256
REFERENCE_MAX_LAYER_STEPS = 200


def known() -> list[str]:
    return [*TORCH_PROVIDERS, *backends.names()]


def device_of(provider: str, device: str) -> torch.device:
    """Where `provider` runs when the run targets `device` ("cpu" or "cuda")."""
    return torch.device(TORCH_PROVIDERS.get(provider, device))


def baseline_of(device_type: str) -> str:
    return BASELINE[device_type]


def default_providers(device: str) -> tuple[list[str], list[str]]:
    """The baseline of `device` plus every backend usable there, and notes on the others."""
    chosen, notes = [BASELINE[device]], []
    for name in backends.names():
        gx = torch.empty((1, 1, 32), device=device)
        reason = backends.get(name).why_not(gx, torch.empty((32, 8), device=device))
        if reason is None:
            chosen.append(name)
        else:
            notes.append(f"provider {name!r} left out on {device}: {reason}")
    return chosen, notes


def skip_reason(
    provider: str, shape: Shape, dtype: str, device: str, reference_any_size: bool = False
) -> str | None:
    """Why `provider` cannot (or is not to) serve this configuration; None when it can."""
    dev = device_of(provider, device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if provider in TORCH_PROVIDERS:
        return None
    if provider not in backends.names():
        return f"unknown provider (expected one of {', '.join(known())})"
    H, dt = shape.hidden, DTYPES[dtype]
    if provider == "reference" and not reference_any_size:
        steps = shape.layers * shape.seq
        if H > REFERENCE_MAX_HIDDEN or steps > REFERENCE_MAX_LAYER_STEPS:
            return (
                f"reference is timed on small shapes only (hidden <= {REFERENCE_MAX_HIDDEN} "
                f"and layers*T <= {REFERENCE_MAX_LAYER_STEPS}); --reference-any-size lifts this"
            )
    # torch.empty touches no memory, so probing a large shape costs nothing.
    gx = torch.empty((shape.seq, shape.batch, 4 * H), device=dev, dtype=dt)
    w_hh = torch.empty((4 * H, H), device=dev, dtype=dt)
    return backends.get(provider).why_not(gx, w_hh)


def seeded_weights(shape: Shape, seed: int) -> dict[str, Tensor]:
    """nn.LSTM's default init (U(-1/sqrt(H), 1/sqrt(H))) from `seed`, fp32 on CPU."""
    g = torch.Generator().manual_seed(seed)
    ref = nn.LSTM(shape.input_size, shape.hidden, shape.layers)
    bound = shape.hidden**-0.5
    return {
        k: torch.empty(v.shape).uniform_(-bound, bound, generator=g)
        for k, v in ref.state_dict().items()
    }


def new_lstm(
    impl: str, shape: Shape, dtype: torch.dtype, device: torch.device, weights: dict[str, Tensor]
) -> nn.LSTM:
    """An LSTM module with `weights`, cast to dtype on device.

    impl: "torch" for torch.nn.LSTM, else a charrnn_fast backend name.
    """
    if impl == "torch":
        m: nn.LSTM = nn.LSTM(shape.input_size, shape.hidden, shape.layers)
    else:
        m = charrnn_fast.LSTM(shape.input_size, shape.hidden, shape.layers, backend=impl)
    m.load_state_dict(weights)
    m = m.to(device=device, dtype=dtype)
    if impl == "torch":
        m.flatten_parameters()  # cuDNN wants one contiguous weight buffer
    return m


def impl_of(provider: str) -> str:
    return "torch" if provider in TORCH_PROVIDERS else provider


class InlineCharModel(nn.Module):
    """The char model that `train` mode times: embedding(V, E) -> LSTM -> linear(H, V).

    Deliberately its own small class, not the application's CharRNN: bench/
    depends on the library only (docs/DESIGN.md, "Layers"), so a change in the
    char-rnn app never moves the LSTM benchmarks."""

    def __init__(self, vocab: int, rnn: nn.LSTM) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, rnn.input_size)
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, vocab)

    def forward(self, idx: Tensor, state: tuple[Tensor, Tensor]):
        """idx[B,T] int64, state (h, c) each [L,B,H] -> logits[T,B,V], state."""
        y, state = self.rnn(self.embed(idx.t()), state)
        return self.head(y), state


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy in fp32 of logits[T,B,V] (time-major) against targets[B,T].

    Only the model's forward (idx[B,T], state) -> (logits[T,B,V], state) is relied
    on, the most stable part of CharRNN's API.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.t().reshape(-1))


def char_model(rnn: nn.LSTM, vocab: int = VOCAB) -> nn.Module:
    """The char model of `train` mode around `rnn` (embedding size = rnn.input_size)."""
    return InlineCharModel(vocab, rnn)


class _OpRecorder(TorchDispatchMode):
    """Records the names of the aten ops a block dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def cudnn_note(provider: str, lstm: nn.LSTM, x: Tensor) -> str:
    """For `cudnn` rows: a note when nn.LSTM on x[t,B,I] does not reach cuDNN
    (aten._cudnn_rnn) but its native CUDA path, which the row then times."""
    if provider != "cudnn":
        return ""
    with torch.no_grad(), _OpRecorder() as rec:
        lstm(x)
    if "aten._cudnn_rnn" in rec.ops:
        return ""
    return f"nn.LSTM did not call cuDNN for {x.dtype} (native CUDA path timed)"


def aten_note(provider: str, lstm: nn.LSTM, x: Tensor, grad: bool) -> str:
    """For charrnn_fast rows: a note when the module hands the call on x[T,B,I] to
    ATen's fused LSTM (backends/dispatch.py; oneDNN's aten.mkldnn_rnn_layer),
    i.e. the row times the baseline's own kernels: its speed-up is 1 within the noise."""
    if impl_of(provider) == "torch" or x.device.type != "cpu":
        return ""
    with torch.set_grad_enabled(grad), _OpRecorder() as rec:
        lstm(x.requires_grad_(grad))
    if not any(op.startswith("aten.") and "rnn" in op for op in rec.ops):
        return ""  # our kernels (or the reference loop's plain ops)
    return f"{SAME_KERNELS}: charrnn_fast.LSTM handed the call to ATen's LSTM"


def _notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def workload(
    provider: str, mode: str, shape: Shape, dtype: str, device: str, sets: int = 3, seed: int = 0
) -> tuple[Callable[[], object], str]:
    """The step to time, cycling over `sets` input sets so caches do not flatter,
    and a note on what it runs.

    fwd: inference under torch.no_grad. fwdbwd: forward, then the gradients of
    the input and every parameter. train: one optimizer step of the char model.
    """
    dev, dt = device_of(provider, device), DTYPES[dtype]
    L, H, B, T = shape.layers, shape.hidden, shape.batch, shape.seq
    lstm = new_lstm(impl_of(provider), shape, dt, dev, seeded_weights(shape, seed))
    g = torch.Generator(device=dev).manual_seed(seed + 1)

    def randn(*size: int, grad: bool = False) -> Tensor:
        return torch.randn(size, device=dev, generator=g).to(dt).requires_grad_(grad)

    probe = torch.zeros((2, B, H), device=dev, dtype=dt)  # for cudnn_note: zeros, not from g
    served = aten_note(provider, lstm, torch.zeros((T, B, H), device=dev, dtype=dt), mode != "fwd")
    if mode == "fwd":
        lstm.eval()
        xs = itertools.cycle([randn(T, B, H) for _ in range(sets)])

        def fwd() -> object:
            with torch.no_grad():
                return lstm(next(xs))[0]

        return fwd, _notes(cudnn_note(provider, lstm, probe), served)
    if mode == "fwdbwd":
        lstm.train()  # cuDNN computes no backward in eval mode
        params = list(lstm.parameters())
        pairs = itertools.cycle([(randn(T, B, H, grad=True), randn(T, B, H)) for _ in range(sets)])

        def fwdbwd() -> object:
            x, dy = next(pairs)
            y, _ = lstm(x)
            return torch.autograd.grad(y, [x, *params], dy)

        return fwdbwd, _notes(cudnn_note(provider, lstm, probe), served)
    if mode != "train":
        raise ValueError(f"unknown mode {mode!r}")
    model = char_model(lstm)
    model = model.to(device=dev, dtype=dt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = (torch.zeros(L, B, H, device=dev, dtype=dt), torch.zeros(L, B, H, device=dev, dtype=dt))
    batches = []
    for _ in range(sets):
        ids = torch.randint(VOCAB, (B, T + 1), device=dev, generator=g)
        batches.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    batch_iter = itertools.cycle(batches)

    def train() -> object:
        idx, targets = next(batch_iter)
        opt.zero_grad(set_to_none=True)
        logits, _ = model(idx, state)
        loss = lm_loss(logits, targets)
        loss.backward()
        opt.step()
        return loss

    return train, _notes(f"char model, V={VOCAB}, Adam", cudnn_note(provider, lstm, probe), served)
