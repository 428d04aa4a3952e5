"""Link 5 of the chain of trust (docs/DESIGN.md): the registered ops pass opcheck, and torch.compile sees no graph break."""

import pytest
import torch
from torch.library import opcheck

import charrnn_fast


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_opcheck_lstm_fwd(dtype, training):
    torch.manual_seed(0)
    T, B, H = 4, 3, 5
    args = (
        torch.randn(T, B, 4 * H, dtype=dtype),
        torch.randn(4 * H, H, dtype=dtype),
        torch.randn(B, H, dtype=dtype),
        torch.randn(B, H, dtype=dtype),
        training,
    )
    opcheck(torch.ops.charrnn_fast.lstm_fwd.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_opcheck_lstm_bwd(dtype):
    torch.manual_seed(0)
    T, B, H = 4, 3, 5
    gx, w = torch.randn(T, B, 4 * H, dtype=dtype), torch.randn(4 * H, H, dtype=dtype)
    h0, c0 = torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)
    y, c_all, gates = torch.ops.charrnn_fast.lstm_fwd(gx, w, h0, c0, True)
    args = (torch.randn_like(y), torch.randn_like(h0), torch.randn_like(c0), w, y, c_all, gates, h0)
    opcheck(torch.ops.charrnn_fast.lstm_bwd.default, args)


class _Tagger(torch.nn.Module):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.rnn = charrnn_fast.LSTM(5, 8, 2, batch_first=True, backend=backend)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_compile_fullgraph_no_graph_break(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Tagger(backend)
    x = torch.randn(2, 6, 5, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want = model(x)
    want.square().sum().backward()
    torch.testing.assert_close(out, want)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.slow
def test_compile_with_inductor():
    torch._dynamo.reset()
    model = _Tagger("cpu")
    x = torch.randn(2, 6, 5)
    out = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(out, model(x))
