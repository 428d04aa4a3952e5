"""Sampling text from a trained CharRNN, streamed as it is generated.

The prime text is fed in one forward pass; then each step samples the next
token (charrnn_fast.generate.pick: softmax(logits / temperature), optionally
restricted to the top k and/or the top-p nucleus, or the argmax) and feeds it
back with the carried hidden state. On the CPU in float32 that loop runs in
compiled code (charrnn_fast.generate.lstm_lm_generate for an LSTM,
rnn_lm_generate for a GRU or vanilla RNN: all layers, the head and the
sampler, many tokens per call); other devices and dtypes run the same loop in
PyTorch (CUDA: replayed as CUDA graphs), with the same sampler. The random stream of row b at position p depends only on
(seed, b, p), so the same seed gives the same text on the same path however
the work is split. Several samples (`num_samples`) are rows of one batch.
Checkpoints load on the CPU first (map_location), so a model trained on a GPU
samples anywhere.

Run it as `charrnn-fast sample CHECKPOINT [options]`.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Iterator

import torch

from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.errors import CheckpointError, UserError
from charrnn_fast.charrnn.model import CharRNN, build_model
from charrnn_fast.charrnn.sizes import check_forward
from charrnn_fast.charrnn.vocab import Vocab
from charrnn_fast.generate import SamplerOptions, lstm_lm_generate, pick, rnn_lm_generate


def load_model(
    path: str, device: str | torch.device = "cpu", backend: str | None = None
) -> tuple[CharRNN, Vocab, dict]:
    """(model in eval mode on `device`, vocabulary, checkpoint) from a checkpoint file
    or folder."""
    ckpt = load_checkpoint(path, map_location="cpu")
    vocab = Vocab.from_dict(ckpt["vocab"])
    size = ckpt["model_config"].get("vocab_size")
    if size is not None and size != len(vocab):  # no size: build_model says what is missing
        raise CheckpointError(
            f"{ckpt['path']}: its vocabulary has {len(vocab)} symbols but its model was built "
            f"for {size} (the file was altered, or pieced together from two checkpoints)"
        )
    try:
        model = build_model(ckpt["model_config"], backend=backend)
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"{ckpt['path']}: model does not load ({type(e).__name__}: {e})"
        ) from e
    return model.to(device).eval(), vocab, ckpt


def sampler_options(
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    argmax: bool = False,
    seed: int | None = None,
) -> SamplerOptions:
    """The sampler's options from the command line's settings, checked in its
    words (UserError). seed None draws one (nondeterministic)."""
    if not argmax and not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(
            f"temperature must be > 0 and finite (got {temperature}); use --argmax for greedy"
        )
    if top_k < 0:
        raise UserError(f"top_k must be >= 0 (got {top_k})")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] (got {top_p}); 1 keeps every token")
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1  # leaves the global RNG alone
    return SamplerOptions(temperature, top_k, top_p, argmax, seed)


# Tokens per compiled call: start small so the first characters show at once,
# then grow while a call takes under this long (throughput, fewer repacks).
_FIRST_CHUNK, _MAX_CHUNK, _CHUNK_SECONDS = 8, 4096, 0.05


def _decode_chunks(
    model: CharRNN, start: torch.Tensor, state, length: int, sampler: SamplerOptions
) -> Iterator[torch.Tensor]:
    """Token ids [B, n] chunk by chunk from the decode loop; `start` [B] not yet fed."""
    rnn = model.rnn
    weights = [getattr(rnn, n) for n in rnn._flat_weights_names]
    embed = model.embed.weight if model.embed is not None else None
    head = (model.head.weight, model.head.bias)
    mode = rnn.mode.lower()  # nn.RNNBase's: lstm, gru, rnn_tanh, rnn_relu
    done, chunk, tokens = 0, _FIRST_CHUNK, start
    while done < length:
        n = min(chunk, length - done)
        t0 = time.perf_counter()
        if mode == "lstm":
            ids, *state = lstm_lm_generate(tokens, *state, embed, weights, *head, n, sampler, done)
        else:
            ids, h = rnn_lm_generate(
                mode, tokens, state[0], embed, weights, *head, n, sampler, done
            )
            state = (h,)
        if time.perf_counter() - t0 < _CHUNK_SECONDS:
            chunk = min(2 * chunk, _MAX_CHUNK)
        tokens, done = ids[:, -1], done + n
        yield ids


def _step_chunks(
    model: CharRNN, start: torch.Tensor, state, length: int, sampler: SamplerOptions
) -> Iterator[torch.Tensor]:
    """The same as _decode_chunks, one model call per token (bidirectional or
    projected layers, which the decode loops do not cover)."""
    rows = torch.arange(start.shape[0], device=start.device)
    tokens = start
    for p in range(length):
        logits, state = model(tokens.view(-1, 1), state)
        tokens = pick(logits[-1], sampler, rows=rows, pos=p)
        yield tokens.view(-1, 1)


def _uses_decode_loop(model: CharRNN) -> bool:
    rnn = model.rnn
    return not rnn.bidirectional and getattr(rnn, "proj_size", 0) == 0


@torch.no_grad()
def generate_rows(
    model: CharRNN,
    vocab: Vocab,
    length: int,
    sampler: SamplerOptions,
    prime: str = "",
    skip_unknown: bool = False,
    rows: int = 1,
) -> Iterator[list[str]]:
    """`rows` samples at once, as lists of text pieces (one per row) in order:
    first the prime (the same for every row), then the generated text as it is
    made. Arguments as for `generate`."""
    if length < 0:
        raise UserError(f"length must be >= 0 (got {length})")
    if rows < 1:
        raise UserError(f"num_samples must be >= 1 (got {rows})")
    device = next(model.parameters()).device
    ids = vocab.encode(prime, skip_unknown=skip_unknown) if prime else []
    if prime and not ids:
        warnings.warn(
            "no character of the prime is in the vocabulary (skip_unknown dropped them all): "
            "sampling without a prime",
            stacklevel=3,  # past no_grad's generator wrapper: the caller of next()
        )
    decoders = [vocab.incremental_decoder() for _ in range(rows)]
    if ids:
        pieces = ["".join(d(i) for i in ids) for d in decoders]
        if pieces[0]:
            yield pieces
    else:
        # Nothing to condition on: start from a newline when the vocabulary has one
        # (texts begin after one), else from a token drawn with the seed.
        nl = vocab.encode("\n", skip_unknown=True)
        ids = nl or [
            int(
                torch.randint(
                    len(vocab), (1,), generator=torch.Generator().manual_seed(sampler.seed)
                )
            )
        ]
    x = torch.tensor([ids[:-1]] * rows, dtype=torch.long, device=device)  # [rows, T-1]
    state = model(x)[1] if x.shape[1] > 0 else model.init_state(rows, device)
    start = torch.full((rows,), ids[-1], dtype=torch.long, device=device)
    chunks = _decode_chunks if _uses_decode_loop(model) else _step_chunks
    for chunk in chunks(model, start, state, length, sampler):
        got = chunk.tolist()
        pieces = ["".join(d(i) for i in r) for d, r in zip(decoders, got)]
        if any(pieces):
            yield pieces
    tails = [d(None, True) for d in decoders]
    if any(tails):
        yield tails


def generate(
    model: CharRNN,
    vocab: Vocab,
    length: int,
    sampler: SamplerOptions,
    prime: str = "",
    skip_unknown: bool = False,
    echo_prime: bool = True,
) -> Iterator[str]:
    """Yield the text of one sample piece by piece as it is generated.

    Args:
        length: number of tokens to generate after the prime.
        sampler: temperature (> 0, any positive value is safe; lower is more
            conservative; ignored with argmax), top_k (sample among the k most
            likely tokens only, 0 = all), top_p (among the most likely tokens
            whose probabilities add up to top_p, nucleus sampling; 1 = all),
            seed: see `sampler_options`, which checks them in the command
            line's words.
        prime: text to condition on (UTF-8 / Unicode); characters outside the
            vocabulary raise VocabError listing them, unless `skip_unknown`.
    """
    n_prime = len(vocab.encode(prime, skip_unknown=skip_unknown)) if prime else 0
    first = True
    for pieces in generate_rows(model, vocab, length, sampler, prime, skip_unknown):
        if first and n_prime and not echo_prime:
            first = False
            continue
        first = False
        yield pieces[0]


def write_samples(
    path: str,
    sampler: SamplerOptions,
    length: int = 2000,
    prime: str = "",
    num_samples: int = 1,
    device: str = "cpu",
    backend: str | None = None,
    skip_unknown: bool = False,
    out=None,
) -> None:
    """Generate `num_samples` samples from a checkpoint (rows of one batch) and
    write them to `out` (default stdout, as UTF-8 whatever the locale): the
    first as it is generated, the others after it, each after a separator line."""
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1 (got {num_samples})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} requested but no CUDA GPU is available")
    model, vocab, _ = load_model(path, device, backend)
    if prime:
        vocab.encode(prime, skip_unknown=skip_unknown)  # fail before printing anything
    hint = "use a smaller --num_samples or a shorter --prime"
    check_forward(model, num_samples, max(len(prime), 1), f"{num_samples:,} samples", hint)
    if out is None:
        out = sys.stdout
    raw = getattr(out, "buffer", None)

    def emit(text: str) -> None:
        if raw is not None:
            out.flush()
            raw.write(text.encode("utf-8"))
            raw.flush()
        else:
            out.write(text)
            out.flush()

    others: list[list[str]] = [[] for _ in range(num_samples - 1)]
    for pieces in generate_rows(model, vocab, length, sampler, prime, skip_unknown, num_samples):
        if pieces[0]:
            emit(pieces[0])
        for kept, piece in zip(others, pieces[1:]):
            kept.append(piece)
    for kept in others:
        emit("\n" + "-" * 40 + "\n" + "".join(kept))
    emit("\n")
