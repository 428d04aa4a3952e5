"""`charrnn-fast visualize`: the page shows every character once per cell, the values
are tanh(c_t) as torch.nn computes it, --top picks the most varying cells, and bad
input ends in one clear line with exit status 2."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from charrnn_fast.charrnn.cli import main
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.sample import load_model
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig
from charrnn_fast.charrnn.visualize import cell_color, record_states, visualize

# Newlines, HTML specials and multi-byte characters: all must survive the page.
TEXT = 'the cat <sat> & the dog\'s "mat".\nnaïve café, 日本\n' * 30
SHOWN = 'a cat & "dog" <sat>.\nnaïve 日本!\n'  # '!' is in the text's vocabulary below
SPAN = re.compile(
    r'<span[^>]*style="background:(#[0-9a-f]{6})" title="([+-]\d\.\d{3})">(.*?)</span>', re.S
)


def trained(root: Path, model: str = "lstm", num_layers: int = 2, level: str = "char") -> Path:
    """A checkpoint folder after a seconds-long run (quality does not matter here)."""
    (root / "in.txt").write_text(TEXT + "!", encoding="utf-8")
    out, _ = prepare([str(root / "in.txt")], root / "data", level=level, progress=False)
    cfg = TrainConfig(
        data_dir=str(out),
        checkpoint_dir=str(root / "cv"),
        model=model,
        rnn_size=16,
        embedding_dim=0,  # reference_tanh_c feeds one-hot vectors
        num_layers=num_layers,
        batch_size=4,
        seq_length=16,
        max_iters=6,
        learning_rate=1e-2,
        eval_val_every=6,
        print_every=6,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    return root / "cv"


@pytest.fixture(scope="module")
def lstm_ckpt(tmp_path_factory) -> Path:
    return trained(tmp_path_factory.mktemp("vis_lstm"))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["visualize", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def blocks(page: str) -> dict[int, list[tuple[str, float, str]]]:
    """cell -> [(colour, value, character)] parsed back from the page."""
    found = {}
    for cell, body in re.findall(r'<div class="cell" data-cell="(\d+)">(.*?)</div>', page, re.S):
        spans = SPAN.findall(body)
        chars = [html.unescape(s).replace("\u21b5\n", "\n") for _, _, s in spans]
        found[int(cell)] = [(c, float(v), ch) for (c, v, _), ch in zip(spans, chars)]
    return found


def colour_value(colour: str) -> float:
    """Invert the page's red-white-blue scale: #ff.... is <= 0, #....ff is >= 0."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    assert (r == 255 and g == b) or (b == 255 and r == g), colour
    return -(1 - g / 255) if r == 255 else 1 - r / 255


def reference_tanh_c(ckpt: Path, text: str, layer: int) -> torch.Tensor:
    """tanh(c_t) of `layer` for every character, by torch.nn alone: an nn.LSTM with the
    checkpoint's weights for the layers below, then nn.LSTMCell stepped by hand."""
    model, vocab, _ = load_model(str(ckpt))
    weights = model.rnn.state_dict()  # nn.LSTM's parameter names and layout
    x = nn.functional.one_hot(torch.tensor(vocab.encode(text)), model.vocab_size).float()
    with torch.no_grad():
        if layer > 0:
            below = nn.LSTM(model.vocab_size, model.rnn_size, layer)
            below.load_state_dict({k: v for k, v in weights.items() if int(k[-1]) < layer})
            x = below(x.unsqueeze(1))[0].squeeze(1)
        cell = nn.LSTMCell(x.shape[1], model.rnn_size)
        cell.load_state_dict(
            {k.rsplit("_l", 1)[0]: v for k, v in weights.items() if k.endswith(f"_l{layer}")}
        )
        h = c = torch.zeros(1, model.rnn_size)
        cs = []
        for t in range(len(x)):
            h, c = cell(x[t : t + 1], (h, c))
            cs.append(c[0])
    return torch.tanh(torch.stack(cs))


def test_page_has_every_character_and_one_colour_per_character_per_cell(
    lstm_ckpt, tmp_path, capsys
):
    (tmp_path / "t.txt").write_text(SHOWN, encoding="utf-8")
    out = tmp_path / "cells.html"
    argv = [
        str(lstm_ckpt),
        "--text",
        str(tmp_path / "t.txt"),
        "--cell",
        "3",
        "0",
        "--out",
        str(out),
    ]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "tanh(c_t)" in stdout and "cell state" in stdout and str(out) in stdout
    found = blocks(out.read_text(encoding="utf-8"))
    assert list(found) == [3, 0]
    expected = reference_tanh_c(lstm_ckpt, SHOWN, layer=1)  # default layer: the last
    for cell, spans in found.items():
        assert len(spans) == len(SHOWN)
        assert "".join(ch for _, _, ch in spans) == SHOWN
        values = torch.tensor([v for _, v, _ in spans])
        torch.testing.assert_close(values, expected[:, cell], atol=6e-4, rtol=0)  # 3 decimals
        # The colour encodes the value too (to the 1/255 step of the scale).
        torch.testing.assert_close(
            torch.tensor([colour_value(col) for col, _, _ in spans]),
            expected[:, cell],
            atol=1 / 255,
            rtol=0,
        )


@pytest.mark.parametrize("layer", [0, 1])
def test_values_equal_tanh_c_of_torch_nn_lstm(lstm_ckpt, layer):
    model, vocab, _ = load_model(str(lstm_ckpt))
    got = record_states(model, vocab, SHOWN, layer)
    assert got.shape == (len(SHOWN), 16)
    torch.testing.assert_close(got, reference_tanh_c(lstm_ckpt, SHOWN, layer), atol=1e-5, rtol=1e-4)
    assert got.std(0).min() > 0  # every cell moves: the comparison is not vacuous


