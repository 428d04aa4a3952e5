"""Sizes known before anything is allocated: a CharRNN's parameter count from its
options, the memory a run needs, and the memory the machine has.

A size that cannot be allocated is refused here with what it would need, so a
typo (`--rnn_size 200000`) ends in one line naming the option and the bytes,
not in the allocator's message after minutes of set-up, and a checkpoint whose
stored options do not match its weights is refused before a model is built
from those options.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from charrnn_fast.charrnn.errors import UserError

# Weights per hidden unit and input of each cell's gates: LSTM 4, GRU 3, RNN 1.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Copies of every parameter while training: weights, gradients, optimiser state.
OPTIMIZER_COPIES = {"adam": 2, "adamw": 2, "rmsprop": 1}


def param_count(
    vocab_size: int, rnn_size: int, num_layers: int, model: str, embedding_dim: int
) -> int:
    """Parameters of CharRNN(vocab_size, rnn_size, num_layers, model, ..., embedding_dim)."""
    g, h, v = GATES[model], rnn_size, vocab_size
    first_in = embedding_dim if embedding_dim > 0 else v
    embed = v * embedding_dim if embedding_dim > 0 else 0
    layers = g * h * (first_in + h) + (num_layers - 1) * g * h * (2 * h) + num_layers * 2 * g * h
    return embed + layers + h * v + v


def config_param_count(config: dict) -> int:
    """`param_count` of a stored model_config (CharRNN.config())."""
    keys = ("vocab_size", "rnn_size", "num_layers", "model", "embedding_dim")
    return param_count(*(config[k] for k in keys))


def train_bytes(params: int, model_config: dict, batch_rows: int, seq_length: int,
                optimizer: str = "adam", itemsize: int = 4) -> int:  # fmt: skip
    """A lower bound on the bytes a training step needs: the parameters with their
    gradients and optimiser state, and the activations kept for the backward pass
    (the gates and states of every layer and step, and the logits)."""
    g = GATES[model_config["model"]]
    h, v, layers = model_config["rnn_size"], model_config["vocab_size"], model_config["num_layers"]
    weights = params * (2 + OPTIMIZER_COPIES.get(optimizer, 2))
    per_token = layers * (g + 2) * h + 2 * v
    return itemsize * (weights + batch_rows * seq_length * per_token)


def inference_bytes(
    params: int, model_config: dict, rows: int, steps: int, all_layers: bool = False
) -> int:
    """A lower bound on the bytes of a forward pass over [rows, steps] tokens:
    the weights, one layer's gates and states (every layer's with `all_layers`)
    and the logits."""
    g = GATES[model_config["model"]]
    h, v = model_config["rnn_size"], model_config["vocab_size"]
    layers = model_config["num_layers"] if all_layers else 1
    return 4 * (params + rows * steps * (layers * (g + 2) * h + 2 * v))


def check_forward(
    model: torch.nn.Module, rows: int, steps: int, what: str, hint: str, all_layers: bool = False
) -> None:
    """`check_fits` for a forward pass of CharRNN `model` over [rows, steps] tokens."""
    params = sum(p.numel() for p in model.parameters())
    needed = inference_bytes(params, model.config(), rows, steps, all_layers)
    check_fits(needed, next(model.parameters()).device, what, hint)


def memory_of(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the allocator decide


def gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(needed: int, device: torch.device, what: str, hint: str) -> None:
    """UserError when `needed` bytes exceed the memory of `device`."""
    have = memory_of(device)
    if needed > have:
        raise UserError(
            f"{what} needs at least {gib(needed)} ({needed:,} bytes) but {device} has "
            f"{gib(have)}; {hint}"
        )


def checkpoint_bytes(params: int, optimizer: str = "adam") -> int:
    """Bytes of one training checkpoint: the weights and the optimiser state."""
    return 4 * params * (1 + OPTIMIZER_COPIES.get(optimizer, 2))


def check_disk(needed: int, folder: str | os.PathLike, what: str) -> None:
    """UserError when the file system of `folder` (or of its nearest existing
    parent) has less than `needed` bytes free."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    free = shutil.disk_usage(p).free
    if needed > free:
        raise UserError(
            f"{what} need {gib(needed)} ({needed:,} bytes) of disk but {p} has {gib(free)} free; "
            "use a smaller model or free some space"
        )
