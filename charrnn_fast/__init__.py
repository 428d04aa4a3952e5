"""charrnn_fast: a drop-in torch.nn.LSTM with fused recurrence kernels, and char-rnn on top."""

from charrnn_fast import _ops, backends  # noqa: F401  (_ops registers the ops)
from charrnn_fast.functional import lstm
from charrnn_fast.nn import LSTM, from_torch

__all__ = ["LSTM", "backends", "from_torch", "lstm"]
__version__ = "0.1.0"
