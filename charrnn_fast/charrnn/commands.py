"""The blog's experiments as `charrnn-fast` subcommands: eval, plot, cells,
guesses, temperatures, compare. cli.py registers them with `add_commands` and
dispatches through `HANDLERS`; each handler imports its module lazily so that
`charrnn-fast --help` stays fast."""

from __future__ import annotations

import argparse

from charrnn_fast.charrnn.options import (
    IN_DIR,
    OUT_DIR,
    OUT_FILE,
    PICTURE,
    SEED,
    TEXT,
    Number,
    count,
    positive,
)
from charrnn_fast.charrnn.shared_options import (
    CHECKPOINT,
    DEVICE,
    LITERAL,
    PRIME,
    SEED_OPTION,
    SKIP_UNKNOWN,
    TEMPERATURE,
    TEXT_OPTION,
)

# compare's training options: train's definitions (trainconfig.train_option),
# compare's defaults (small runs, several of them); max_iters must be >= 1 here.
COMPARE_TRAINING = {
    "num_layers": 2,
    "embedding_dim": 0,
    "max_iters": 2000,
    "batch_size": 50,
    "seq_length": 50,
    "learning_rate": 2e-3,
    "lr_schedule": "cosine",
    "dropout": 0.0,
    "reset_prob": 0.0,
    "grad_clip": 5.0,
    "eval_val_every": 250,
    "eval_max_batches": 0,
}


def _text_args(p: argparse.ArgumentParser, default_what: str) -> None:
    TEXT_OPTION.add(
        p,
        help="a UTF-8 file, or the text itself; a missing file name is an error "
        f"(default: {default_what})",
    )
    LITERAL.add(p)
    p.add_argument(
        "--length",
        type=count(2),
        default=None,
        help="without --text: characters taken from the run's validation split",
    )
    SKIP_UNKNOWN.add(p)


