"""`charrnn-fast eval`: a checkpoint's loss on the validation and test splits, and
how many of its sampled lines are new.

The splits are the ones the run was trained with (its stored train_frac and
val_frac over its data folder): training never touches the test split, so this
is the only place it is used. The loss is the mean cross-entropy per token, in
nats, and in bits (nats / ln 2): bits per character for a char-level vocabulary,
per byte for a byte-level one. A split is read as `batch_size` contiguous row
streams whose hidden state is carried from chunk to chunk, as in training; each
row starts from a zero state, and the last (len - 1) mod batch_size tokens are
not scored (the count of scored tokens is reported).

`--novel N` samples N lines and counts those that are not a line of the training
split (and not of the corpus): the blog's "how many of these names are new".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from charrnn_fast.charrnn.data import StreamBatcher, load_prepared, split_bounds
from charrnn_fast.charrnn.errors import CheckpointError, CorpusError, UserError, VocabError
from charrnn_fast.charrnn.model import CharRNN, lm_loss
from charrnn_fast.charrnn.sample import generate, load_model, sampler_options
from charrnn_fast.charrnn.sizes import check_forward
from charrnn_fast.charrnn.vocab import Vocab


@dataclass
class SplitLoss:
    split: str
    tokens: int  # tokens scored
    nats: float  # mean cross-entropy per token

    @property
    def bits(self) -> float:
        return self.nats / math.log(2)


@dataclass
class Novelty:
    lines: list[str]  # the sampled lines
    new_vs_train: int  # not a line of the training split
    new_vs_corpus: int  # not a line anywhere in the corpus

    def fraction(self, n: int) -> float:
        return n / max(len(self.lines), 1)


@torch.no_grad()
def split_loss(
    model: CharRNN, tokens, batch_size: int, seq_length: int, device: torch.device
) -> tuple[float, int]:
    """(mean loss per token, tokens scored) over a 1-D token array `tokens`."""
    seq_length = min(seq_length, len(tokens) - 1)  # a short split: one shorter chunk
    rows = min(batch_size, (len(tokens) - 1) // seq_length)
    hint = "use a smaller --batch_size or --seq_length"
    check_forward(model, rows, seq_length, f"batches of {rows:,} x {seq_length:,}", hint)
    batches = StreamBatcher(tokens, rows, seq_length, split="evaluated")
    total, count, state = 0.0, 0, None
    for x, y in batches:
        logits, state = model(x.to(device), state)
        total += float(lm_loss(logits, y.to(device))) * y.numel()
        count += y.numel()
    return total / count, count


def evaluate_checkpoint(
    checkpoint: str,
    data_dir: str | None = None,
    batch_size: int = 32,
    seq_length: int = 256,
    device: str = "cpu",
) -> tuple[dict, list[SplitLoss]]:
    """(checkpoint, losses of the val and test splits that are not empty)."""
    if batch_size < 1 or seq_length < 1:
        raise UserError("--batch_size and --seq_length must be >= 1")
    model, vocab, ckpt = load_model(checkpoint, device)
    data = _data_of(ckpt, vocab, data_dir)
    cfg = ckpt["config"]
    bounds = split_bounds(len(data), cfg["train_frac"], cfg["val_frac"])
    out = []
    for split in ("val", "test"):
        a, b = bounds[split]
        if b - a < 2:
            continue
        loss, n = split_loss(model, data.tokens[a:b], batch_size, seq_length, torch.device(device))
        if not math.isfinite(loss):
            raise CheckpointError(
                f"{ckpt['path']}: its loss on the {split} split is {loss}: the model's outputs "
                "overflow (a run that diverged); use an earlier checkpoint"
            )
        out.append(SplitLoss(split, n, loss))
    return ckpt, out


def _data_of(ckpt: dict, vocab: Vocab, data_dir: str | None):
    path = data_dir or ckpt["config"]["data_dir"]
    data = load_prepared(path)
    if data.vocab != vocab:
        raise VocabError(
            f"{path} has another vocabulary than {ckpt['path']} ({vocab.difference(data.vocab)})"
        )
    return data


def novelty(
    checkpoint: str,
    n: int,
    temperature: float = 1.0,
    seed: int = 1,
    data_dir: str | None = None,
    device: str = "cpu",
) -> Novelty:
    """Sample `n` non-empty lines; count those absent from the training split's and
    the corpus's lines. Meant for line-per-item corpora (names)."""
    if n < 1:
        raise UserError(f"--novel must be >= 1 (got {n})")
    model, vocab, ckpt = load_model(checkpoint, device)
    if not vocab.encode("\n", skip_unknown=True):
        raise CorpusError("--novel counts lines, but this vocabulary has no newline")
    data = _data_of(ckpt, vocab, data_dir)
    if len(data) > 50_000_000:
        raise CorpusError(f"{data.path} is too large for --novel (made for line lists)")
    cfg = ckpt["config"]
    a, b = split_bounds(len(data), cfg["train_frac"], cfg["val_frac"])["train"]
    train_lines = set(vocab.decode(data.tokens[a:b]).split("\n"))
    corpus_lines = train_lines | set(vocab.decode(data.tokens[b:]).split("\n"))
    lines: list[str] = []
    round_ = 0
    while len(lines) < n:
        # Each round starts after a newline with a fresh state and a new seed; its
        # last line may be cut off by the length limit, so it is dropped.
        text = "".join(
            generate(
                model,
                vocab,
                2000,
                sampler_options(temperature, seed=seed + round_),
                prime="\n",
                echo_prime=False,
            )
        )
        lines += [s for s in text.split("\n")[:-1] if s.strip()][: n - len(lines)]
        round_ += 1
        if round_ > 10 * n:
            raise CorpusError("the model samples no complete lines")
    return Novelty(
        lines,
        sum(s not in train_lines for s in lines),
        sum(s not in corpus_lines for s in lines),
    )
