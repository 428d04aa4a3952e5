#!/usr/bin/env python
"""Throughput of charrnn_fast's LSTM backends against cuDNN / nn.LSTM.

    python bench/run.py                       # default grid on the GPU, else the CPU
    python bench/run.py --quick               # one small shape, few reps (CI)
    python bench/run.py --providers cudnn,cuda --shapes blog,2x256:32:64 --modes fwd \
        --dtypes bf16 --json out.json --csv out.csv --md out.md --plot out.png
    python bench/run.py --compare A.json B.json

Every provider is checked against a float64 oracle on each configuration
before it is timed (bench/check.py); one that disagrees is reported, not timed.
The markdown table is printed last on stdout; progress goes to stderr. The exit
status is 1 when a row disagrees or errs. Schema and conventions: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import config, providers, report, sampling, timing
from bench.check import Checker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--providers", help="comma list (default: the device's baseline + usable backends)"
    )
    p.add_argument(
        "--shapes",
        help=f"comma list of presets ({', '.join(config.PRESETS)}) or LxH:B:T[pP][v] "
        "(p: proj_size P; v: variable lengths, packed)",
    )
    p.add_argument(
        "--modes",
        help=f"comma list of {', '.join(config.MODES)} (default: "
        f"{','.join(config.DEFAULT_MODES)}; sample: decoding tokens/s, on its own shapes "
        f"{','.join(config.SAMPLE_SHAPES)} unless --shapes names others)",
    )
    p.add_argument("--dtypes", help="comma list (default: float32,bfloat16; --quick: float32)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--quick", action="store_true", help="one small shape, float32, few reps")
    p.add_argument("--json", metavar="PATH", help="write rows + header as JSON")
    p.add_argument("--csv", metavar="PATH", help="write rows as CSV (header as # comments)")
    p.add_argument("--md", metavar="PATH", help="write the markdown table")
    p.add_argument("--plot", metavar="PATH", help="PNG of speed-up over the baseline per shape")
    p.add_argument(
        "--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two runs, time nothing"
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU providers")
    p.add_argument("--tf32", choices=("off", "on"), default="off",
                   help="TF32 in cuDNN and cuBLAS fp32 math (off: true fp32)")  # fmt: skip
    p.add_argument(
        "--reference-any-size", action="store_true", help="time `reference` on any shape"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list providers and shapes, time nothing")
    return p.parse_args(argv)


def _plan(
    args: argparse.Namespace,
) -> tuple[str, list[str], list[config.Shape], list[str], list[str], list[str]]:
    """(device, providers, shapes, modes, dtypes, notes) from the arguments."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    notes: list[str] = []
    if args.providers:
        provs = config.split_list(args.providers)
        unknown = [p for p in provs if p not in providers.known()]
        if unknown:
            raise SystemExit(
                f"--providers: unknown {unknown}; known: {', '.join(providers.known())}"
            )
    else:
        provs, notes = providers.default_providers(device)
    default_shapes = config.QUICK_SHAPES if args.quick else config.DEFAULT_SHAPES
    sample_default = config.QUICK_SAMPLE_SHAPES if args.quick else config.SAMPLE_SHAPES
    default_dtypes = ["float32"] if args.quick else ["float32", "bfloat16"]
    try:
        shapes = [config.parse_shape(s) for s in config.split_list(args.shapes) or default_shapes]
        args.sample_shapes = [
            config.parse_shape(s) for s in config.split_list(args.shapes) or sample_default
        ]
        modes = [
            config.parse_mode(m) for m in config.split_list(args.modes) or config.DEFAULT_MODES
        ]
        dtypes = [config.parse_dtype(d) for d in config.split_list(args.dtypes) or default_dtypes]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    # Each configuration once (a row is found again by its sizes: report.config_key).
    shapes, args.sample_shapes = _unique(shapes), _unique(args.sample_shapes)
    modes = list(dict.fromkeys(modes))
    # The baseline first: each group of rows in the table then starts with it.
    provs.sort(key=lambda p: p not in providers.BASELINE.values())
    return device, list(dict.fromkeys(provs)), shapes, modes, list(dict.fromkeys(dtypes)), notes


def _unique(shapes: list[config.Shape]) -> list[config.Shape]:
    """The first of the shapes with the same sizes (`tiny` and `2x64:16:32` are one)."""
    seen: dict[tuple, config.Shape] = {}
    for s in shapes:
        seen.setdefault((s.layers, s.hidden, s.input_size, s.batch, s.seq, s.proj, s.varlen), s)
    return list(seen.values())


def _row(provider: str, mode: str, dtype: str, shape: config.Shape, device: str) -> dict:
    row = dict.fromkeys(report.ROW_FIELDS)
    row.update(provider=provider, device=providers.device_of(provider, device).type, mode=mode,
               dtype=dtype, shape=shape.name, layers=shape.layers, hidden=shape.hidden,
               input_size=shape.input_size, batch=shape.batch, seq=shape.seq, proj=shape.proj,
               varlen=shape.varlen, note="")  # fmt: skip
    return row


