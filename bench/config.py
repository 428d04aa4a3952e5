"""What to benchmark: named shapes, dtypes, modes, and the parsing of the CLI lists.

A shape is (layers L, hidden H, batch B, steps T), optionally with a projection
(proj_size P > 0) and variable lengths (each row of the batch gets its own
length, fed as a PackedSequence); the input size is H in every preset (a stack
of equal layers, as in char-rnn with an embedding of size H).
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
    seq: int  # T: the longest length a row may have when varlen
    proj: int = 0  # proj_size P of nn.LSTM; 0: no projection
    varlen: bool = False  # rows of lengths drawn from min(10, T)..T (lengths()), packed

    @property
    def input_size(self) -> int:
        return self.hidden

    @property
    def out_size(self) -> int:
        """Features of h and of the output: P with a projection, else H."""
        return self.proj or self.hidden

    @property
    def spec(self) -> str:
        """The LxH:B:T[pP][v] spelling, which --shapes accepts back."""
        text = f"{self.layers}x{self.hidden}:{self.batch}:{self.seq}"
        return text + (f"p{self.proj}" if self.proj else "") + ("v" if self.varlen else "")


PRESETS: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("char-rnn", 2, 128, 50, 50),  # karpathy/char-rnn defaults
        Shape("blog", 3, 512, 64, 100),  # the 2015 blog post's model
        Shape("fastrnns", 1, 512, 64, 100),  # pytorch benchmarks/fastrnns default
        Shape("large", 1, 1024, 128, 200),
        Shape("batch1", 3, 512, 1, 100),  # latency: one stream, as in sampling
        # Variable lengths (PackedSequence) and a projection (LSTMP): issue 27
        Shape("char-rnn-varlen", 2, 128, 50, 50, varlen=True),
        Shape("proj", 2, 256, 64, 64, proj=64),
        Shape("tiny", 2, 64, 16, 32),  # --quick: checks the harness, in seconds on 2 cores
        # `sample` mode: B streams, T tokens per timed step
        Shape("gen-char-rnn-b1", 2, 128, 1, 400),
        Shape("gen-char-rnn-b32", 2, 128, 32, 100),
        Shape("gen-blog-b1", 3, 512, 1, 40),
        Shape("gen-blog-b32", 3, 512, 32, 20),
    )
}
DEFAULT_SHAPES = ("char-rnn", "blog", "fastrnns", "large", "batch1", "char-rnn-varlen", "proj")
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

# LxH:B:T, then optionally pP (proj_size P) and v (variable lengths), in that order.
_SPEC = re.compile(r"^(\d+)x(\d+):(\d+):(\d+)(?:p(\d+))?(v)?$")
_SPEC_HELP = "LxH:B:T[pP][v] (for example 2x128:50:50, 2x256:64:64p64, 2x128:50:50v)"
# Variable lengths: each row's length is uniform in min(VARLEN_MIN, T)..T.
VARLEN_MIN = 10
_LENGTHS_SEED = 0x5EED  # added to --seed: the lengths' own stream, apart from the data's


def parse_shape(text: str) -> Shape:
    """A preset name, or LxH:B:T[pP][v]: layers x hidden : batch : steps, then
    optionally p and proj_size, then v for variable lengths (e.g. 2x256:64:64p64v)."""
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    m = _SPEC.match(text)
    if m is None:
        raise ValueError(
            f"--shapes: {text!r} is neither a preset ({', '.join(PRESETS)}) nor {_SPEC_HELP}"
        )
    L, H, B, T = (int(g) for g in m.groups()[:4])
    if min(L, H, B, T) < 1:
        raise ValueError(f"--shapes: {text!r}: layers, hidden, batch and steps must be >= 1")
    P = int(m.group(5)) if m.group(5) is not None else 0
    if m.group(5) is not None and not 0 < P < H:
        raise ValueError(
            f"--shapes: {text!r}: proj_size must be in 1..hidden-1 = 1..{H - 1} "
            f"(nn.LSTM's rule), got {P}; leave out the p suffix for none"
        )
    return Shape(text, L, H, B, T, proj=P, varlen=m.group(6) is not None)


def lengths(shape: Shape, seed: int = 0) -> list[int] | None:
    """The length of each of the B rows of a varlen shape (None otherwise): uniform
    in min(10, T)..T, drawn from `seed`, so every provider, the check and flops()
    see the same ones. The longest may be shorter than T."""
    if not shape.varlen:
        return None
    g = torch.Generator().manual_seed(seed + _LENGTHS_SEED)
    low = min(VARLEN_MIN, shape.seq)
    return torch.randint(low, shape.seq + 1, (shape.batch,), generator=g).tolist()


def tokens(shape: Shape, seed: int = 0) -> int:
    """Valid (row, step) positions of one call: the sum of the lengths, or T B."""
    lens = lengths(shape, seed)
    return shape.seq * shape.batch if lens is None else sum(lens)


def flops(shape: Shape, mode: str, seed: int = 0) -> float:
    """Arithmetic of one timed step: 2 x the multiply-adds of its GEMMs (pointwise
    work not counted), over the N = tokens() valid positions (T B, or the sum of
    the lengths: a packed batch computes nothing past a row's end).

    Per position, layer l's forward is 2 4H (I_l + R): the input GEMM reads
    I_l (I for layer 0, R above it) and the recurrent GEMM reads R (P with a
    projection, else H) columns, plus 2 H P for the projection H -> P. The
    backward does two GEMMs of the same size per forward GEMM (input and weight
    gradients), so fwd + bwd is 3 x fwd; `train` adds the head (R -> V) forward
    and backward over the same N positions. `sample` (plain shapes only) is
    T B tokens of bench/sampling.flops_per_token."""
    L, H, B, T, P = shape.layers, shape.hidden, shape.batch, shape.seq, shape.proj
    R = shape.out_size
    if mode == "sample":
        if P or shape.varlen:
            raise ValueError(f"sample mode has no projection or variable lengths ({shape.spec})")
        gates = 2.0 * 4 * H * ((VOCAB + H) + (L - 1) * 2 * H)  # one-hot layer 0, as computed
        return T * B * (gates + 2.0 * H * VOCAB)
    per_position = sum(
        2.0 * 4 * H * ((shape.input_size if layer == 0 else R) + R) + 2.0 * H * P
        for layer in range(L)
    )
    fwd = tokens(shape, seed) * per_position
    if mode == "fwd":
        return fwd
    if mode == "fwdbwd":
        return 3 * fwd
    if mode == "train":
        return 3 * (fwd + 2.0 * tokens(shape, seed) * R * VOCAB)
    raise ValueError(f"unknown mode {mode!r}")


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
