"""Samples as training goes on (`train --sample_every N`), as in the blog's
"The evolution of samples while training".

Every N steps the model writes a short sample, always from the same seed and
prime, so the differences between two samples come from the weights alone. The
samples are appended to CHECKPOINT_DIR/samples.jsonl (one JSON object a line:
step, train loss, elapsed seconds, text) and CHECKPOINT_DIR/samples.html is
rebuilt from it, oldest first. A resumed run appends; a step sampled twice
(after resuming from an earlier checkpoint) shows its latest sample.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from charrnn_fast.charrnn.model import CharRNN
from charrnn_fast.charrnn.sample import generate, sampler_options
from charrnn_fast.charrnn.trainconfig import TrainConfig
from charrnn_fast.charrnn.vocab import Vocab

TEMPERATURE = 0.8  # readable text; the page says which temperature it shows


class SampleWriter:
    """Writes the --sample_every samples of one run (rank 0 only)."""

    def __init__(self, cfg: TrainConfig, vocab: Vocab) -> None:
        self.cfg, self.vocab = cfg, vocab
        self.dir = Path(cfg.checkpoint_dir)
        self.jsonl = self.dir / "samples.jsonl"
        self.page = self.dir / "samples.html"
        if not cfg.resume:
            self.jsonl.unlink(missing_ok=True)  # a new run (--overwrite) starts a new page

    def write(self, model: CharRNN, step: int, loss: float | None, elapsed_s: float) -> str:
        """Sample `sample_length` characters from `model`, record and render them."""
        was_training = model.training
        model.eval()
        try:
            pieces = generate(
                model,
                self.vocab,
                self.cfg.sample_length,
                sampler_options(TEMPERATURE, seed=self.cfg.seed),
            )
            text = "".join(pieces)
        finally:
            model.train(was_training)
        entry = {"step": step, "train_loss": loss, "elapsed_s": round(elapsed_s, 1), "text": text}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        tmp = self.page.with_name(self.page.name + ".tmp")
        tmp.write_text(render_samples(read_samples(self.jsonl), self.cfg), encoding="utf-8")
        os.replace(tmp, self.page)
        return text


def read_samples(path: Path) -> list[dict]:
    """The entries of samples.jsonl by step, the latest entry winning for a step."""
    by_step: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            by_step[int(entry["step"])] = entry
    return [by_step[k] for k in sorted(by_step)]


def render_samples(entries: list[dict], cfg: TrainConfig) -> str:
    """One page: a block per sample, step and loss on top."""
    parts = [
        '<!doctype html>\n<html><head><meta charset="utf-8">',
        "<title>charrnn-fast: samples during training</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-left:3px solid #888}"
        "</style></head><body>",
        "<h1>Samples as training goes on</h1>",
        f"<p>{html.escape(cfg.model.upper())} {cfg.num_layers} x {cfg.rnn_size} on "
        f"{html.escape(cfg.data_dir)}; every {cfg.sample_every} steps, "
        f"{cfg.sample_length} characters at temperature {TEMPERATURE}, "
        f"the same seed ({cfg.seed}) each time.</p>",
    ]
    for e in entries:
        loss = e.get("train_loss")
        loss_text = f", train loss {loss:.3f}" if loss is not None else ""
        parts.append(
            f'<h2 id="step-{e["step"]}">step {e["step"]}{loss_text} '
            f"({e['elapsed_s']:.0f} s)</h2>\n<pre>{html.escape(e['text'])}</pre>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)
