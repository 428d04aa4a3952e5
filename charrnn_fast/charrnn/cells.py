"""Interpretable cells, found rather than hand-picked (`charrnn-fast cells`).

The blog shows LSTM cells that track quotes, the position in a line, bracket
and indentation depth or comments, found by looking. Here every cell of every
layer is scored against named features of the text, and the best cells per
feature are reported with their correlation and drawn as `visualize` does.

A feature is one number per character, describing the text up to and including
that character, the same moment as the state recorded after reading it (see
visualize.py: tanh(c_t) for an LSTM, h_t for GRU / RNN):

* in_quote: 1 between an opening double quote (" or “) and its closing one;
* line_position: characters since the last newline;
* bracket_depth: open ( [ { not yet closed;
* indent_depth: leading whitespace of the current line so far (tab = to the
  next multiple of 8 columns, as in the Linux kernel);
* in_comment: inside a C comment, /* ... */ or // to the end of the line;
* word_start: 1 on the first letter or digit of a word;
* user features, `--feature name=REGEX`: 1 on every character of a match.

The score is Pearson's r between the feature and a cell's values over the text;
the best cells are those of highest |r| (a cell may track a feature negatively).
A feature that is constant over the text (no quotes in it, say) cannot be scored
and is reported as such. Correlation finds cells that follow a feature linearly;
a cell that counts depth in steps that saturate still scores high, one that
fires only at depth 3 scores lower than it deserves.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from charrnn_fast.charrnn.data import load_prepared, split_bounds
from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.sample import load_model
from charrnn_fast.charrnn.visualize import (
    CELL_STYLE,
    cell_block,
    drop_unknown,
    quantity_of,
    record_all_states,
    render_png,
)
from charrnn_fast.charrnn.vocab import Vocab

OPEN_BRACKETS, CLOSE_BRACKETS = "([{", ")]}"


def in_quote(text: str) -> list[float]:
    inside, out = False, []
    for ch in text:
        if ch == '"':
            inside = not inside
        elif ch == "\u201c":
            inside = True
        elif ch == "\u201d":
            inside = False
        out.append(float(inside))
    return out


def line_position(text: str) -> list[float]:
    pos, out = 0, []
    for ch in text:
        pos = 0 if ch == "\n" else pos + 1
        out.append(float(pos))
    return out


def bracket_depth(text: str) -> list[float]:
    depth, out = 0, []
    for ch in text:
        if ch in OPEN_BRACKETS:
            depth += 1
        elif ch in CLOSE_BRACKETS:
            depth = max(depth - 1, 0)
        out.append(float(depth))
    return out


def indent_depth(text: str) -> list[float]:
    col, leading, out = 0, True, []
    for ch in text:
        if ch == "\n":
            col, leading = 0, True
        elif leading and ch == " ":
            col += 1
        elif leading and ch == "\t":
            col = (col // 8 + 1) * 8
        else:
            leading = False
        out.append(float(col))
    return out


def in_comment(text: str) -> list[float]:
    return regex_feature(re.compile(r"/\*.*?(\*/|\Z)|//[^\n]*", re.S))(text)


def word_start(text: str) -> list[float]:
    return [
        float(ch.isalnum() and (i == 0 or not text[i - 1].isalnum())) for i, ch in enumerate(text)
    ]


def regex_feature(pattern: re.Pattern) -> Callable[[str], list[float]]:
    """A feature that is 1 on every character of a match of `pattern`."""

    def feature(text: str) -> list[float]:
        out = [0.0] * len(text)
        for m in pattern.finditer(text):
            out[m.start() : m.end()] = [1.0] * (m.end() - m.start())
        return out

    return feature


BUILTIN: dict[str, Callable[[str], list[float]]] = {
    "in_quote": in_quote,
    "line_position": line_position,
    "bracket_depth": bracket_depth,
    "indent_depth": indent_depth,
    "in_comment": in_comment,
    "word_start": word_start,
}


def parse_feature(spec: str) -> tuple[str, Callable[[str], list[float]]]:
    """`name=REGEX` -> (name, feature); a clear error for a bad spec or regex."""
    name, sep, pattern = spec.partition("=")
    if not sep or not name.strip() or not pattern:
        raise UserError(f"--feature {spec!r}: expected NAME=REGEX, e.g. 'digit=[0-9]'")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise UserError(f"--feature {name}: the regular expression does not compile ({e})") from e
    return name.strip(), regex_feature(compiled)


def correlations(values: Tensor, feature: Tensor) -> Tensor:
    """Pearson r of each cell with the feature. values: [L, N, H]; feature: [N].
    Returns [L, H]; 0 where a cell is constant."""
    v = values.double() - values.double().mean(dim=1, keepdim=True)
    f = feature.double() - feature.double().mean()
    cov = torch.einsum("lnh,n->lh", v, f)
    denom = v.pow(2).sum(dim=1).sqrt() * f.pow(2).sum().sqrt()
    return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov)).float()


@dataclass
class Match:
    feature: str
    layer: int
    cell: int
    r: float


@dataclass
class CellsResult:
    text: str
    values: Tensor  # [num_layers, len(text), rnn_size]
    model_type: str
    matches: dict[str, list[Match]]  # feature -> best cells, best first
    constant: list[str] = field(default_factory=list)  # features not scorable here
    outputs: list[Path] = field(default_factory=list)


def find_cells(
    values: Tensor, text: str, features: dict[str, Callable[[str], list[float]]], top: int = 3
) -> tuple[dict[str, list[Match]], list[str]]:
    """Best `top` cells per feature by |r|; and the features constant over `text`.
    values: [L, len(text), H]."""
    matches, constant = {}, []
    for name, fn in features.items():
        f = torch.tensor(fn(text), dtype=torch.float64)
        if len(f) < 2 or bool((f == f[0]).all()):
            constant.append(name)
            continue
        r = correlations(values, f)  # [L, H]
        order = torch.argsort(r.abs().flatten(), descending=True, stable=True)[:top]
        H = r.shape[1]
        matches[name] = [Match(name, int(k) // H, int(k) % H, float(r.flatten()[k])) for k in order]
    return matches, constant


def split_text(ckpt: dict, vocab: Vocab, length: int, split: str = "val") -> str:
    """About `length` characters of the run's `split` (else its training split),
    starting after its first newline so that line-based features start right."""
    cfg = ckpt["config"]
    data = load_prepared(cfg["data_dir"])
    if data.vocab != vocab:
        raise UserError(f"{cfg['data_dir']} has another vocabulary than {ckpt['path']}")
    bounds = split_bounds(len(data), cfg["train_frac"], cfg["val_frac"])
    a, b = bounds[split] if bounds[split][1] - bounds[split][0] > 1 else bounds["train"]
    window = data.tokens[a : min(b, a + 4 * length + 4096)]  # bytes: up to 4 per char
    nl = vocab.encode("\n", skip_unknown=True)
    starts = (window == nl[0]).nonzero()[0] if nl else []
    text = vocab.decode(window[starts[0] + 1 :] if len(starts) else window)
    return text[:length].rstrip("\ufffd")  # a character cut at the end (bytes)


def cells(
    checkpoint: str,
    text: str | None,
    extra: list[str] | None = None,
    only: list[str] | None = None,
    top: int = 3,
    out: str | Path | None = "cells_found.html",
    png: str | Path | None = None,
    length: int = 5000,
    skip_unknown: bool = False,
) -> CellsResult:
    """Score every cell against the built-in features (or `only` those) and the
    `extra` NAME=REGEX features over `text` (None: `length` characters of the run's
    validation split); draw the best cell of each feature."""
    if top < 1:
        raise UserError(f"--top must be >= 1 (got {top})")
    user = dict(parse_feature(s) for s in extra or [])
    if only is not None:
        unknown = [n for n in only if n not in BUILTIN]
        if unknown:
            raise UserError(
                f"--only: unknown feature {', '.join(unknown)} (known: {', '.join(BUILTIN)})"
            )
    features = {k: v for k, v in BUILTIN.items() if only is None or k in only} | user
    if not features:
        raise UserError("no features to score")
    model, vocab, ckpt = load_model(checkpoint)
    if text is None:
        text = split_text(ckpt, vocab, length)
    elif skip_unknown:
        text = drop_unknown(text, vocab)
    if len(text) < 2:
        raise UserError("the text needs at least two characters")
    values = record_all_states(model, vocab, text)
    matches, constant = find_cells(values, text, features, top)
    result = CellsResult(text, values, model.model_type, matches, constant)
    note = (
        f"{ckpt['path']} (step {ckpt['step']}): {model.model_type.upper()} "
        f"{model.num_layers} x {model.rnn_size}; {quantity_of(model.model_type)} after "
        f"each of {len(text)} characters; best cell per feature by |Pearson r|"
    )
    best = [ms[0] for ms in matches.values()]
    try:
        if out is not None:
            Path(out).write_text(render_page(text, values, matches, constant, note), "utf-8")
            result.outputs.append(Path(out))
        if png is not None and best:
            cols = torch.stack([values[m.layer, :, m.cell] for m in best], dim=1)
            titles = [f"{m.feature}: layer {m.layer} cell {m.cell}, r = {m.r:+.2f}" for m in best]
            render_png(text, cols, list(range(len(best))), png, note, titles)
            result.outputs.append(Path(png))
    except OSError as e:
        raise UserError(f"cannot write {e.filename or out}: {e.strerror or e}") from e
    return result


def render_page(
    text: str, values: Tensor, matches: dict[str, list[Match]], constant: list[str], note: str
) -> str:
    parts = [
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>charrnn-fast: cells found',
        f"</title><style>{CELL_STYLE}</style></head><body>",
        "<h1>Interpretable cells, found automatically</h1>",
        f"<p>{html.escape(note)}</p>",
        "<p>Colour: red = -1, white = 0, blue = +1 (hover a character for its value);"
        " \u21b5 marks a newline.</p>",
    ]
    if constant:
        parts.append(
            "<p>Constant over this text, not scored: " + html.escape(", ".join(constant)) + "</p>"
        )
    for name, ms in matches.items():
        m = ms[0]
        others = "; ".join(f"layer {o.layer} cell {o.cell} r = {o.r:+.3f}" for o in ms[1:])
        parts.append(
            f'<h2 id="{html.escape(name)}">{html.escape(name)}: layer {m.layer} cell {m.cell}, '
            f"r = {m.r:+.3f}</h2>" + (f"<p>next best: {others}</p>" if others else "")
        )
        parts.append(cell_block(text, values[m.layer, :, m.cell], f"{m.layer}.{m.cell}"))
    parts.append("</body></html>\n")
    return "\n".join(parts)
