"""Every option of every subcommand at its edges, generated from the command-line
definitions (cli.build_parser), not written case by case.

Each numeric option gets zero, a negative value, NaN, infinities and huge values;
each path option a missing path, a folder, a file and an unwritable place. Every
case runs `main()` in this process on a tiny corpus and checkpoint and must end in
exit status 0, or 2 with exactly one line `charrnn-fast: error: ...`, never a
traceback; a value that the option's declared range refuses must be refused at
parse time with a line naming the option. A case that is accepted and would run
long (`--max_iters 1e9`) is cut after a few seconds by an alarm, which counts as
accepted. An option of no known kind fails the test: a new option must declare
what it accepts.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
from pathlib import Path

import pytest

from charrnn_fast.charrnn.cli import build_parser, main
from charrnn_fast.charrnn.options import Number, PathArg, Text
from tests.charrnn.test_cli import TEXT

INT_VALUES = ("0", "-1", "nan", "inf", str(10**12), str(2**64))
FLOAT_VALUES = ("0", "-1", "nan", "inf", "-inf", "1e9", "1e300")
PATH_CASES = ("missing", "folder", "file", "unwritable")
BUDGET_S = 4  # an accepted case still running after this is cut (exit 130)
TINY = ["--rnn_size", "8", "--num_layers", "1", "--batch_size", "2", "--seq_length", "8"]
TINY += ["--embedding_dim", "4", "--device", "cpu", "--no-progress", "--no-tensorboard"]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def value_actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions that take a value (flags and --help aside)."""
    return [a for a in p._actions if a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


def kind(action: argparse.Action) -> str:
    if isinstance(action.type, Number):
        return "number"
    if isinstance(action.type, PathArg):
        return "path"
    if isinstance(action.type, Text) or action.choices is not None:
        return "text"
    if action.dest in ("device", "text"):  # resolved by devices.py / visualize.read_text
        return "text"
    return "unknown"


def test_every_option_declares_what_it_accepts():
    unknown = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in subparsers().items()
        for a in value_actions(p)
        if kind(a) == "unknown"
    ]
    assert not unknown, f"options without a declared kind: {unknown}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A prepared corpus and a trained run, shared by every case."""
    root = tmp_path_factory.mktemp("edges")
    (root / "in.txt").write_text(TEXT)
    (root / "afile.txt").write_text("a file")
    assert (
        main(["prepare", str(root / "in.txt"), "--out", str(root / "data"), "--no-progress"]) == 0
    )
    argv = ["train", "--data_dir", str(root / "data"), "--checkpoint_dir", str(root / "cv")]
    assert main([*argv, *TINY, "--max_iters", "4", "--eval_val_every", "2"]) == 0
    return {"root": root, "data": str(root / "data"), "cv": str(root / "cv")}


_counter = itertools.count()


def base_argv(command: str, w: dict) -> list[str]:
    """A command line of `command` that succeeds quickly; fresh output paths per case."""
    root, n = w["root"], next(_counter)
    out = str(root / f"out{n}")
    cv, data = w["cv"], w["data"]
    short = ["--max_iters", "2", "--eval_val_every", "2"]
    compare = ["--models", "lstm", "--seeds", "1", "--params", "400", "--batch_size", "2"]
    return {
        "prepare": ["prepare", str(root / "in.txt"), "--out", out, "--no-progress"],
        "train": ["train", "--data_dir", data, "--checkpoint_dir", out, *TINY, *short],
        "sample": ["sample", cv, "-n", "5", "--seed", "1"],
        "visualize": ["visualize", cv, "--text", "It was", "--literal", "--out", out + ".html"],
        "eval": ["eval", cv, "--batch_size", "2", "--seq_length", "8"],
        "plot": ["plot", cv, "--out", out + ".png"],
        "cells": ["cells", cv, "--text", "It was the best", "--literal", "--out", out + ".html"],
        "guesses": ["guesses", cv, "--text", "It was", "--literal", "--out", out + ".html"],
        "temperatures": ["temperatures", cv, "-n", "5", "-t", "0.5", "--out", out + ".html"],
        "compare": [
            "compare",
            "--data_dir",
            data,
            "--out_dir",
            out,
            *compare,
            *short,
            "--seq_length",
            "8",
        ],
    }[command]


