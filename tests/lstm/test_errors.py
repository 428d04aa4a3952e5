"""Bad input: each case is a clear error that names the argument and what was expected."""

import pytest
import torch
from torch import nn

import charrnn_fast

OPS_BACKENDS = ["cpu", "reference"]


@pytest.fixture
def m():
    return charrnn_fast.LSTM(4, 6, 2)


def test_input_of_wrong_rank(m):
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        m(torch.randn(2, 3, 4, 1))


def test_input_of_wrong_feature_size(m):
    with pytest.raises(
        RuntimeError, match="input.size\\(-1\\) must be equal to input_size. Expected 4, got 5"
    ):
        m(torch.randn(3, 2, 5))


def _bad_calls():
    """(id, call args) that nn.LSTM(4, 6, 2) refuses."""
    x = torch.randn(7, 3, 4)
    h, c = torch.zeros(2, 3, 6), torch.zeros(2, 3, 6)
    return [
        ("h0 size", (x, (torch.zeros(2, 3, 5), c))),
        ("c0 size", (x, (h, torch.zeros(2, 3, 5)))),
        ("h0 layers", (x, (torch.zeros(3, 3, 6), c))),
        ("c0 batch", (x, (h, torch.zeros(2, 2, 6)))),
        ("input dtype", (x.double(),)),
        ("input dtype with hx", (x.double(), (h, c))),
        ("hx rank", (x, (torch.zeros(2, 6), torch.zeros(2, 6)))),
        ("unbatched hx rank", (x[:, 0], (h, c))),
        ("input rank", (torch.randn(2, 3, 4, 1),)),
        ("input size", (torch.randn(3, 2, 5),)),
        ("empty sequence", (torch.randn(0, 2, 4),)),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0])
def test_errors_read_as_nn_lstms(case):
    """Same exception type as nn.LSTM, and its message first (ours may add after it)."""
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, 2)
    ours = charrnn_fast.from_torch(ref)
    with pytest.raises(Exception) as theirs:
        ref(*case[1])
    with pytest.raises(type(theirs.value)) as got:
        ours(*case[1])
    assert str(got.value).startswith(str(theirs.value)), (str(got.value), str(theirs.value))


def test_state_dtype_differs_from_weights(m):
    with pytest.raises(ValueError, match="hx\\[1\\] \\(c_0\\)"):
        m(torch.randn(3, 2, 4), (torch.zeros(2, 2, 6), torch.zeros(2, 2, 6, dtype=torch.float64)))


def test_tensors_on_different_devices(m):
    meta = torch.randn(3, 2, 4, device="meta")
    with pytest.raises(
        RuntimeError, match="Input and parameter tensors are not at the same device"
    ):
        m(meta)


def test_wrong_number_of_weights():
    with pytest.raises(ValueError, match="weights must hold 4 tensors"):
        charrnn_fast.lstm(torch.randn(3, 2, 4), None, [torch.randn(8, 4)])


def _op_args(T=3, B=2, H=4, dtype=torch.float32):
    return [
        torch.randn(T, B, 4 * H, dtype=dtype),
        torch.randn(4 * H, H, dtype=dtype),
        torch.randn(B, H, dtype=dtype),
        torch.randn(B, H, dtype=dtype),
    ]


@pytest.mark.parametrize(
    "index,bad,message",
    [
        (
            0,
            torch.randn(3, 2, 4, 4).transpose(2, 3).reshape(3, 2, 16)[:, :, :15],
            "gx must have shape",
        ),
        (0, torch.randn(2, 3, 16).transpose(0, 1), "gx must be contiguous"),
        (1, torch.randn(16, 5), "w_hh must have shape \\[4H, H\\]"),
        (1, torch.randn(16, 4, dtype=torch.float64), "w_hh must have dtype Float"),
        (2, torch.randn(3, 4), "h0 must have shape \\[2, 4\\]"),
        (3, torch.randn(4, 2).t(), "c0 must be contiguous"),
        (
            0,
            torch.randn(3, 2, 16).to(torch.int32),
            "gx must be float32, float64, bfloat16 or float16",
        ),
    ],
)
def test_op_rejects_bad_arguments(index, bad, message):
    args = _op_args()
    args[index] = bad
    with pytest.raises(RuntimeError, match=message):
        torch.ops.charrnn_fast.lstm_fwd(*args, True)


def test_op_backward_without_saved_gates_is_an_error():
    gx, w, h0, c0 = _op_args()
    y, c_all, gates = torch.ops.charrnn_fast.lstm_fwd(gx, w, h0, c0, False)
    assert gates.numel() == 0
    with pytest.raises(
        RuntimeError, match="gates is empty: lstm_fwd was called with training=False"
    ):
        torch.ops.charrnn_fast.lstm_bwd(torch.ones_like(y), h0, c0, w, y, c_all, gates, h0)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated upstream
def test_torchscript_is_refused_with_what_to_use_instead():
    m = charrnn_fast.LSTM(3, 4)
    for target in (m, nn.Sequential(m)):  # also as a submodule of what is scripted
        with pytest.raises(RuntimeError, match="cannot be scripted.*torch.compile"):
            torch.jit.script(target)
    with pytest.raises(RuntimeError, match="cannot be traced.*eagerly.*torch.compile"):
        torch.jit.trace(m, torch.randn(2, 1, 3))
