"""The temperature sweep (`charrnn-fast temperatures`): one prime, one seed,
several temperatures, side by side.

Low temperatures make the model confident and repetitive, high ones diverse and
error-prone (the blog's "Temperature" section). Every sample uses the same seed,
so the columns differ by temperature alone.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import torch

from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.sample import generate, load_model, sampler_options

DEFAULT_TEMPERATURES = (0.2, 0.5, 0.8, 1.0, 1.3)


def sweep(
    checkpoint: str,
    temperatures: list[float] | tuple[float, ...] = DEFAULT_TEMPERATURES,
    length: int = 400,
    prime: str = "",
    seed: int = 1,
    skip_unknown: bool = False,
    device: str = "cpu",
) -> list[tuple[float, str]]:
    """(temperature, sample) for each temperature: same prime, same seed."""
    if not temperatures:
        raise UserError("give at least one temperature")
    bad = [t for t in temperatures if not (t > 0 and math.isfinite(t))]
    if bad:
        raise UserError(f"temperatures must be > 0 (got {', '.join(map(str, bad))})")
    if length < 1:
        raise UserError(f"--length must be >= 1 (got {length})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} requested but no CUDA GPU is available")
    model, vocab, _ = load_model(checkpoint, device)
    if prime:
        vocab.encode(prime, skip_unknown=skip_unknown)  # unknown characters: fail first
    return [
        (
            t,
            "".join(
                generate(
                    model,
                    vocab,
                    length,
                    sampler_options(t, seed=seed),
                    prime=prime,
                    skip_unknown=skip_unknown,
                )
            ),
        )
        for t in temperatures
    ]


def render_sweep(samples: list[tuple[float, str]], note: str = "") -> str:
    """A page with one column per temperature."""
    cols = "".join(
        f"<div><h2>temperature {t:g}</h2><pre>{html.escape(text)}</pre></div>"
        for t, text in samples
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>charrnn-fast: temperatures'
        "</title><style>body{font-family:sans-serif;margin:1.5em}"
        f".row{{display:grid;grid-template-columns:repeat({len(samples)},1fr);gap:1em}}"
        "pre{white-space:pre-wrap;font-size:85%;background:#f6f6f6;padding:.5em}</style>"
        f"</head><body><h1>One prime, several temperatures</h1><p>{html.escape(note)}</p>"
        f'<div class="row">{cols}</div></body></html>\n'
    )


def write_sweep(samples: list[tuple[float, str]], out: str | Path, note: str = "") -> None:
    try:
        Path(out).write_text(render_sweep(samples, note), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from e