def _prepare(row: dict, args: argparse.Namespace, shape: config.Shape, device: str,
             checker: Checker, label: str) -> Callable[[], object] | None:  # fmt: skip
    """Skip or check one row; the step to time when it passes (else the row says
    why not). Its first call is made here, so a step that fails errs its own row."""
    prov, mode, dtype = row["provider"], row["mode"], row["dtype"]
    reason = providers.skip_reason(prov, shape, dtype, device, args.reference_any_size)
    if reason is None and mode == "sample" and dtype != "float32":
        reason = "sample mode runs float32 only"
    if reason is None and mode == "sample" and (shape.proj or shape.varlen):
        reason = "sample mode decodes plain shapes only (no projection, no variable lengths)"
    if reason is not None:
        row.update(status="skipped", note=reason)
        report.progress(f"{label}: skipped: {reason}")
        return None
    t0 = time.perf_counter()
    if mode == "sample":
        base = providers.BASELINE[device]
        wrong = None if prov == base else sampling.check(prov, base, shape, device, args.seed)
    else:
        verdict = checker.check(prov, shape, dtype, device, mode)
        row.update(max_err=verdict.err, tol=verdict.tol, check_seq=verdict.seq,
                   oracle=verdict.oracle)  # fmt: skip
        wrong = None if verdict.ok else verdict.describe()
    if wrong is not None:
        row.update(status="disagrees", note=wrong)
        report.progress(f"{label}: DISAGREES: {wrong}")
        return None
    if mode == "sample":
        fn, note = sampling.workload(prov, shape, device, seed=args.seed)
    else:
        fn, note = providers.workload(prov, mode, shape, dtype, device, seed=args.seed)
    fn()
    row["note"] = note
    report.progress(f"{label}: checked in {time.perf_counter() - t0:.1f} s")
    return fn


def _fill(row: dict, t: timing.Timing, fn: Callable[[], object], shape: config.Shape,
          device: str, peak: float | None, label: str, seed: int) -> None:  # fmt: skip
    """A timed row's figures, from its timing and one more call for peak memory.
    tokens/s and GFLOP/s count the valid positions only (config.tokens)."""
    dev = providers.device_of(row["provider"], device)
    mem, mem_how = timing.peak_memory_mb(fn, dev)
    L, T = shape.layers, shape.seq
    row.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, samples=t.samples,
               timer=t.method, us_per_layer_step=t.median_ms * 1e3 / (L * T),
               tokens_per_s=config.tokens(shape, seed) / (t.median_ms / 1e3), peak_mem_mb=mem,
               status="ok")  # fmt: skip
    row["gflops"] = config.flops(shape, row["mode"], seed) / (t.median_ms / 1e3) / 1e9
    row["peak_fraction"] = row["gflops"] / peak if peak else None
    row["spread"] = (t.p80_ms - t.p20_ms) / t.median_ms
    row["note"] = "; ".join(x for x in (row["note"], f"peak mem: {mem_how}") if x)
    report.progress(f"{label}: {t.median_ms:.4g} ms ({t.samples or '?'} samples)")
    if report.is_noisy(row):
        report.progress(
            f"WARNING: {row['provider']} {row['mode']} {shape.name}: p20-p80 spread "
            f"{row['spread']:.0%} > {report.NOISY_SPREAD:.0%} of the median: noisy, rerun "
            "on a quieter machine"
        )


