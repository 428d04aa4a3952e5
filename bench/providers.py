"""Providers: who runs the LSTM (cuDNN, nn.LSTM on CPU, or a charrnn_fast backend),
whether it can serve a configuration, and the timed step of each mode.

- `cudnn`: torch.nn.LSTM on CUDA (flattened weights), the GPU baseline.
- `torch-cpu`: torch.nn.LSTM on CPU, the CPU baseline.
- every registered backend (`cuda`, `triton`, `cpu`, `reference`, ...):
  charrnn_fast.LSTM(backend=name) on the --device.

Every provider of a configuration gets the same weights (one seed), so the
correctness check and the timing see the same model. A shape with a projection
builds every module with proj_size=P; a varlen shape feeds every module the
same PackedSequence (pack_padded_sequence, enforce_sorted=False, lengths from
config.lengths).
Legend: L layers, T steps, B batch, I input size (= H), H hidden units, P
projection size, R = P or H (features of h and of the output), N valid
positions (the sum of the lengths, or T B), V vocab.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import charrnn_fast
from bench.config import DTYPES, SAME_KERNELS, VOCAB, Shape, lengths
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
    dt = DTYPES[dtype]
    if provider == "reference" and not reference_any_size:
        steps = shape.layers * shape.seq
        if shape.hidden > REFERENCE_MAX_HIDDEN or steps > REFERENCE_MAX_LAYER_STEPS:
            return (
                f"reference is timed on small shapes only (hidden <= {REFERENCE_MAX_HIDDEN} "
                f"and layers*T <= {REFERENCE_MAX_LAYER_STEPS}); --reference-any-size lifts this"
            )
    # What charrnn_fast.LSTM asks the backend about (backends.select): the layer
    # input, [T, B, I] or packed [N, I], and w_hh [4H, R]. torch.empty touches no
    # memory, so probing a large shape costs nothing.
    lens = lengths(shape)
    size = (shape.seq, shape.batch) if lens is None else (sum(lens),)
    x = torch.empty((*size, shape.input_size), device=dev, dtype=dt)
    w_hh = torch.empty((4 * shape.hidden, shape.out_size), device=dev, dtype=dt)
    return backends.get(provider).why_not(x, w_hh)


def seeded_weights(shape: Shape, seed: int) -> dict[str, Tensor]:
    """nn.LSTM's default init (U(-1/sqrt(H), 1/sqrt(H))) from `seed`, fp32 on CPU."""
    g = torch.Generator().manual_seed(seed)
    ref = nn.LSTM(shape.input_size, shape.hidden, shape.layers, proj_size=shape.proj)
    bound = shape.hidden**-0.5
    return {
        k: torch.empty(v.shape).uniform_(-bound, bound, generator=g)
        for k, v in ref.state_dict().items()
    }


def new_lstm(
    impl: str, shape: Shape, dtype: torch.dtype, device: torch.device, weights: dict[str, Tensor]
) -> nn.LSTM:
    """An LSTM module (proj_size = shape.proj) with `weights`, cast to dtype on device.

    impl: "torch" for torch.nn.LSTM, else a charrnn_fast backend name.
    """
    args = (shape.input_size, shape.hidden, shape.layers)
    if impl == "torch":
        m: nn.LSTM = nn.LSTM(*args, proj_size=shape.proj)
    else:
        m = charrnn_fast.LSTM(*args, proj_size=shape.proj, backend=impl)
    m.load_state_dict(weights)
    m = m.to(device=device, dtype=dtype)
    if impl == "torch":
        m.flatten_parameters()  # cuDNN wants one contiguous weight buffer
    return m


def impl_of(provider: str) -> str:
    return "torch" if provider in TORCH_PROVIDERS else provider


def as_input(x: Tensor, lens: list[int] | None) -> Tensor | PackedSequence:
    """x[T,B,*] itself, or packed with the row lengths `lens` (any order)."""
    if lens is None:
        return x
    return pack_padded_sequence(x, torch.tensor(lens), enforce_sorted=False)


def leaf(inp: Tensor | PackedSequence, grad: bool) -> tuple[Tensor | PackedSequence, Tensor]:
    """(input, the tensor to differentiate by): for packed input that is its data
    [N, I], whose gradient has no padding in it."""
    if isinstance(inp, PackedSequence):
        data = inp.data.detach().requires_grad_(grad)
        return PackedSequence(data, inp.batch_sizes, inp.sorted_indices, inp.unsorted_indices), data
    x = inp.detach().requires_grad_(grad)
    return x, x


def data_of(out: Tensor | PackedSequence) -> Tensor:
    """The output's values: [T,B,R], or [N,R] for packed output."""
    return out.data if isinstance(out, PackedSequence) else out


