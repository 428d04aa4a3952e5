"""Sampling text from a trained CharRNN, streamed token by token.

The prime text is fed in one forward pass; then each step samples the next
token from softmax(logits / temperature) (optionally only the top k), or takes the
argmax, and feeds it back with the carried hidden state. Checkpoints load on the
CPU first (map_location), so a model trained on a GPU samples anywhere.

Run it as `charrnn-fast sample CHECKPOINT [options]`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

import torch

from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.errors import CheckpointError, UserError
from charrnn_fast.charrnn.model import CharRNN, build_model
from charrnn_fast.charrnn.vocab import Vocab


def load_model(
    path: str, device: str | torch.device = "cpu", backend: str | None = None
) -> tuple[CharRNN, Vocab, dict]:
    """(model in eval mode on `device`, vocabulary, checkpoint) from a checkpoint file
    or folder."""
    ckpt = load_checkpoint(path, map_location="cpu")
    vocab = Vocab.from_dict(ckpt["vocab"])
    try:
        model = build_model(ckpt["model_config"], backend=backend)
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"{ckpt['path']}: model does not load ({type(e).__name__}: {e})"
        ) from e
    return model.to(device).eval(), vocab, ckpt


def _pick(
    logits: torch.Tensor, temperature: float, top_k: int, argmax: bool, generator: torch.Generator
) -> torch.Tensor:
    """Next token ids [B] from logits [B, V]."""
    if argmax:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    # Sample on the CPU with our own generator: same seed, same text on any device.
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


@torch.no_grad()
def generate(
    model: CharRNN,
    vocab: Vocab,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    argmax: bool = False,
    seed: int | None = None,
    skip_unknown: bool = False,
    echo_prime: bool = True,
) -> Iterator[str]:
    """Yield the text of one sample piece by piece as it is generated.

    Args:
        length: number of tokens to generate after the prime.
        prime: text to condition on (UTF-8 / Unicode); characters outside the
            vocabulary raise VocabError listing them, unless `skip_unknown`.
        temperature: > 0; lower is more conservative. Ignored with `argmax`.
        top_k: sample among the k most likely tokens only (0 = all).
        seed: seed of the sampling generator (None = nondeterministic).
    """
    if not argmax and not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be > 0 (got {temperature}); use --argmax for greedy")
    if length < 0:
        raise UserError(f"length must be >= 0 (got {length})")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0 (got {top_k})")
    device = next(model.parameters()).device
    gen = torch.Generator()
    if seed is None:
        gen.seed()  # nondeterministic, and leaves the global RNG alone
    else:
        gen.manual_seed(seed)
    ids = vocab.encode(prime, skip_unknown=skip_unknown) if prime else []
    decode = vocab.incremental_decoder()
    if echo_prime:
        text = "".join(decode(i) for i in ids)
        if text:
            yield text
    if not ids:
        # Nothing to condition on: start from a newline when the vocabulary has one
        # (texts begin after one), else from a random token.
        nl = vocab.encode("\n", skip_unknown=True)
        ids = nl or [int(torch.randint(len(vocab), (1,), generator=gen))]
    x = torch.tensor([ids], dtype=torch.long, device=device)  # [1, T]
    logits, state = model(x)
    for _ in range(length):
        nxt = _pick(logits[-1], temperature, top_k, argmax, gen)  # logits[-1]: [1, V]
        piece = decode(int(nxt), False)
        if piece:
            yield piece
        logits, state = model(nxt.view(1, 1), state)
    tail = decode(None, True)
    if tail:
        yield tail


def write_samples(
    path: str,
    length: int = 2000,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    argmax: bool = False,
    seed: int | None = None,
    num_samples: int = 1,
    device: str = "cpu",
    backend: str | None = None,
    skip_unknown: bool = False,
    out=None,
) -> None:
    """Generate `num_samples` samples from a checkpoint and stream them to `out`
    (default stdout, as UTF-8 whatever the locale)."""
    if not argmax and not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be > 0 (got {temperature}); use --argmax for greedy")
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1 (got {num_samples})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} requested but no CUDA GPU is available")
    model, vocab, _ = load_model(path, device, backend)
    if prime:
        vocab.encode(prime, skip_unknown=skip_unknown)  # fail before printing anything
    if out is None:
        out = sys.stdout
    raw = getattr(out, "buffer", None)
    for n in range(num_samples):
        s = None if seed is None else seed + n
        if n > 0:
            out.write("\n" + "-" * 40 + "\n")
        pieces = generate(model, vocab, length, prime, temperature, top_k, argmax, s, skip_unknown)
        for piece in pieces:
            if raw is not None:
                out.flush()
                raw.write(piece.encode("utf-8"))
                raw.flush()
            else:
                out.write(piece)
                out.flush()
    out.write("\n")
    out.flush()
