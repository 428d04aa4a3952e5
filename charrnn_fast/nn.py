"""charrnn_fast.LSTM: a drop-in torch.nn.LSTM whose recurrence runs in fused kernels.

A subclass of nn.LSTM, so the constructor, its validation, parameter names,
shapes, order, init and state_dict are nn.LSTM's own. Only forward differs.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from charrnn_fast import _compile, backends
from charrnn_fast.functional import lstm

_warned: set[str] = set()
_NO_JIT = (
    "charrnn_fast.LSTM cannot be {}: TorchScript does not see its fused kernels. "
    "Run it eagerly, or compile it with torch.compile (full graph, no break)."
)

# torch.compile needs torch._dynamo.config.allow_rnn for any nn.LSTM subclass;
# set when Dynamo loads, not here (importing it costs a second): see _compile.py.
_compile.install()


class LSTM(nn.LSTM):
    """nn.LSTM with one extra keyword, `backend` ("cuda", "triton", "cpu",
    "reference", or None to choose by device, dtype and shape).

    proj_size > 0 and PackedSequence input are served by nn.LSTM itself, with
    a one-time warning that names the reason.
    """

    def __init__(self, *args, backend: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if backend is not None:
            backends.get(backend)  # an unknown name fails here, not at the first call
        self.backend = backend

    def __prepare_scriptable__(self) -> LSTM:
        # torch.jit.script calls this on every submodule before compiling; left
        # alone, it would compile nn.LSTM's forward instead of ours, silently.
        raise RuntimeError(_NO_JIT.format("scripted (torch.jit.script)"))

    def forward(
        self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        if torch.jit.is_tracing():
            raise RuntimeError(_NO_JIT.format("traced (torch.jit.trace)"))
        reason = None
        if isinstance(input, PackedSequence):
            reason = "PackedSequence input"
        elif self.proj_size > 0:
            reason = "proj_size > 0"
        if reason is not None:
            if reason not in _warned:
                _warned.add(reason)
                warnings.warn(
                    f"charrnn_fast.LSTM: {reason} is not supported by the fused kernels; "
                    "falling back to torch.nn.LSTM",
                    stacklevel=4,  # the caller of module(x): past _wrapped_call_impl, _call_impl
                )
            return super().forward(input, hx)
        # Read the parameters by name each call, so weights replaced or moved
        # after construction (load_state_dict, .to, weight norm) are seen.
        weights = [getattr(self, name) for name in self._flat_weights_names]
        return lstm(
            input,
            hx,
            weights,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend is None else f"{s}, backend={self.backend!r}"


def from_torch(module: nn.LSTM, backend: str | None = None) -> LSTM:
    """A charrnn_fast.LSTM with the same configuration and weights as `module`."""
    new = LSTM(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
        proj_size=module.proj_size,
        backend=backend,
    )
    p = next(module.parameters())
    new = new.to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        new.load_state_dict(module.state_dict())
    return new