class InlineCharModel(nn.Module):
    """The char model that `train` mode times: embedding(V, E) -> LSTM -> linear(R, V).

    Deliberately its own small class, not the application's CharRNN: bench/
    depends on the library only (docs/DESIGN.md, "Layers"), so a change in the
    char-rnn app never moves the LSTM benchmarks."""

    def __init__(self, vocab: int, rnn: nn.LSTM) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, rnn.input_size)
        self.rnn = rnn
        self.head = nn.Linear(rnn.proj_size or rnn.hidden_size, vocab)

    def forward(self, idx: Tensor | PackedSequence, state: tuple[Tensor, Tensor]):
        """idx[B,T] int64, state (h [L,B,R], c [L,B,H]) -> logits[T,B,V], state.
        Packed idx (data [N]) -> logits[N,V] for the valid positions only."""
        if isinstance(idx, PackedSequence):
            emb = PackedSequence(self.embed(idx.data), *idx[1:])
            y, state = self.rnn(emb, state)
            return self.head(y.data), state
        y, state = self.rnn(self.embed(idx.t()), state)
        return self.head(y), state


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy in fp32 of logits[..., V] against targets[...], the same
    positions in the same order (time-major [T,B], or packed [N])."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


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


def cudnn_note(provider: str, lstm: nn.LSTM, x: Tensor | PackedSequence) -> str:
    """For `cudnn` rows: a note when nn.LSTM on x (dense or packed) does not reach cuDNN
    (aten._cudnn_rnn) but its native CUDA path, which the row then times."""
    if provider != "cudnn":
        return ""
    with torch.no_grad(), _OpRecorder() as rec:
        lstm(x)
    if "aten._cudnn_rnn" in rec.ops:
        return ""
    return f"nn.LSTM did not call cuDNN for {data_of(x).dtype} (native CUDA path timed)"


def aten_note(provider: str, lstm: nn.LSTM, x: Tensor | PackedSequence, grad: bool) -> str:
    """For charrnn_fast rows: a note when the module hands the call on x (dense or
    packed) to ATen's fused LSTM (backends/dispatch.py; oneDNN's aten.mkldnn_rnn_layer),
    i.e. the row times the baseline's own kernels: its speed-up is 1 within the noise."""
    if impl_of(provider) == "torch" or data_of(x).device.type != "cpu":
        return ""
    with torch.set_grad_enabled(grad), _OpRecorder() as rec:
        lstm(leaf(x, grad)[0])
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
    the input (the packed data [N, I] for varlen) and every parameter for a
    random dy shaped like the output's values. train: one optimizer step of the
    char model (varlen: the loss over the valid positions only). Packing is
    done once per input set, outside the step.
    """
    dev, dt = device_of(provider, device), DTYPES[dtype]
    L, H, B, T, R = shape.layers, shape.hidden, shape.batch, shape.seq, shape.out_size
    lens = lengths(shape, seed)
    lstm = new_lstm(impl_of(provider), shape, dt, dev, seeded_weights(shape, seed))
    g = torch.Generator(device=dev).manual_seed(seed + 1)

    def randn(*size: int) -> Tensor:
        return torch.randn(size, device=dev, generator=g).to(dt)

    probe = as_input(torch.zeros((T, B, H), device=dev, dtype=dt), lens)  # zeros, not from g
    served = aten_note(provider, lstm, probe, mode != "fwd")
    notes = _notes(cudnn_note(provider, lstm, probe), served)
    if mode == "fwd":
        lstm.eval()
        xs = itertools.cycle([as_input(randn(T, B, H), lens) for _ in range(sets)])

        def fwd() -> object:
            with torch.no_grad():
                return lstm(next(xs))[0]

        return fwd, notes
    if mode == "fwdbwd":
        lstm.train()  # cuDNN computes no backward in eval mode
        params = list(lstm.parameters())
        inputs = []
        for _ in range(sets):
            inp, x = leaf(as_input(randn(T, B, H), lens), True)
            inputs.append((inp, x, randn(*x.shape[:-1], R)))
        triples = itertools.cycle(inputs)

        def fwdbwd() -> object:
            inp, x, dy = next(triples)
            y, _ = lstm(inp)
            return torch.autograd.grad(data_of(y), [x, *params], dy)

        return fwdbwd, notes
    if mode != "train":
        raise ValueError(f"unknown mode {mode!r}")
    model = char_model(lstm)
    model = model.to(device=dev, dtype=dt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = (torch.zeros(L, B, R, device=dev, dtype=dt), torch.zeros(L, B, H, device=dev, dtype=dt))
    batches = []
    for _ in range(sets):
        ids = torch.randint(VOCAB, (B, T + 1), device=dev, generator=g)
        # Targets in the logits' order: time-major [T, B], or packed [N] (valid positions).
        idx, targets = ids[:, :-1].contiguous(), ids[:, 1:].t().contiguous()
        if lens is not None:
            idx, targets = as_input(idx.t(), lens), as_input(targets, lens).data
        batches.append((idx, targets))
    batch_iter = itertools.cycle(batches)

    def train() -> object:
        idx, targets = next(batch_iter)
        opt.zero_grad(set_to_none=True)
        logits, _ = model(idx, state)
        loss = lm_loss(logits, targets)
        loss.backward()
        opt.step()
        return loss

    return train, _notes(f"char model, V={VOCAB}, Adam", notes)