def add_commands(sub) -> None:
    """Add the subcommands to `sub` (argparse subparsers of the main parser)."""
    from charrnn_fast.charrnn.trainconfig import train_option

    e = sub.add_parser(
        "eval",
        help="loss (nats, bits per char) on the validation and test splits",
        description="Mean loss per token of a checkpoint on its run's validation and "
        "test splits (the test split is used nowhere else), in nats and bits; "
        "--novel N also samples N lines and counts those that are new.",
    )
    CHECKPOINT.add(e)
    train_option("data_dir").add(e, help="prepared data (default: the run's)")
    train_option("batch_size").add(e, default=32, help="row streams")
    train_option("seq_length").add(e, default=256, help="chunk length")
    e.add_argument(
        "--novel", type=count(0, 10**6), default=0, help="sample N lines, report how many are new"
    )
    TEMPERATURE.add(e, help="for --novel")
    SEED_OPTION.add(e, default=1, help="for --novel")
    DEVICE.add(e, help="cpu, cuda or cuda:N")

    p = sub.add_parser(
        "plot",
        help="training and validation curves of runs (PNG)",
        description="Draw the train (thin) and validation (thick) loss curves of one "
        "or more runs from their log.csv into one PNG.",
    )
    p.add_argument("runs", type=IN_DIR, nargs="+", metavar="CHECKPOINT_DIR", help="run folders")
    p.add_argument(
        "--out", type=PICTURE, default="curves.png", help="PNG file (default curves.png)"
    )
    p.add_argument("--x", choices=("step", "epoch", "time"), default="step", help="x axis")
    p.add_argument("--labels", type=TEXT, nargs="+", help="one legend label per run")
    p.add_argument("--title", type=TEXT, default="", help="plot title")
    p.add_argument("--ylim", type=Number(float), nargs=2, metavar=("LO", "HI"), help="y axis range")

    c = sub.add_parser(
        "cells",
        help="find interpretable cells: score every cell against text features",
        description="Score every cell of every layer against features of the text "
        "(in_quote, line_position, bracket_depth, indent_depth, in_comment, "
        "word_start, and --feature NAME=REGEX) by Pearson correlation; report the "
        "best cells per feature and draw the best one of each (HTML, PNG).",
    )
    CHECKPOINT.add(c)
    _text_args(c, "5000 characters of the validation split")
    c.add_argument(
        "--feature",
        type=TEXT,
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="a feature that is 1 inside matches of REGEX (repeatable)",
    )
    c.add_argument(
        "--only", type=TEXT, nargs="+", metavar="FEATURE", help="score only these built-ins"
    )
    c.add_argument("--top", type=count(1), default=3, help="cells reported per feature")
    c.add_argument("--out", type=OUT_FILE, default="cells_found.html", help="HTML page")
    c.add_argument("--png", type=PICTURE, help="also draw a PNG (first 3000 characters)")

    g = sub.add_parser(
        "guesses",
        help="the model's probability and top guesses for each character (HTML)",
        description="Colour each character of a text by the probability the model "
        "gave it, with the model's top guesses beneath (the blog's figure).",
    )
    CHECKPOINT.add(g)
    _text_args(g, "600 characters of the validation split")
    g.add_argument("--top", type=count(1), default=5, help="guesses per character")
    g.add_argument("--out", type=OUT_FILE, default="guesses.html", help="HTML page")

    t = sub.add_parser(
        "temperatures",
        help="sample one prime at several temperatures, side by side",
        description="The same prime and seed sampled at several temperatures; "
        "printed, and written side by side to an HTML page.",
    )
    CHECKPOINT.add(t)
    t.add_argument(
        "-t",
        "--temperatures",
        type=positive(),
        nargs="+",
        default=[0.2, 0.5, 0.8, 1.0, 1.3],
        help="temperatures (default 0.2 0.5 0.8 1.0 1.3)",
    )
    t.add_argument("-n", "--length", type=count(1), default=400, help="characters per sample")
    PRIME.add(t)
    SEED_OPTION.add(t, default=1, help="the same seed for every temperature")
    SKIP_UNKNOWN.add(t, help=None)
    t.add_argument("--out", type=OUT_FILE, default="temperatures.html", help="HTML page")
    DEVICE.add(t)

    m = sub.add_parser(
        "compare",
        help="vanilla RNN vs GRU vs LSTM at equal parameter counts, several seeds",
        description="Train each model type at the hidden size closest to --params "
        "parameters, once per seed, for the same steps on the same data; plot the "
        "validation curves (mean, min-max band) and tabulate the final losses.",
    )
    train_option("data_dir").add(m, required=True)
    m.add_argument(
        "--out_dir", "--out-dir", type=OUT_DIR, default="cv/compare", help="runs and report"
    )
    m.add_argument(
        "--models", nargs="+", choices=("rnn", "gru", "lstm"), default=["rnn", "gru", "lstm"]
    )
    m.add_argument("--seeds", type=SEED, nargs="+", default=[1, 2, 3])
    m.add_argument("--params", type=count(100), default=200_000, help="parameter budget per model")
    for name, default in COMPARE_TRAINING.items():
        fewest = {"type": count(1)} if name == "max_iters" else {}
        train_option(name).add(m, default=default, **fewest)
    DEVICE.add(m)


def _text(args: argparse.Namespace, default_length: int):
    """The --text argument resolved (None: take the validation split)."""
    from charrnn_fast.charrnn.errors import UserError
    from charrnn_fast.charrnn.visualize import read_text

    if args.length is not None and args.length < 2:
        raise UserError(f"--length must be >= 2 (got {args.length})")
    if args.text is None:
        return None, args.length or default_length
    return read_text(args.text, args.literal), None