def test_top_picks_the_highest_variance_cells(lstm_ckpt, tmp_path, capsys):
    out = tmp_path / "top.html"
    code, stdout, err = run(
        [str(lstm_ckpt), "--text", SHOWN, "--layer", "0", "--top", "4", "--out", str(out)], capsys
    )
    assert code == 0, err
    var = reference_tanh_c(lstm_ckpt, SHOWN, layer=0).var(0, unbiased=False)
    best = torch.argsort(var, descending=True)[:4].tolist()
    assert list(blocks(out.read_text(encoding="utf-8"))) == best
    assert [int(c) for c in re.findall(r"^cell (\d+):", stdout, re.M)] == best
    # --top beyond the layer's size shows every cell once.
    assert (
        visualize(str(lstm_ckpt), SHOWN, top=100, out=None).cells
        == torch.argsort(
            record_states(*load_model(str(lstm_ckpt))[:2], SHOWN, -1).var(0, unbiased=False),
            descending=True,
        ).tolist()
    )


def test_unknown_characters_exit_2_listing_them(lstm_ckpt, tmp_path, capsys):
    out = tmp_path / "x.html"
    code, _, err = run([str(lstm_ckpt), "--text", "the cat Zoo€", "--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("charrnn-fast: error:")]
    assert len(lines) == 1 and "'Z'" in lines[0] and "U+20AC" in lines[0], err
    assert not out.exists()
    code, _, err = run(
        [str(lstm_ckpt), "--text", "the cat Zoo€", "--skip-unknown", "--out", str(out)], capsys
    )
    assert code == 0, err
    assert all(
        len(spans) == len("the cat oo")
        for spans in blocks(out.read_text(encoding="utf-8")).values()
    )


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--layer", "2"], "--layer must be in 0..1"),
        (["--cell", "16"], "--cell takes indices in 0..15"),
        (["--top", "0"], "argument --top: expected an integer in [1,"),
        (["--out", "/nonexistent/dir/x.html"], "no such folder: /nonexistent/dir"),
    ],
)
def test_bad_options_exit_2(lstm_ckpt, capsys, argv, needle):
    code, _, err = run([str(lstm_ckpt), "--text", "the cat", *argv], capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_png_is_written(lstm_ckpt, tmp_path, capsys):
    png, out = tmp_path / "cells.png", tmp_path / "cells.html"
    code, stdout, err = run(
        [str(lstm_ckpt), "--text", SHOWN, "--top", "2", "--out", str(out), "--png", str(png)],
        capsys,
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.is_file()
    assert str(png) in stdout


def test_gru_shows_the_hidden_state(tmp_path, capsys):
    ckpt = trained(tmp_path, model="gru", num_layers=1)
    code, stdout, err = run(
        [str(ckpt), "--text", SHOWN, "--cell", "5", "--out", str(tmp_path / "g.html")], capsys
    )
    assert code == 0, err
    assert "h_t" in stdout and "hidden state" in stdout
    model, vocab, _ = load_model(str(ckpt))
    x = nn.functional.one_hot(torch.tensor(vocab.encode(SHOWN)), model.vocab_size).float()
    with torch.no_grad():
        h = model.rnn(x.unsqueeze(1))[0].squeeze(1)  # nn.GRU: the outputs are h_t
    torch.testing.assert_close(record_states(model, vocab, SHOWN, 0), h, atol=1e-5, rtol=1e-4)


def test_byte_level_gives_one_value_per_character(tmp_path):
    ckpt = trained(tmp_path, num_layers=1, level="byte")
    r = visualize(str(ckpt), SHOWN, cells=[0], out=tmp_path / "b.html")
    assert r.values.shape == (len(SHOWN), 16) and len(SHOWN) < len(SHOWN.encode("utf-8"))
    # Each character gets the state after its last byte, i.e. after the prefix up to it.
    model, vocab, _ = load_model(str(ckpt))
    with torch.no_grad():
        for k in range(len(SHOWN)):
            _, (_, c) = model(torch.tensor([vocab.encode(SHOWN[: k + 1])]))
            torch.testing.assert_close(r.values[k], torch.tanh(c[0, 0]), atol=1e-5, rtol=1e-4)


def test_colour_scale():
    assert [cell_color(v) for v in (-2, -1, 0, 0.5, 1, 3)] == [
        "#ff0000",
        "#ff0000",
        "#ffffff",
        "#8080ff",
        "#0000ff",
        "#0000ff",
    ]


@pytest.mark.parametrize("arg", ["pasage.txt", "texts/passage", "~/notes.md", "./x"])
def test_a_missing_file_name_is_an_error_not_the_text(lstm_ckpt, tmp_path, capsys, arg):
    code, _, err = run([str(lstm_ckpt), "--text", arg, "--out", str(tmp_path / "c.html")], capsys)
    assert code == 2 and "no such file" in err and "--literal" in err
    assert not (tmp_path / "c.html").exists()


def test_text_that_is_not_a_file_name_is_drawn(lstm_ckpt, tmp_path, capsys):
    out = tmp_path / "c.html"
    for argv in (["--text", "the cat sat."], ["--text", "cat.dog", "--literal"]):
        code, stdout, err = run([str(lstm_ckpt), *argv, "--out", str(out)], capsys)
        assert code == 0, err
        shown = "".join(ch for _, _, ch in next(iter(blocks(out.read_text("utf-8")).values())))
        assert shown == argv[1]
    (tmp_path / "d").mkdir()
    code, _, err = run([str(lstm_ckpt), "--text", str(tmp_path / "d"), "--out", str(out)], capsys)
    assert code == 2 and "is a folder" in err