def _error(row: dict, label: str, exc: Exception) -> None:
    """An `error` row; the traceback goes to stderr."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    row.update(status="error", note=f"{type(exc).__name__}: {first}")
    report.progress(f"{label}: ERROR\n{traceback.format_exc()}")


def _time_group(group: dict[str, tuple[dict, Callable[[], object], str]], device: str,
                shape: config.Shape, budget: timing.Budget, peak: float | None,
                seed: int) -> None:  # fmt: skip
    """Time the checked rows of one (dtype, shape, mode). CPU rows: their calls
    interleave (timing.alternate), so the machine's drift, which on a shared VM
    can exceed the difference between providers, lands on all of them alike; the
    speed-up is then the median of per-round ratios (report.add_speedups). A
    provider that fails there errs its own row, and the others are timed again
    without it. GPU rows: each on its own (timing.time_step: do_bench)."""
    on_cpu = {p: v for p, v in group.items() if providers.device_of(p, device).type == "cpu"}
    times: dict[str, list[float]] = {}
    while on_cpu and not times:
        try:
            times = timing.alternate({p: fn for p, (_, fn, _) in on_cpu.items()}, budget)
        except timing.WorkloadFailed as e:
            row, _, label = on_cpu.pop(e.name)
            _error(row, label, e.__cause__ or e)
    others = len(on_cpu) - 1
    how = f"interleaved per call with {others} other provider(s)" if others else "per call"
    for p, (row, fn, label) in group.items():
        try:
            if p in on_cpu:
                _fill(row, timing.summarize(times[p], how), fn, shape, device, peak, label, seed)
                row["times_ms"] = times[p]
            elif row["status"] is None:  # not a CPU row that failed above
                t = timing.time_step(fn, providers.device_of(p, device), budget)
                _fill(row, t, fn, shape, device, peak, label, seed)
        except Exception as exc:
            _error(row, label, exc)


@contextlib.contextmanager
def _settings(args: argparse.Namespace) -> Iterator[None]:
    """Threads and TF32 as asked for the run, restored after (run() may be called in-process)."""
    saved = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32)
    tf32 = args.tf32 == "on"
    # cudnn's flags through their context manager: a process that imported
    # torch.testing._internal (its test utilities freeze plain assignment) can run this too.
    try:
        with torch.backends.cudnn.flags(
            enabled=torch.backends.cudnn.enabled, allow_tf32=tf32,
            benchmark=torch.backends.cudnn.benchmark,
            deterministic=torch.backends.cudnn.deterministic,
        ):  # fmt: skip
            if args.threads:
                torch.set_num_threads(args.threads)
            torch.backends.cuda.matmul.allow_tf32 = tf32
            timing.steady_cpu_allocator()
            yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32 = saved[1]


def _eta(done: int, total: int, elapsed_s: float) -> str:
    """', ETA 3m05s' from the mean time of the rows done so far ('' before the first):
    progress lines in a log say when the run will end."""
    if done == 0:
        return ""
    m, s = divmod(round(elapsed_s / done * (total - done)), 60)
    return f", ETA {m}m{s:02d}s"


def run(args: argparse.Namespace, argv: list[str]) -> tuple[list[dict], dict]:
    """Every (dtype, shape, mode, provider) row, speed-ups filled in, and the header."""
    device, provs, shapes, modes, dtypes, notes = _plan(args)
    plan_for = [(s.batch, s.hidden, config.DTYPES[d]) for d in dtypes for s in shapes]
    header = report.environment(device, ["bench/run.py", *argv], plan_for)
    header["notes"] = notes
    for n in notes:
        report.progress(n)
    checker = Checker(seed=args.seed)
    rows: list[dict] = []
    header["loadavg"] = _loadavg()
    peak = None
    if device == "cpu":
        peak, header["peak_method"] = timing.fma_peak_gflops(0.3 if args.quick else 2.0)
        header["peak_gflops"] = peak
        report.progress(f"measured peak: {peak:.0f} GFLOP/s ({header['peak_method']})")
    if "sample" in modes:
        header["startup"] = sampling.startup_times(1 if args.quick else 3)
        report.progress(f"start-up: {header['startup']}")
    lstm_modes = [m for m in modes if m != "sample"]
    grid = list(itertools.product(dtypes, shapes, lstm_modes, provs))
    if "sample" in modes:
        grid += list(itertools.product(dtypes, args.sample_shapes, ["sample"], provs))
    t0 = time.perf_counter()
    budget = timing.QUICK if args.quick else timing.Budget()
    for (dtype, shape, mode), members in itertools.groupby(grid, key=lambda g: g[:3]):
        group: dict[str, tuple[dict, Callable[[], object], str]] = {}
        for *_, prov in members:
            row = _row(prov, mode, dtype, shape, device)
            rows.append(row)
            eta = _eta(len(rows) - 1, len(grid), time.perf_counter() - t0)
            label = (
                f"[{len(rows)}/{len(grid)}{eta}] {prov} {mode} {dtype} {shape.name} ({shape.spec})"
            )
            try:
                fn = _prepare(row, args, shape, device, checker, label)
                if fn is not None:
                    group[prov] = (row, fn, label)
            except Exception as exc:
                _error(row, label, exc)
        try:
            _time_group(group, device, shape, budget, peak, args.seed)  # errs failing rows
        finally:
            group.clear()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    report.add_speedups(rows, providers.BASELINE)
    header["loadavg"] = f"{header['loadavg']} / {_loadavg()}"
    return rows, header


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.compare:
        from bench.compare import compare

        print(compare(*args.compare)[0])
        return 0
    if args.list:
        print("providers:", ", ".join(providers.known()))
        for name, s in config.PRESETS.items():
            print(
                f"shape {name}: {s.spec} (layers x hidden : batch : steps[pP][v]), input = hidden"
            )
        return 0
    with _settings(args):
        rows, header = run(args, argv)
    table = report.markdown(rows, header)
    if args.json:
        report.write_json(args.json, header, rows)
    if args.csv:
        report.write_csv(args.csv, header, rows)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(table + "\n")
    if args.plot:
        from bench.plot import plot

        plot(
            rows,
            args.plot,
            f"{header['device']} ({header['date'][:10]}, git {(header['git_sha'] or '?')[:8]})",
        )
    print(table)
    bad = [r for r in rows if r["status"] in ("disagrees", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
