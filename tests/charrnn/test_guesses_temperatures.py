"""`charrnn-fast guesses` (probabilities and top guesses per character) and
`charrnn-fast temperatures` (one prime and seed, several temperatures)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn.cli import main
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.guesses import top_guesses
from charrnn_fast.charrnn.sample import generate, load_model, sampler_options
from charrnn_fast.charrnn.temperatures import sweep
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig

TEXT = "the quick brown fox jumps over the lazy dog.\nhow vexingly quick!\n" * 20


@pytest.fixture(scope="module", params=["char", "byte"])
def ckpt(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"guess_{request.param}")
    (root / "in.txt").write_text(TEXT + "café <&>\n", encoding="utf-8")
    data, _ = prepare([str(root / "in.txt")], root / "data", level=request.param, progress=False)
    cfg = TrainConfig(
        data_dir=str(data),
        checkpoint_dir=str(root / "cv"),
        rnn_size=16,
        num_layers=1,
        batch_size=4,
        seq_length=16,
        max_iters=10,
        max_time=0,
        learning_rate=1e-2,
        eval_val_every=10,
        print_every=10,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    train(cfg)
    return root / "cv"


def test_probabilities_and_guesses_match_the_model(ckpt):
    text = "the café dog"
    r = top_guesses(str(ckpt), text, top=5)
    model, vocab, _ = load_model(str(ckpt))
    ids = vocab.encode("\n" + text)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    probs = torch.softmax(logits[:, 0], dim=-1)  # row t predicts ids[t + 1]
    per_token = probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    pos = 0
    assert [g.char for g in r.guesses] == list(text)
    for g in r.guesses:
        n = len(g.char.encode()) if vocab.level == "byte" else 1
        assert g.prob == pytest.approx(float(per_token[pos : pos + n].prod()), rel=1e-4)
        best = probs[pos].topk(5)
        assert [p for _, p in g.top] == pytest.approx(best.values.tolist(), rel=1e-5)
        pos += n
    bits = -sum(torch.log2(torch.tensor(g.prob)) for g in r.guesses) / len(text)
    assert r.bits_per_char == pytest.approx(float(bits), rel=1e-4)


def test_page_shows_every_character_with_its_guesses(ckpt, tmp_path, capsys):
    out = tmp_path / "g.html"
    code = main(["guesses", str(ckpt), "--text", "a <dog> & fox", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    shown = re.findall(r'<span class="c" title="[^"]*"><b style="[^"]*">(.*?)</b>', page)
    assert "".join(html.unescape(s) for s in shown) == "a\u2423<dog>\u2423&\u2423fox"
    assert page.count('<span class="g">') == len("a <dog> & fox")
    assert re.search(r"bits per character", capsys.readouterr().out)


def test_guesses_errors(ckpt, tmp_path, capsys):
    for argv, needle in [
        (["--text", "dog \u2603"], "not in the vocabulary"),
        (["--text", "no/such/file.txt"], "no such file"),
        (["--top", "0", "--text", "dog"], "argument --top: expected an integer in [1,"),
    ]:
        assert main(["guesses", str(ckpt), *argv, "--out", str(tmp_path / "g.html")]) == 2
        err = capsys.readouterr().err
        assert err.count("charrnn-fast: error:") == 1 and needle in err, err
    argv = ["guesses", str(ckpt), "--text", "dog \u2603", "--skip_unknown"]
    assert main([*argv, "--out", str(tmp_path / "g.html")]) == 0


def test_temperature_sweep_uses_one_seed_per_column(ckpt, tmp_path, capsys):
    samples = sweep(str(ckpt), [0.5, 1.0], length=30, prime="the", seed=7)
    model, vocab, _ = load_model(str(ckpt))
    for t, text in samples:
        assert text == "".join(generate(model, vocab, 30, sampler_options(t, seed=7), "the"))
    out = tmp_path / "t.html"
    argv = ["temperatures", str(ckpt), "-t", "0.3", "1.2", "-n", "20", "--prime", "the"]
    assert main([*argv, "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert re.findall(r"<h2>temperature ([\d.]+)</h2>", page) == ["0.3", "1.2"]
    assert "=== temperature 0.3 ===" in capsys.readouterr().out
    for argv, needle in [
        (["-t", "0"], "expected a number in (0,"),
        (["--prime", "\u2603"], "vocabulary"),
    ]:
        assert main(["temperatures", str(ckpt), *argv, "--out", str(out)]) == 2
        assert needle in capsys.readouterr().err
