"""The model's top guesses per character (`charrnn-fast guesses`), as in the
blog's figure: each character of a text on a colour for the probability the
model gave it, with the model's five most likely next characters beneath it
(and on hover).

The text is read in one forward pass, after a newline when the vocabulary has
one (texts begin after a newline), so every character, the first included, has
a prediction. At byte level a character's probability is the product of its
bytes' probabilities, and the guesses are those for its first byte.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.sample import load_model
from charrnn_fast.charrnn.sizes import check_forward
from charrnn_fast.charrnn.visualize import drop_unknown
from charrnn_fast.charrnn.vocab import Vocab, describe_symbol


@dataclass
class Guess:
    char: str
    prob: float  # the model's probability for this character
    top: list[tuple[str, float]]  # its best guesses for this position, best first


@dataclass
class GuessesResult:
    guesses: list[Guess]
    bits_per_char: float
    top1: float  # fraction of characters that were the model's first guess
    outputs: list[Path] = field(default_factory=list)


def _shown(vocab: Vocab, token: int) -> str:
    """A guess as shown on the page: the character, or a readable escape."""
    sym = vocab.symbols[token]
    if vocab.level == "byte" and sym >= 0x80:
        return f"0x{sym:02x}"
    ch = chr(sym)
    return {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}.get(ch) or (
        ch if ch.isprintable() else describe_symbol(sym, vocab.level)
    )


@torch.no_grad()
def top_guesses(
    checkpoint: str, text: str, top: int = 5, skip_unknown: bool = False
) -> GuessesResult:
    """Probabilities and top-`top` guesses for every character of `text`."""
    if top < 1:
        raise UserError(f"--top must be >= 1 (got {top})")
    model, vocab, _ = load_model(checkpoint)
    if skip_unknown:
        text = drop_unknown(text, vocab)
    if not text:
        raise UserError("the text is empty")
    ids = vocab.encode(text)  # VocabError names the unknown characters
    check_forward(model, 1, len(ids), f"a text of {len(ids):,} tokens", "use a shorter text")
    context = vocab.encode("\n", skip_unknown=True)[:1]
    x = torch.tensor([context + ids[:-1] if context else ids[:-1]], dtype=torch.long)
    if x.shape[1] == 0:
        raise UserError("the text needs at least two characters (no newline in the vocabulary)")
    logits, _ = model(x)
    logp = torch.log_softmax(logits[:, 0].float(), dim=-1)  # [T, V]: row t predicts ids[t+k]
    if not context:  # no newline to start from: the first character has no prediction
        logp = torch.cat([torch.full((1, len(vocab)), -math.log(len(vocab))), logp])
    k = min(top, len(vocab))
    vals, idx = logp.exp().topk(k, dim=-1)
    per_token = logp.gather(1, torch.tensor(ids)[:, None])[:, 0]
    guesses, pos, hits = [], 0, 0
    for ch in text:
        hits += int(idx[pos, 0]) == ids[pos]
        n = len(ch.encode("utf-8")) if vocab.level == "byte" else 1
        lp = float(per_token[pos : pos + n].sum())
        top_k = [(_shown(vocab, int(i)), float(p)) for i, p in zip(idx[pos], vals[pos])]
        guesses.append(Guess(ch, math.exp(lp), top_k))
        pos += n
    bits = -sum(math.log2(max(g.prob, 1e-300)) for g in guesses) / len(guesses)
    return GuessesResult(guesses, bits, hits / len(guesses))


def _shown_char(ch: str) -> str:
    return {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}.get(ch, ch)


def prob_color(p: float) -> str:
    """hsl from red (p = 0) through yellow to green (p = 1)."""
    return f"hsl({round(120 * max(0.0, min(1.0, p)))},75%,78%)"


def render_guesses(result: GuessesResult, note: str = "") -> str:
    style = (
        "body{font-family:sans-serif;margin:2em}"
        ".t{font-family:monospace;line-height:1.1}"
        ".c{display:inline-block;vertical-align:top;text-align:center;min-width:1.1em;"
        "margin:0 0 .6em 0}.c>b{display:block;font-weight:normal;font-size:120%}"
        ".g{display:block;font-size:70%;color:#333}"
        "#hide:checked~.t .g{display:none}"
    )
    parts = [
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>charrnn-fast: top guesses',
        f"</title><style>{style}</style></head><body>",
        "<h1>The model's top guesses per character</h1>",
        f"<p>{html.escape(note)}</p>" if note else "",
        f"<p>{result.bits_per_char:.3f} bits per character on this text; the character "
        f"was the first guess {100 * result.top1:.1f}% of the time. Each character is "
        "coloured by the probability the model gave it (red 0, yellow 0.5, green 1); "
        "beneath it, the model's guesses for that position, best first (hover for "
        "numbers). \u2423 is a space, \u21b5 a newline.</p>",
        '<input type="checkbox" id="hide"><label for="hide"> hide the guesses</label>',
        '<div class="t">',
    ]
    for g in result.guesses:
        shown = _shown_char(g.char)
        tip = f"{shown!r}: p = {g.prob:.3f}; guesses: " + ", ".join(
            f"{c} {p:.3f}" for c, p in g.top
        )
        cells = "".join(
            f'<span style="background:{prob_color(p)}">{html.escape(c)}</span><br>'
            for c, p in g.top
        )
        parts.append(
            f'<span class="c" title="{html.escape(tip)}"><b style="background:'
            f'{prob_color(g.prob)}">{html.escape(shown)}</b><span class="g">{cells}</span></span>'
            + ("<br>" if g.char == "\n" else "")
        )
    parts.append("</div></body></html>\n")
    return "\n".join(p for p in parts if p)


def guesses(
    checkpoint: str,
    text: str,
    top: int = 5,
    out: str | Path | None = "guesses.html",
    skip_unknown: bool = False,
) -> GuessesResult:
    """Compute the guesses for `text` and write the page."""
    result = top_guesses(checkpoint, text, top, skip_unknown)
    if out is not None:
        note = f"{checkpoint}: {len(result.guesses)} characters, top {top} guesses"
        try:
            Path(out).write_text(render_guesses(result, note), encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {out}: {e.strerror or e}") from e
        result.outputs.append(Path(out))
    return result