def _eval(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.devices import resolve_device
    from charrnn_fast.charrnn.evaluate import evaluate_checkpoint, novelty

    resolve_device(args.device)  # a typo or a missing GPU: one line, before any work

    ckpt, losses = evaluate_checkpoint(
        args.checkpoint, args.data_dir, args.batch_size, args.seq_length, args.device
    )
    cfg = ckpt["config"]
    unit = "bits/byte" if ckpt["vocab"]["level"] == "byte" else "bits/char"
    print(
        f"{ckpt['path']} (step {ckpt['step']}), data {args.data_dir or cfg['data_dir']}, "
        f"splits train {cfg['train_frac']:g} / val {cfg['val_frac']:g} / test rest"
    )
    print(f"{'split':<6} {'tokens':>11} {'loss (nats)':>12} {unit:>10}")
    for s in losses:
        print(f"{s.split:<6} {s.tokens:>11,} {s.nats:>12.4f} {s.bits:>10.4f}")
    if not losses:
        print("no validation or test split (train_frac + val_frac = 1 and val_frac 0)")
    elif not any(s.split == "test" for s in losses):
        print("test: empty split (train_frac + val_frac = 1)")
    if args.novel:
        nov = novelty(
            args.checkpoint, args.novel, args.temperature, args.seed, args.data_dir, args.device
        )
        n = len(nov.lines)
        print(
            f"novel: {nov.new_vs_train} of {n} sampled lines ({100 * nov.fraction(nov.new_vs_train):.1f}%) "
            f"are not in the training split; {nov.new_vs_corpus} "
            f"({100 * nov.fraction(nov.new_vs_corpus):.1f}%) are nowhere in the corpus"
        )
        print("examples: " + ", ".join(nov.lines[:20]))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.plot import plot_runs

    logs = plot_runs(args.runs, args.out, args.x, args.labels, args.title, args.ylim)
    for log in logs:
        best = f"{log.best_val:.4f}" if log.best_val is not None else "-"
        last = f"{log.last_val:.4f}" if log.last_val is not None else "-"
        steps = int(max(log.train.get("step") or log.val.get("step") or [0]))
        print(f"{log.name}: {steps} steps, last val {last}, best val {best}")
    print(f"wrote {args.out}")
    return 0


def _cells(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.cells import cells

    text, length = _text(args, 5000)
    r = cells(
        args.checkpoint,
        text,
        args.feature,
        args.only,
        args.top,
        args.out,
        args.png,
        length or 0,
        args.skip_unknown,
    )
    print(
        f"{r.model_type}: {r.values.shape[0]} layers x {r.values.shape[2]} cells, {len(r.text)} characters"
    )
    for name, ms in r.matches.items():
        best = "; ".join(f"layer {m.layer} cell {m.cell} r={m.r:+.3f}" for m in ms)
        print(f"{name:<14} {best}")
    if r.constant:
        print("constant over this text (not scored): " + ", ".join(r.constant))
    print("wrote " + ", ".join(str(p) for p in r.outputs))
    return 0


def _guesses(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.cells import split_text
    from charrnn_fast.charrnn.guesses import guesses
    from charrnn_fast.charrnn.sample import load_model

    text, length = _text(args, 600)
    if text is None:
        _, vocab, ckpt = load_model(args.checkpoint)
        text = split_text(ckpt, vocab, length)
    r = guesses(args.checkpoint, text, args.top, args.out, args.skip_unknown)
    print(
        f"{len(r.guesses)} characters: {r.bits_per_char:.3f} bits per character, "
        f"first guess right {100 * r.top1:.1f}%"
    )
    print("wrote " + ", ".join(str(p) for p in r.outputs))
    return 0


def _temperatures(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.devices import resolve_device
    from charrnn_fast.charrnn.temperatures import sweep, write_sweep

    resolve_device(args.device)

    samples = sweep(
        args.checkpoint,
        args.temperatures,
        args.length,
        args.prime,
        args.seed,
        args.skip_unknown,
        args.device,
    )
    for t, text in samples:
        print(f"=== temperature {t:g} ===\n{text}\n")
    note = f"{args.checkpoint}, prime {args.prime!r}, seed {args.seed}, {args.length} characters"
    write_sweep(samples, args.out, note)
    print(f"wrote {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.compare import compare
    from charrnn_fast.charrnn.trainconfig import TrainConfig

    base = TrainConfig(
        data_dir=args.data_dir,
        num_layers=args.num_layers,
        embedding_dim=args.embedding_dim,
        max_iters=args.max_iters,
        max_time=0.0,
        batch_size=args.batch_size,
        seq_length=args.seq_length,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        dropout=args.dropout,
        reset_prob=args.reset_prob,
        grad_clip=args.grad_clip,
        eval_val_every=args.eval_val_every,
        eval_max_batches=args.eval_max_batches,
        device=args.device,
        progress=False,
        tensorboard=False,
        print_every=50,
    ).validate()
    arms = compare(base, args.out_dir, args.models, args.seeds, args.params)
    for a in arms:
        s = a.summary()
        print(
            f"{s['model']:<5} H={s['rnn_size']:<4} {s['params']:>9,} params: final val "
            f"{s['val_mean']:.4f} +- {s['val_std']:.4f} (min {s['val_min']:.4f}, "
            f"max {s['val_max']:.4f}) over {s['seeds']} seeds, {s['seconds_mean']:.0f} s/run"
        )
    print(f"wrote {args.out_dir}/compare.md, compare.json, compare.png")
    return 0


HANDLERS = {
    "eval": _eval,
    "plot": _plot,
    "cells": _cells,
    "guesses": _guesses,
    "temperatures": _temperatures,
    "compare": _compare,
}
