"""Single cells firing over text, as in Karpathy's "The Unreasonable Effectiveness of
Recurrent Neural Networks" (2015).

The trained CharRNN reads the text one character at a time (torch.no_grad, eval
mode); after each character we record one layer's state for every cell:

* LSTM: tanh(c_t), the squashed cell state, as in the blog;
* GRU / vanilla RNN: the hidden state h_t (they have no separate cell state; h_t
  already lies in [-1, 1]).

The value shown for a character is the state just after the model has read it.
With a byte-level vocabulary a character may span several tokens; it gets the
state after its last byte. Without explicit cells, the K "most interesting" cells
are those whose value varies most over the text (highest population variance,
ties to the lower index): a cell stuck near one value says nothing about the text.

The layers run over the whole text at once (see record_all_states), so texts
of tens of thousands of characters take seconds; the HTML page and the PNG are
meant for a few thousand.
"""

from __future__ import annotations

import html
import os
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.model import CharRNN
from charrnn_fast.charrnn.sample import load_model
from charrnn_fast.charrnn.sizes import check_forward
from charrnn_fast.charrnn.vocab import Vocab, text_to_symbols

PNG_MAX_CHARS = 3000  # matplotlib draws one text object per character; beyond this it crawls
PNG_COLUMNS = 100
CELL_STYLE = (
    "body{font-family:sans-serif;margin:2em}"
    ".cell{font-family:monospace;white-space:pre-wrap;line-height:1.5;"
    "border:1px solid #ccc;padding:.5em}.cell span.d{color:#fff}"
)
COLORS = ("#ff0000", "#ffffff", "#0000ff")  # -1, 0, +1 (HTML and PNG share this scale)


@dataclass
class VisualizeResult:
    text: str  # the characters shown (unknown ones dropped with skip_unknown)
    values: Tensor  # [len(text), rnn_size] float32, one row per character
    layer: int  # 0-based
    num_layers: int
    model_type: str
    quantity: str  # "tanh(c_t)" or "h_t"
    cells: list[int]
    variances: list[float]  # of each chosen cell, over the text
    outputs: list[Path] = field(default_factory=list)


def quantity_of(model_type: str) -> str:
    """What is recorded for this model type (see the module docstring)."""
    return "tanh(c_t)" if model_type == "lstm" else "h_t"


def looks_like_path(arg: str) -> bool:
    """True for one word that reads as a file name: a folder part, or a name.ext
    ending ('notes.txt', 'src/x.c', '~/a'); a sentence or a multi-line text is not."""
    if not arg or any(ch.isspace() for ch in arg):
        return False
    return "/" in arg or os.sep in arg or arg.startswith("~") or bool(_FILE_NAME.match(arg))


_FILE_NAME = re.compile(r"^[\w.-]+\.[A-Za-z][A-Za-z0-9]{0,5}$")


def read_text(arg: str, literal: bool = False) -> str:
    """What `--text ARG` means: the contents of file ARG when it exists; an error
    when ARG looks like a file name but there is no such file (a typo would
    otherwise be drawn as the text); else ARG itself. With `literal`, always ARG."""
    if literal:
        return _utf8_text(arg)
    path = Path(arg).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{arg}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        except OSError as e:
            raise UserError(f"cannot read {arg}: {e.strerror or e}") from e
    if path.is_dir():
        raise UserError(f"--text {arg} is a folder, not a text file")
    if looks_like_path(arg):
        raise UserError(
            f"--text {arg}: no such file (to use these characters as the text itself, "
            "add --literal)"
        )
    return _utf8_text(arg)


