"""Training options: the TrainConfig dataclass and its command-line form.

Option names follow char-rnn's train.lua (`--rnn_size`, `--learning_rate_decay_after`,
...); each also answers to a dashed spelling (`--rnn-size`). On `--resume` the
stored configuration is the base and only options given on the command line
change it; options that would change the model or the batching are refused.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from charrnn_fast.charrnn.errors import UserError
from charrnn_fast.charrnn.model import MODELS
from charrnn_fast.charrnn.options import (
    IN_ANY,
    IN_DIR,
    OUT_DIR,
    SEED,
    Number,
    PathArg,
    count,
    fraction,
    positive,
)
from charrnn_fast.charrnn.shared_options import BACKENDS, Option, flags

OPTIMIZERS = ("adam", "adamw", "rmsprop")
LR_SCHEDULES = ("cosine", "char-rnn")
DTYPES = ("float32", "bfloat16", "auto")
NONFINITE = ("stop", "skip")
MAX_SKIPPED = 10  # --nonfinite skip: this many non-finite steps in a row stop the run
# What each numeric option accepts; checked when parsed and again by validate().
RANGES: dict[str, Number] = {
    "train_frac": fraction(lo_open=True),
    "val_frac": fraction(),
    "rnn_size": count(1),
    "num_layers": count(1),
    "dropout": fraction(hi_open=True),
    "embedding_dim": count(0),
    "learning_rate": positive(),
    "learning_rate_decay": fraction(lo_open=True),
    "learning_rate_decay_after": count(0),
    "warmup_iters": count(0),
    "min_lr_frac": fraction(),
    # RMSProp's smoothing constant: at 1 the average never moves, above it
    # the squared-gradient average turns negative and the weights NaN.
    "decay_rate": fraction(hi_open=True),
    "weight_decay": Number(float, 0.0, 1e6),
    "grad_clip": Number(float, 0.0, 1e9),
    "seq_length": count(1),
    "batch_size": count(1),
    "reset_prob": fraction(),
    "max_epochs": Number(float, 0.0, 1e12),
    "max_iters": count(0),
    "max_time": Number(float, 0.0, 1e12),
    "seed": SEED,
    "print_every": count(1),
    "eval_val_every": count(1),
    "eval_max_batches": count(0),
    "sample_every": count(0),
    "sample_length": count(1, 10**6),
    "threads": count(0, 4096),
}
PATHS: dict[str, PathArg] = {"data_dir": IN_DIR, "checkpoint_dir": OUT_DIR, "init_from": IN_ANY}
# Changing these on --resume would silently train a different model or data stream.
FIXED_ON_RESUME = (
    "model",
    "rnn_size",
    "num_layers",
    "embedding_dim",
    "batch_size",
    "seq_length",
    "train_frac",
    "val_frac",
)


@dataclass
class TrainConfig:
    # data and output
    data_dir: str = "data/shakespeare"
    checkpoint_dir: str = "cv"
    train_frac: float = 0.9
    val_frac: float = 0.05
    # model
    model: str = "lstm"
    rnn_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    embedding_dim: int = 64
    backend: str = "auto"
    # optimisation
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    learning_rate_decay: float = 0.97
    learning_rate_decay_after: int = 10
    lr_schedule: str = "cosine"
    warmup_iters: int = 100
    min_lr_frac: float = 0.1
    decay_rate: float = 0.95
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_clip_mode: str = "norm"
    seq_length: int = 64
    batch_size: int = 64
    reset_prob: float = 0.02
    max_epochs: float = 50.0
    max_iters: int = 0
    max_time: float = 345.0
    # run control
    init_from: str = ""
    resume: bool = False
    overwrite: bool = False
    seed: int = 123
    print_every: int = 10
    eval_val_every: int = 1000
    eval_max_batches: int = 0
    sample_every: int = 0
    sample_length: int = 200
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    progress: bool = True
    tensorboard: bool = True
    nonfinite: str = "stop"

    def validate(self) -> TrainConfig:
        """Raise UserError on an impossible option; returns self."""
        for f in fields(self):  # a stored configuration (resume) may hold anything
            value = getattr(self, f.name)
            if isinstance(f.default, (bool, str)) and type(value) is not type(f.default):
                raise UserError(f"--{f.name}: expected {type(f.default).__name__}, got {value!r}")
        for name, number in RANGES.items():
            why = number.problem(getattr(self, name))
            if why is not None:
                raise UserError(f"--{name}: {why}")
        checks = [
            (self.model in MODELS, f"--model must be one of {', '.join(MODELS)}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}"),
            (self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}"),
            (self.grad_clip_mode in ("norm", "value"), "--grad_clip_mode must be norm or value"),
            (
                self.lr_schedule in LR_SCHEDULES,
                f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}",
            ),
            (
                self.nonfinite in NONFINITE,
                f"--nonfinite must be one of {', '.join(NONFINITE)}",
            ),
            (self.max_epochs > 0 or self.max_iters > 0, "--max_epochs or --max_iters must be > 0"),
            (
                self.train_frac + self.val_frac <= 1 + 1e-9,
                "--train_frac + --val_frac must be <= 1 (the test split gets the rest)",
            ),
            (not (self.resume and self.init_from), "use either --resume or --init_from, not both"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))

HELP = {
    "data_dir": "prepared data folder (output of `charrnn-fast prepare`)",
    "checkpoint_dir": "folder for checkpoints (last.pt, best.pt) and log.csv",
    "train_frac": "fraction of the corpus for training (contiguous, from the start)",
    "val_frac": "fraction for validation (after train); test gets the rest",
    "model": "recurrent cell: lstm (charrnn_fast.LSTM), gru or rnn (torch.nn)",
    "rnn_size": "hidden units per layer",
    "num_layers": "number of stacked recurrent layers",
    "dropout": "dropout between layers and before the output layer",
    "embedding_dim": "learned embedding size; 0 = one-hot input as in char-rnn",
    "backend": "charrnn_fast.LSTM backend (auto picks by device)",
    "optimizer": "adam, adamw or rmsprop (char-rnn's)",
    "learning_rate": "initial learning rate",
    "learning_rate_decay": "multiply the learning rate by this after each epoch ...",
    "learning_rate_decay_after": "... once this many epochs are complete",
    "lr_schedule": "char-rnn: the two options above; cosine: from learning_rate down to "
    "learning_rate*min_lr_frac over the run (its steps or --max_time, whichever ends first)",
    "warmup_iters": "raise the learning rate linearly over the first N steps",
    "min_lr_frac": "cosine: final learning rate as a fraction of the initial one",
    "decay_rate": "RMSProp smoothing constant (alpha)",
    "weight_decay": "weight decay (AdamW: decoupled)",
    "grad_clip": "clip gradients at this value (0 = off)",
    "grad_clip_mode": "norm: total gradient norm; value: each element (char-rnn's)",
    "seq_length": "time steps per chunk (truncated BPTT length)",
    "batch_size": "row streams per batch (over all processes)",
    "reset_prob": "chance per chunk that a row's carried state restarts from zero, so "
    "that the model learns to start from nothing as validation and sampling do "
    "(0 = only at epoch starts, as char-rnn)",
    "max_epochs": "epochs to train (used when --max_iters is 0)",
    "max_iters": "total optimisation steps (overrides --max_epochs)",
    "max_time": "stop after this many seconds of training wall time, over all resumes "
    "(periodic validation included, the final one not; 0 = no limit); off when "
    "--max_iters or --max_epochs is given without it",
    "init_from": "start from this checkpoint's weights (new optimiser, step 0)",
    "resume": "continue exactly from CHECKPOINT_DIR/last.pt",
    "overwrite": "start a new run even if CHECKPOINT_DIR already has one",
    "seed": "random seed",
    "print_every": "update the loss display and log.csv every N steps",
    "eval_val_every": "validate and checkpoint every N steps (and at the end)",
    "eval_max_batches": "validate on at most N chunks (0 = the whole val split)",
    "sample_every": "write a short sample every N steps to CHECKPOINT_DIR/samples.html (0 = off)",
    "sample_length": "characters per --sample_every sample",
    "device": "auto, cpu, cuda or cuda:N",
    "dtype": "float32, bfloat16 autocast, or auto: bfloat16 where it measures at least "
    "1.15x as fast as float32 for this model on this CPU (float32 on a GPU)",
    "threads": "CPU threads: 0 follows the cores other processes leave free (at most "
    "torch's count: next to a busy process, threads that spin-wait for each other "
    "would lose more than a core), N fixes N",
    "progress": "show a progress bar",
    "tensorboard": "also log to CHECKPOINT_DIR/tb when tensorboard is installed",
    "nonfinite": "a step whose loss or gradient is NaN or infinite: stop (the run has "
    "diverged; the last checkpoint is kept as it was) or skip it (no update; "
    f"{MAX_SKIPPED} in a row stop the run)",
}
CHOICES = {
    "model": MODELS,
    "optimizer": OPTIMIZERS,
    "dtype": DTYPES,
    "backend": BACKENDS,
    "grad_clip_mode": ("norm", "value"),
    "lr_schedule": LR_SCHEDULES,
    "nonfinite": NONFINITE,
}


def train_option(name: str) -> Option:
    """The TrainConfig field `name` as an option: its flags and what it accepts
    (RANGES, PATHS, CHOICES), for train and the commands that train or read runs
    (compare, eval), which give their own defaults."""
    default = next(f.default for f in fields(TrainConfig) if f.name == name)
    if isinstance(default, bool):
        return Option(flags(name), {"dest": name, "action": argparse.BooleanOptionalAction})
    settings = {
        "dest": name,
        "type": RANGES.get(name) or PATHS.get(name) or type(default),
        "choices": CHOICES.get(name),
        "metavar": None if name in CHOICES else name.upper(),
    }
    return Option(flags(name), settings)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as an option; unspecified options stay absent from
    the parsed namespace (argparse.SUPPRESS) so a resume can tell what was given."""
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        help_text = f"{HELP[f.name]} (default: {getattr(defaults, f.name)!r})"
        train_option(f.name).add(parser, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument(
        "--nanogpt_split",
        "--nanogpt-split",
        action="store_true",
        default=argparse.SUPPRESS,
        help="nanoGPT-compatible split: 90%% train, 10%% val, no test",
    )


def config_from_args(given: dict, stored: dict | None = None) -> TrainConfig:
    """TrainConfig from explicitly given options over `stored` (a checkpoint's
    config on resume) over the defaults. Refuses changes to FIXED_ON_RESUME."""
    given = dict(given)
    if given.get("resume") and given.get("init_from"):
        raise UserError(
            "use either --resume (continue CHECKPOINT_DIR/last.pt) or --init_from "
            "(start a new run from a checkpoint's weights), not both"
        )
    if given.pop("nanogpt_split", False):
        given["train_frac"], given["val_frac"] = 0.9, 0.1
    base = {k: v for k, v in (stored or {}).items() if k in FIELD_NAMES}
    if stored is not None:
        _refuse_changes(given, base, FIXED_ON_RESUME, "--resume")
    merged = {**base, **given}
    # A run length asked for in steps or epochs is meant in full: the default time
    # budget steps aside (an explicit --max_time still applies).
    if ("max_iters" in given or "max_epochs" in given) and "max_time" not in given:
        merged["max_time"] = 0.0
    if stored is not None:
        merged["resume"], merged["init_from"] = True, ""
    return TrainConfig(**merged).validate()


def _refuse_changes(given: dict, stored: dict, keys: tuple[str, ...], how: str) -> None:
    changed = [k for k in keys if k in given and k in stored and given[k] != stored[k]]
    if changed:
        detail = ", ".join(f"--{k} {given[k]} (checkpoint: {stored[k]})" for k in changed)
        raise UserError(f"cannot change on {how}: {detail}")


MODEL_OPTIONS = ("model", "rnn_size", "num_layers", "embedding_dim")


def with_init_from_model(given: dict, model_config: dict) -> dict:
    """`given` options with the model options of the --init_from checkpoint
    (`model_config`) filled in; a given one that differs is a UserError, since
    the checkpoint's weights fix the architecture."""
    stored = {k: model_config[k] for k in MODEL_OPTIONS if k in model_config}
    _refuse_changes(given, stored, MODEL_OPTIONS, f"--init_from {given.get('init_from')}")
    return {**given, **stored}


def last_checkpoint_path(checkpoint_dir: str) -> Path:
    return Path(checkpoint_dir) / "last.pt"
