"""The `charrnn-fast` options that several subcommands take, each defined once:
its flags and what it accepts (the types of options.py). A subcommand adds one
with `Option.add`, giving its own default and, where it says something of its
own, its own help. The training options are defined by TrainConfig
(trainconfig.train_option), for train and for the commands that train or read
runs alike.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from charrnn_fast.charrnn.options import IN_ANY, SEED, TEXT, positive

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
CKPT_HELP = "checkpoint file, or folder (best.pt, else last.pt)"


def flags(name: str) -> tuple[str, ...]:
    """`--name` and, for a name with underscores, its dashed spelling (`--rnn-size`)."""
    return (f"--{name}",) + ((f"--{name.replace('_', '-')}",) if "_" in name else ())


@dataclass(frozen=True)
class Option:
    """One option's definition: its flags and argparse.add_argument's keywords."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, parser: argparse.ArgumentParser, **override: Any) -> argparse.Action:
        """Add the option to `parser`; `override` (default=, help=, ...) wins over
        the definition's keywords."""
        return parser.add_argument(*self.flags, **(self.settings | override))


CHECKPOINT = Option(("checkpoint",), {"type": IN_ANY, "help": CKPT_HELP})
DEVICE = Option(("--device",), {"default": "cpu"})
BACKEND = Option(("--backend",), {"default": "auto", "choices": BACKENDS})
SEED_OPTION = Option(("--seed",), {"type": SEED})
TEMPERATURE = Option(("-t", "--temperature"), {"type": positive(), "default": 1.0})
PRIME = Option(("--prime",), {"type": TEXT, "default": "", "help": "text to start from"})
SKIP_UNKNOWN = Option(
    flags("skip_unknown"),
    {"action": "store_true", "help": "drop text characters that are not in the vocabulary"},
)
TEXT_OPTION = Option(("--text",))
LITERAL = Option(
    ("--literal",), {"action": "store_true", "help": "--text is the text itself, never a file name"}
)
