"""What to benchmark: named shapes, dtypes, modes, and the parsing of the CLI lists.

A shape is (layers L, hidden H, batch B, steps T); the input size is H in every
preset (a stack of equal layers, as in char-rnn with an embedding of size H).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    batch: int
    seq: int

    @property
    def input_size(self) -> int:
        return self.hidden

    @property
    def spec(self) -> str:
        """The LxH:B:T spelling, which --shapes accepts back."""
        return f"{self.layers}x{self.hidden}:{self.batch}:{self.seq}"


PRESETS: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("char-rnn", 2, 128, 50, 50),  # karpathy/char-rnn defaults
        Shape("blog", 3, 512, 64, 100),  # the 2015 blog post's model
        Shape("fastrnns", 1, 512, 64, 100),  # pytorch benchmarks/fastrnns default
        Shape("large", 1, 1024, 128, 200),
        Shape("batch1", 3, 512, 1, 100),  # latency: one stream, as in sampling
        Shape("tiny", 2, 64, 16, 32),  # --quick: checks the harness, in seconds on 2 cores
        # `sample` mode: B streams, T tokens per timed step
        Shape("gen-char-rnn-b1", 2, 128, 1, 400),
        Shape("gen-char-rnn-b32", 2, 128, 32, 100),
        Shape("gen-blog-b1", 3, 512, 1, 40),
        Shape("gen-blog-b32", 3, 512, 32, 20),
    )
}
DEFAULT_SHAPES = ("char-rnn", "blog", "fastrnns", "large", "batch1")
QUICK_SHAPES = ("tiny",)
SAMPLE_SHAPES = ("gen-char-rnn-b1", "gen-char-rnn-b32", "gen-blog-b1", "gen-blog-b32")
QUICK_SAMPLE_SHAPES = ("gen-char-rnn-b1",)

MODES = ("fwd", "fwdbwd", "train", "sample")
DEFAULT_MODES = ("fwd", "fwdbwd", "train")  # `sample` runs when asked for

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
                  "fp64": "float64", "double": "float64", "float": "float32"}  # fmt: skip

# Vocabulary of the char model in `train` mode: tiny-shakespeare's 65 symbols.
VOCAB = 65
# In the note of a row whose charrnn_fast module handed the call to ATen's LSTM
# (providers.aten_note), and what the report looks for to mark it.
SAME_KERNELS = "same kernels as the baseline"

_SPEC = re.compile(r"^(\d+)x(\d+):(\d+):(\d+)$")


def parse_shape(text: str) -> Shape:
    """A preset name, or LxH:B:T (layers x hidden : batch : steps), e.g. 2x128:50:50."""
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    m = _SPEC.match(text)
    if m is None:
        raise ValueError(
            f"--shapes: {text!r} is neither a preset ({', '.join(PRESETS)}) "
            "nor LxH:B:T (for example 2x128:50:50)"
        )
    L, H, B, T = (int(g) for g in m.groups())
    if min(L, H, B, T) < 1:
        raise ValueError(f"--shapes: {text!r}: layers, hidden, batch and steps must be >= 1")
    return Shape(text, L, H, B, T)


def flops(shape: Shape, mode: str) -> float:
    """Arithmetic of one timed step (2 x multiply-adds of the GEMMs; pointwise work
    not counted): the LSTM forward is 2 T B 4H (I + H) per layer, forward + backward
    three times that (dx, dW), `train` adds the head (H x V) forward and backward,
    `sample` is T B tokens of bench/sampling.flops_per_token."""
    L, H, B, T = shape.layers, shape.hidden, shape.batch, shape.seq
    fwd = 2.0 * T * B * 4 * H * (shape.input_size + H) * L
    if mode == "fwd":
        return fwd
    if mode == "fwdbwd":
        return 3 * fwd
    if mode == "train":
        return 3 * (fwd + 2.0 * T * B * H * VOCAB)
    gates = 2.0 * 4 * H * ((VOCAB + H) + (L - 1) * 2 * H)  # one-hot layer 0, as computed
    return T * B * (gates + 2.0 * H * VOCAB)


def parse_dtype(text: str) -> str:
    """Canonical dtype name (float32, bfloat16, float16, float64) for a name or alias."""
    name = _DTYPE_ALIASES.get(text.strip(), text.strip())
    if name not in DTYPES:
        raise ValueError(f"--dtypes: unknown dtype {text!r} (expected one of {', '.join(DTYPES)})")
    return name


def parse_mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"--modes: unknown mode {text!r} (expected one of {', '.join(MODES)})")
    return text


def split_list(text: str | None) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; None -> []."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]