def with_value(argv: list[str], action: argparse.Action, value: str) -> list[str]:
    """`argv` with `action` set to `value` (replacing what argv gave it)."""
    count = action.nargs if isinstance(action.nargs, int) else 1
    if not action.option_strings:  # a positional: the first one of the base line
        pos = 1
        return argv[:pos] + [value] * count + argv[pos + 1 :]
    out, i = [], 0
    while i < len(argv):
        if argv[i] in action.option_strings:
            i += 1
            while i < len(argv) and not (
                argv[i].startswith("-") and _parsed(argv[i], float) is None
            ):
                i += 1
            continue
        out.append(argv[i])
        i += 1
    return out + [action.option_strings[0]] + [value] * count


def run_within(argv: list[str], capsys, seconds: float = BUDGET_S) -> tuple[int, str, str]:
    """`run(argv)`, interrupted (as by Ctrl-C, repeated each second) when it still
    runs after `seconds`."""
    armed = [True]

    def ring(signum, frame):
        if armed[0]:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        code = main(argv)
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    return code, out, err


def check_outcome(code: int, err: str, argv: list[str], refused_by_range: str | None) -> None:
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2, 130), (argv, code, err)
    errors = [line for line in err.splitlines() if line.startswith("charrnn-fast: error:")]
    if code == 2:
        assert len(errors) == 1, (argv, err)
    if refused_by_range is not None:
        assert code == 2 and refused_by_range in errors[0], (argv, err)


def numeric_cases():
    for name, p in subparsers().items():
        for a in value_actions(p):
            if kind(a) == "number":
                values = INT_VALUES if a.type.kind is int else FLOAT_VALUES
                yield pytest.param(name, a.dest, values, id=f"{name}-{a.dest}")


@pytest.mark.parametrize("command, dest, values", list(numeric_cases()))
def test_numeric_option_edges(world, capsys, command, dest, values):
    action = next(a for a in value_actions(subparsers()[command]) if a.dest == dest)
    for value in values:
        argv = with_value(base_argv(command, world), action, value)
        number = _parsed(value, action.type.kind)
        refused = number is None or action.type.problem(number) is not None
        code, _, err = run_within(argv, capsys)
        flag = action.option_strings[0] if action.option_strings else action.dest
        check_outcome(code, err, argv, f"argument {flag}" if refused else None)
        if refused:
            assert "expected" in err or "is not" in err, err


def _parsed(text: str, kind_: type) -> float | None:
    try:
        v = kind_(text)
    except ValueError:
        return None
    return v if kind_ is int or math.isfinite(v) else None


def path_cases():
    for name, p in subparsers().items():
        for a in value_actions(p):
            if kind(a) == "path":
                yield pytest.param(name, a.dest, id=f"{name}-{a.dest}")


def _unwritable(root: Path) -> str:
    if os.geteuid() != 0:
        locked = root / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        return str(locked / "x")
    return "/sys/charrnn_edges_unwritable"  # sysfs: not even root creates files there


@pytest.mark.parametrize("command, dest", list(path_cases()))
def test_path_option_edges(world, capsys, command, dest):
    action = next(a for a in value_actions(subparsers()[command]) if a.dest == dest)
    root = world["root"]
    for case in PATH_CASES:
        n = next(_counter)
        (root / f"empty{n}").mkdir()
        value = {
            "missing": str(root / f"missing{n}" / "place"),  # fresh: a case may create it
            "folder": str(root / f"empty{n}"),
            "file": str(root / "afile.txt"),
            "unwritable": _unwritable(root),
        }[case]
        argv = with_value(base_argv(command, world), action, value)
        code, _, err = run_within(argv, capsys)
        check_outcome(code, err, argv, None)
        if action.type.role == "out" and case == "unwritable":
            assert code == 2, (argv, err)


TEXT_VALUES = ("", "\udcff", "x" * 5000, "-")  # empty, a non-UTF-8 byte, long, a dash


def text_cases():
    for name, p in subparsers().items():
        for a in value_actions(p):
            if kind(a) == "text" and a.choices is None:
                yield pytest.param(name, a.dest, id=f"{name}-{a.dest}")


@pytest.mark.parametrize("command, dest", list(text_cases()))
def test_text_option_edges(world, capsys, command, dest):
    action = next(a for a in value_actions(subparsers()[command]) if a.dest == dest)
    for value in TEXT_VALUES:
        argv = with_value(base_argv(command, world), action, value)
        code, _, err = run_within(argv, capsys)
        check_outcome(code, err, argv, None)
        if value == "\udcff" and isinstance(action.type, Text):
            assert code == 2 and "not valid UTF-8" in err, (argv, err)
