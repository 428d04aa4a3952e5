"""What every conformance check runs on: the backends, the module under test
built from nn.LSTM's constructor arguments, one forward and backward, and the
comparison with stock nn.LSTM.

"stock" is torch.nn.LSTM itself, run through the same checks as the baseline:
a check it fails tests the check, not our module.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

import charrnn_fast
from tests.lstm.chain import assert_close_calibrated

_NO_GPU = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
BACKENDS = [
    "stock",
    "reference",
    "cpu-auto",
    "cpu-ours",
    pytest.param("cuda", marks=pytest.mark.cuda),
    pytest.param("triton", marks=[pytest.mark.triton, _NO_GPU]),
]
# Our module only, and the backends pinned to our kernels (nothing may go to ATen's LSTM).
OURS = BACKENDS[1:]
PINNED = [b for b in OURS if getattr(b, "values", (b,))[0] != "cpu-auto"]

# The `backend=` each name constructs charrnn_fast.LSTM with.
_BACKEND_ARG = {
    "reference": "reference",
    "cpu-auto": None,
    "cpu-ours": "cpu",
    "cuda": "cuda",
    "triton": "triton",
}


def force_backend(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Pins how the library chooses its kernels for backend `name`: "cpu-auto"
    leaves the automatic choice (which may hand a call to ATen's fused LSTM),
    every other name runs our kernels wherever it is asked to. The one place
    that knows the library's knobs for this."""
    monkeypatch.delenv("CHARRNN_FAST_BACKEND", raising=False)
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", "auto" if name == "cpu-auto" else "ours")


def device_of(name: str) -> torch.device:
    return torch.device("cuda" if name in ("cuda", "triton") else "cpu")


def stock(*args, seed: int = 0, **kwargs) -> nn.LSTM:
    """nn.LSTM(*args, **kwargs) initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.LSTM(*args, **kwargs)


def build(name: str, *args, seed: int = 0, **kwargs) -> nn.LSTM:
    """The module under test for backend `name`: configured as nn.LSTM(*args,
    **kwargs), with the weights stock(*args, seed=seed, **kwargs) has, on the
    backend's device."""
    base = stock(*args, seed=seed, **kwargs)
    if name == "stock":
        m = base
        assert type(m) is nn.LSTM
    else:
        m = charrnn_fast.LSTM(*args, backend=_BACKEND_ARG[name], **kwargs)
        m.load_state_dict(base.state_dict())
        assert type(m) is charrnn_fast.LSTM and m.backend == _BACKEND_ARG[name]
    return m.to(device_of(name))


def leaf(t: Tensor, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """A fresh leaf copy of t that requires grad."""
    return t.detach().to(device=device, dtype=dtype, copy=True).requires_grad_()


def run(
    m: nn.Module,
    x: Tensor | PackedSequence,
    hx: tuple[Tensor, Tensor] | None = None,
    backward: bool = True,
    x_leaf: Tensor | None = None,
) -> dict[str, Tensor]:
    """Forward of m on (x, hx) and, with backward, the gradients of a fixed
    random linear loss w.r.t. x (or x_leaf, the padded tensor a PackedSequence
    x was packed from), hx and every parameter. Inputs are used as given
    (leaves, shapes, strides); results are float64 CPU tensors, grads named d<name>."""
    out, (h, c) = m(x, hx)
    res = {"out": out.data if isinstance(out, PackedSequence) else out, "h_n": h, "c_n": c}
    if backward:
        g = torch.Generator().manual_seed(1)
        loss = sum(
            (t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device)).sum()
            for t in res.values()
        )
        loss.backward()
        res["dx"] = (x if x_leaf is None else x_leaf).grad
        if hx is not None:
            res["dh0"], res["dc0"] = hx[0].grad, hx[1].grad
        for n, p in m.named_parameters():
            res["d" + n] = p.grad
    return {k: v.detach().double().cpu() for k, v in res.items()}


def compare(got: dict[str, Tensor], truth: dict[str, Tensor], plain: dict[str, Tensor],
            dtype: torch.dtype, label: str) -> None:  # fmt: skip
    """Each result within the calibrated tolerance of tests/lstm/chain.py:
    2 x |plain - truth| + one rounding, where plain is stock nn.LSTM in `dtype`
    and truth stock in float64 (so in float64 the bound is 1e-10 relative)."""
    assert_close_calibrated(got, plain, truth, dtype, label)


# Packed-sequence cases: id -> (constructor kwargs, lengths, enforce_sorted, with hx).
# Sizes: input 3, hidden 4, 2 layers; lengths out of order exercise the
# sorted_indices / unsorted_indices permutation of the batch and of hx.
PACKED_SIZES = (3, 4, 2)
PACKED = {
    f"{cfg}-{order}-{hx}": (kw, lengths, order == "sorted", hx == "hx")
    for cfg, kw in (
        ("uni", {}),
        ("bi", {"bidirectional": True}),
        ("bi_bf_proj", {"bidirectional": True, "batch_first": True, "proj_size": 2}),
    )
    for order, lengths in (("sorted", [4, 3, 3, 1]), ("unsorted", [2, 4, 1, 3]))
    for hx in ("hx", "nohx")
}


def packed_inputs(case: str, dtype: torch.dtype, device) -> tuple[dict, Tensor, PackedSequence,
                                                                  tuple[Tensor, Tensor] | None]:  # fmt: skip
    """(constructor kwargs, padded leaf x, x packed, hx leaves or None) of PACKED[case]."""
    kw, lengths, enforce_sorted, with_hx = PACKED[case]
    I, H, L = PACKED_SIZES
    T, B, D = max(lengths), len(lengths), 2 if kw.get("bidirectional") else 1
    g = torch.Generator().manual_seed(5)
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    x = leaf(torch.randn(shape, generator=g, dtype=torch.float64), dtype, device)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=kw.get("batch_first", False), enforce_sorted=enforce_sorted
    )
    hx = None
    if with_hx:
        P = kw.get("proj_size", 0) or H
        hx = tuple(
            leaf(torch.randn(L * D, B, n, generator=g, dtype=torch.float64), dtype, device)
            for n in (P, H)
        )
    return kw, x, packed, hx
