"""CharRNN: tokens -> embedding (or one-hot) -> LSTM / GRU / RNN -> linear head.

Karpathy's char-rnn model. The LSTM is `charrnn_fast.LSTM` (any backend); GRU and
vanilla RNN are torch.nn's. The recurrent core runs time-major because that is
the kernels' native layout: callers pass [B, T] token ids, and only the int ids
are transposed, never the float activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.nn import LSTM

MODELS = ("lstm", "gru", "rnn")
State = tuple[Tensor, ...]  # LSTM: (h, c); GRU/RNN: (h,); each [num_layers, B, rnn_size]


class CharRNN(nn.Module):
    """Character-level language model.

    Args:
        vocab_size: V, number of token ids.
        rnn_size: H, hidden units per layer.
        num_layers: stacked recurrent layers.
        model: "lstm", "gru" or "rnn" (tanh).
        dropout: dropout between recurrent layers and before the head (char-rnn's).
        embedding_dim: E > 0 for a learned embedding; 0 feeds one-hot vectors as
            char-rnn does (the first layer's W_ih then acts as the embedding).
        backend: charrnn_fast.LSTM backend (None = automatic); LSTM only.
    """

    def __init__(
        self,
        vocab_size: int,
        rnn_size: int = 128,
        num_layers: int = 2,
        model: str = "lstm",
        dropout: float = 0.0,
        embedding_dim: int = 0,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if model not in MODELS:
            raise UserError(f"unknown model {model!r} (expected one of {', '.join(MODELS)})")
        if vocab_size < 1 or rnn_size < 1 or num_layers < 1 or embedding_dim < 0:
            raise UserError("vocab_size, rnn_size and num_layers must be >= 1, embedding_dim >= 0")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.rnn_size, self.num_layers = vocab_size, rnn_size, num_layers
        self.model_type, self.dropout_p, self.embedding_dim = model, dropout, embedding_dim
        self.embed = nn.Embedding(vocab_size, embedding_dim) if embedding_dim > 0 else None
        in_size = embedding_dim if embedding_dim > 0 else vocab_size
        # nn.LSTM & co. warn when dropout > 0 with one layer: there is nothing between.
        inner_dropout = dropout if num_layers > 1 else 0.0
        if model == "lstm":
            self.rnn: nn.Module = LSTM(
                in_size, rnn_size, num_layers, dropout=inner_dropout, backend=backend
            )
        elif model == "gru":
            self.rnn = nn.GRU(in_size, rnn_size, num_layers, dropout=inner_dropout)
        else:
            self.rnn = nn.RNN(in_size, rnn_size, num_layers, dropout=inner_dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(rnn_size, vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # char-rnn's init: everything uniform in [-0.08, 0.08], LSTM forget-gate
        # bias 1 so that early in training the cell remembers by default.
        for p in self.parameters():
            nn.init.uniform_(p, -0.08, 0.08)
        if self.model_type == "lstm":
            H = self.rnn_size
            with torch.no_grad():
                for layer in range(self.num_layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[H : 2 * H].fill_(1.0)
                    getattr(self.rnn, f"bias_hh_l{layer}")[H : 2 * H].fill_(0.0)

    def config(self) -> dict:
        """Constructor arguments (except backend) to rebuild this model."""
        return {
            "vocab_size": self.vocab_size,
            "rnn_size": self.rnn_size,
            "num_layers": self.num_layers,
            "model": self.model_type,
            "dropout": self.dropout_p,
            "embedding_dim": self.embedding_dim,
        }

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero hidden state for `batch_size` rows, in the parameters' dtype."""
        shape = (self.num_layers, batch_size, self.rnn_size)
        n = 2 if self.model_type == "lstm" else 1
        dtype = self.head.weight.dtype
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))

    def forward(self, idx: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits for every position.

        Args:
            idx: int64 [B, T] token ids.
            state: hidden state from `init_state` or a previous call, or None (zeros).

        Returns:
            logits: [T, B, V], time-major (`logits[t, b]` predicts token t+1 of row b);
            state: the new hidden state, [num_layers, B, H] tensors.
        """
        ids = idx.t()  # [T, B]; transposing the ints is cheaper than the floats
        if self.embed is not None:
            x = self.embed(ids)
        else:
            x = F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        if self.model_type == "lstm":
            y, (h, c) = self.rnn(x, (state[0], state[1]))
            new_state: State = (h, c)
        else:
            y, h = self.rnn(x, state[0])
            new_state = (h,)
        # Under autocast the state comes back in bf16; carry it in the parameters'
        # dtype instead, so it keeps its precision across chunks (and the next call
        # gets the dtype it expects).
        dtype = self.head.weight.dtype
        new_state = tuple(s.to(dtype) for s in new_state)
        return self.head(self.drop(y)), new_state


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy, in fp32 at least. logits: [T, B, V] (time-major, as CharRNN
    returns them); targets: int64 [B, T]."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # softmax over the vocabulary wants fp32 accumulation
    # Transposing the targets (ints) to time-major avoids copying the logits.
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.t().reshape(-1))


def detach_state(state: State) -> State:
    """Cut the graph between chunks (truncated BPTT) but keep the values."""
    return tuple(s.detach() for s in state)


def build_model(config: dict, backend: str | None = None) -> CharRNN:
    """A CharRNN from `CharRNN.config()` output (as stored in checkpoints)."""
    keys = ("vocab_size", "rnn_size", "num_layers", "model", "dropout", "embedding_dim")
    return CharRNN(**{k: config[k] for k in keys}, backend=backend)