def _utf8_text(arg: str) -> str:
    """`arg` (from argv, decoded with surrogateescape) when it is UTF-8 text."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"--text is not valid UTF-8 (at character {e.start})") from None
    return arg


@torch.no_grad()
def record_all_states(model: CharRNN, vocab: Vocab, text: str) -> Tensor:
    """[num_layers, len(text), rnn_size] values of every layer after each character
    (the module docstring says which state); raises VocabError for characters
    outside `vocab`.

    Each layer runs over the whole text at once (torch.nn's module of the same
    type, loaded with that layer's weights) instead of one model call per
    character; an LSTM's cell state, which nn.LSTM does not return per step, is
    rebuilt from the gates: with h_{t-1} known for every t, all gates come from
    one matrix product, and c_t = f_t * c_{t-1} + i_t * g_t is a cheap scan.
    """
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    hint = "use a shorter text"
    check_forward(model, 1, len(ids), f"a text of {len(ids):,} tokens", hint, all_layers=True)
    w = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if model.embed is not None:
        x = w["embed.weight"][ids]
    else:
        x = torch.nn.functional.one_hot(ids, model.vocab_size).float()
    H, layers = model.rnn_size, []
    for layer in range(model.num_layers):
        p = {n: w[f"rnn.{n}_l{layer}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[model.model_type]
        rnn = cls(x.shape[1], H)
        rnn.load_state_dict({f"{n}_l0": v for n, v in p.items()})
        h = rnn(x[:, None])[0][:, 0]  # [T, H]
        if model.model_type == "lstm":
            h_prev = torch.cat([torch.zeros(1, H), h[:-1]])
            gates = x @ p["weight_ih"].T + p["bias_ih"] + h_prev @ p["weight_hh"].T + p["bias_hh"]
            i, f, g, _ = gates.double().chunk(4, dim=1)
            i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
            c, cs = torch.zeros(H, dtype=torch.float64), []
            for t in range(len(h)):
                c = f[t] * c + i[t] * g[t]
                cs.append(c)
            layers.append(torch.tanh(torch.stack(cs)).float())
        else:
            layers.append(h)
        x = h  # the next layer reads this one's outputs (no dropout in eval)
    values = torch.stack(layers)  # [L, tokens, H]
    if vocab.level == "byte":
        # One row per character: the state after the character's last byte.
        nbytes = torch.tensor([len(ch.encode("utf-8")) for ch in text])
        values = values[:, torch.cumsum(nbytes, 0) - 1]
    return values


def record_states(model: CharRNN, vocab: Vocab, text: str, layer: int) -> Tensor:
    """[len(text), rnn_size] values of `layer` after each character."""
    return record_all_states(model, vocab, text)[layer]


def drop_unknown(text: str, vocab: Vocab) -> str:
    """`text` without the characters `vocab` cannot encode (at byte level, a
    character goes when any of its bytes is unknown)."""
    bad = set(vocab.unknown(text))
    if not bad:
        return text
    return "".join(ch for ch in text if not bad & set(text_to_symbols(ch, vocab.level).tolist()))


def cell_variance(values: Tensor) -> Tensor:
    """Population variance over time of each cell (column) of `values`."""
    return values.var(dim=0, unbiased=False) if len(values) > 1 else torch.zeros(values.shape[1])


def top_cells(values: Tensor, k: int) -> list[int]:
    """The k cells (columns of `values`) of highest variance over time, highest first."""
    order = torch.argsort(cell_variance(values), descending=True, stable=True)
    return order[: min(k, values.shape[1])].tolist()


def cell_color(v: float) -> str:
    """#rrggbb on a red (-1) - white (0) - blue (+1) scale."""
    v = max(-1.0, min(1.0, float(v)))
    fade = round(255 * (1 - abs(v)))
    r, g, b = (255, fade, fade) if v < 0 else (fade, fade, 255)
    return f"#{r:02x}{g:02x}{b:02x}"


def render_html(text: str, values: Tensor, cells: list[int], note: str = "") -> str:
    """A page with one block per cell, each character on its activation's colour."""
    parts = [
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>charrnn-fast cells</title>',
        f"<style>{CELL_STYLE}</style></head><body>",
        "<h1>Cells firing over text</h1>",
        f"<p>{html.escape(note)}</p>" if note else "",
        "<p>Colour: red = -1, white = 0, blue = +1 (hover a character for its value);"
        " \u21b5 marks a newline.</p>",
    ]
    var = cell_variance(values)
    for c in cells:
        parts.append(f'<h2 id="cell-{c}">cell {c} (variance {float(var[c]):.4f})</h2>')
        parts.append(cell_block(text, values[:, c], f"{c}"))
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def cell_block(text: str, values: Tensor, name: str) -> str:
    """One cell's block: `text` with each character on its value's colour.
    values: [len(text)] float, in [-1, 1]."""
    spans = []
    for ch, v in zip(text, values.tolist()):
        shown = "\u21b5\n" if ch == "\n" else html.escape(ch)
        dark = ' class="d"' if abs(v) > 0.6 else ""  # white letters on strong colours
        spans.append(
            f'<span{dark} style="background:{cell_color(v)}" title="{v:+.3f}">{shown}</span>'
        )
    return f'<div class="cell" data-cell="{html.escape(name)}">{"".join(spans)}</div>'


def _grid(text: str) -> list[list[int]]:
    """Character indices laid out in rows: a new row after each newline and every
    PNG_COLUMNS characters."""
    rows: list[list[int]] = [[]]
    for i, ch in enumerate(text):
        if len(rows[-1]) == PNG_COLUMNS:
            rows.append([])
        rows[-1].append(i)
        if ch == "\n":
            rows.append([])
    return rows if rows[-1] else rows[:-1]


def render_png(
    text: str,
    values: Tensor,
    cells: list[int],
    path: str | Path,
    note: str = "",
    titles: list[str] | None = None,
) -> None:
    """The same picture as the HTML page, drawn with matplotlib (Agg) into a PNG;
    only the first PNG_MAX_CHARS characters. values: [len(text), cells]; `titles`
    name the panels (default "cell C")."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap
    except ImportError as e:
        raise UserError("--png needs matplotlib (pip install matplotlib)") from e
    text, values = text[:PNG_MAX_CHARS], values[:PNG_MAX_CHARS]
    rows = _grid(text)
    ncols = max(len(r) for r in rows)
    # Grey outside the text (short lines), so it does not read as a value of 0.
    cmap = LinearSegmentedColormap.from_list("rwb", COLORS).with_extremes(bad="#f4f4f4")
    # Sizes in inches: 7-point letters need about 0.12 x 0.2 per character.
    width = max(ncols * 0.12, 6.0) + 0.4
    fig, axes = plt.subplots(
        len(cells),
        1,
        figsize=(width, len(cells) * (len(rows) * 0.2 + 0.5) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for k, (ax, c) in enumerate(zip(axes[:, 0], cells)):
        grid = torch.full((len(rows), ncols), float("nan"))
        for y, row in enumerate(rows):
            grid[y, : len(row)] = values[row, c]
        ax.imshow(grid.numpy(), cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        for y, row in enumerate(rows):
            for x, i in enumerate(row):
                ch = "\u21b5" if text[i] == "\n" else text[i]
                if not ch.isspace():
                    color = "white" if abs(float(values[i, c])) > 0.6 else "black"
                    ax.text(x, y, ch, ha="center", va="center", fontsize=7, color=color)
        ax.set_title(titles[k] if titles else f"cell {c}", fontsize=9, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    if note:
        fig.suptitle(textwrap.fill(note, int(width * 14)), fontsize=8)
    with warnings.catch_warnings():
        # One warning per glyph the font lacks (CJK, emoji); they show as boxes.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, dpi=100)
    plt.close(fig)


def visualize(
    checkpoint: str,
    text: str,
    layer: int = -1,
    cells: list[int] | None = None,
    top: int = 5,
    out: str | Path | None = "cells.html",
    png: str | Path | None = None,
    skip_unknown: bool = False,
) -> VisualizeResult:
    """Record one layer's states over `text` and write the HTML page (and PNG).

    Args:
        checkpoint: checkpoint file or folder.
        text: the text itself (read files with `read_text`).
        layer: 0-based; negative counts from the last layer (-1 = last).
        cells: cell indices to show; None = the `top` highest-variance cells.
        out, png: where to write the HTML page / PNG picture (None = do not).
        skip_unknown: drop characters outside the vocabulary instead of failing.
    """
    model, vocab, ckpt = load_model(checkpoint)
    n, size = model.num_layers, model.rnn_size
    if not -n <= layer < n:
        raise UserError(f"--layer must be in 0..{n - 1} (or -{n}..-1), got {layer}")
    layer %= n
    if skip_unknown:
        text = drop_unknown(text, vocab)
    if not text:
        raise UserError("the text is empty")
    if cells is not None:
        wrong = [c for c in cells if not 0 <= c < size]
        if wrong or not cells:
            raise UserError(f"--cell takes indices in 0..{size - 1}, got {wrong or 'none'}")
    elif top < 1:
        raise UserError(f"--top must be >= 1 (got {top})")
    values = record_states(model, vocab, text, layer)
    chosen = list(cells) if cells is not None else top_cells(values, top)
    var = cell_variance(values)
    quantity = quantity_of(model.model_type)
    source = "cell state" if model.model_type == "lstm" else "hidden state (no cell state)"
    note = (
        f"{ckpt['path']} (step {ckpt['step']}): {model.model_type.upper()}, layer {layer} "
        f"of 0..{n - 1}, {size} cells; showing {quantity}, the {source}, after each character"
    )
    result = VisualizeResult(
        text, values, layer, n, model.model_type, quantity, chosen, [float(var[c]) for c in chosen]
    )
    try:
        if out is not None:
            Path(out).write_text(render_html(text, values, chosen, note), encoding="utf-8")
            result.outputs.append(Path(out))
        if png is not None:
            render_png(text, values, chosen, png, note)
            result.outputs.append(Path(png))
    except OSError as e:  # a missing folder or no permission: the user's to fix
        raise UserError(f"cannot write {e.filename or out}: {e.strerror or e}") from e
    return result
