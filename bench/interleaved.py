#!/usr/bin/env python
"""A provider against the baseline, interleaved call by call, for a shared (noisy) machine.

    python bench/interleaved.py --shapes char-rnn,blog --modes fwd,fwdbwd,train \\
        --provider cpu --rounds 21 --md out.md --json out.json

bench/run.py times one row after the other, so a burst of other work on the
machine lands on whichever row is running. Here the two workloads alternate
(A B B A A B ...) within one process, every call is timed, and each row reports
the medians, p20/p80, and the median of the per-round ratios. Both workloads
are checked first exactly as in bench/run.py. Same providers, shapes, modes and
arithmetic (bench/config.flops) as bench/run.py; see bench/README.md.

In one process, what one workload allocates changes how glibc serves the other
(and the harness pins glibc's mmap threshold). `--fresh N` measures instead what
a user's own process sees: N fresh processes per workload, alternating, each
with glibc at its defaults, timing `--calls` calls after warm-up and counting
the page faults they take; the ratio is then per pair of processes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import config, providers, report, sampling, timing
from bench.check import Checker


def _make(p: str, shape: config.Shape, mode: str, seed: int):
    if mode == "sample":
        return sampling.workload(p, shape, "cpu", seed)[0]
    return providers.workload(p, mode, shape, "float32", "cpu", seed=seed)[0]


def _row(prov: str, base: str, shape: config.Shape, mode: str, rounds: int,
         times: dict[str, list[float]], seed: int) -> dict:  # fmt: skip
    """Medians and p20/p80 of each side's times (ms), and of the per-round ratios."""
    ratios = [b / a for a, b in zip(times[prov], times[base])]
    flops = config.flops(shape, mode, seed)
    out = {"shape": shape.name, "spec": shape.spec, "mode": mode, "rounds": rounds}
    for p, key in ((base, "base"), (prov, "prov")):
        med, p20, p80 = timing.quantiles(times[p])
        out[key] = {"provider": p, "median_ms": med, "p20_ms": p20, "p80_ms": p80,
                    "gflops": flops / (med / 1e3) / 1e9}  # fmt: skip
    out["speedup_of_medians"] = out["base"]["median_ms"] / out["prov"]["median_ms"]
    med, p20, p80 = timing.quantiles(ratios)  # the median is report._speedup's
    out["speedup_median_of_ratios"] = med
    out["speedup_p20_p80"] = (p20, p80)
    return out


def pair(
    prov: str, base: str, shape: config.Shape, mode: str, rounds: int, seed: int, clock
) -> dict:
    """Time `prov` and `base` alternately; medians in ms and the per-round ratio."""
    fns = {base: _make(base, shape, mode, seed), prov: _make(prov, shape, mode, seed)}
    times = timing.alternate(fns, rounds=rounds, clock=clock)  # warms up each first
    return _row(prov, base, shape, mode, rounds, times, seed)


_WARMUP_CALLS = 5  # a fresh process: packing, first allocations, the allocator settling
_CHILD_TIMEOUT_S = 3600  # one fresh process; a hung one must not hang the whole run


def _child(p: str, shape: config.Shape, mode: str, calls: int, seed: int, clock) -> None:
    """In a fresh process: `calls` timed calls of one workload after warm-up; prints
    the median ms and the page faults per call as one JSON line."""
    f = _make(p, shape, mode, seed)
    for _ in range(_WARMUP_CALLS):
        f()
    faults0, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
    for _ in range(calls):
        t0 = clock()
        f()
        times.append((clock() - t0) * 1e3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    print(json.dumps({"median_ms": statistics.median(times), "faults_per_call": faults / calls}))


def pair_fresh(prov: str, base: str, shape: config.Shape, mode: str, procs: int,
               args: argparse.Namespace) -> dict:  # fmt: skip
    """`procs` fresh processes per side, alternating (A B B A ...); each gives its
    median ms, and the row is over those medians (ratios per pair of processes)."""
    times: dict[str, list[float]] = {base: [], prov: []}
    faults: dict[str, list[float]] = {base: [], prov: []}
    for r in range(procs):
        for p in (base, prov) if r % 2 == 0 else (prov, base):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", p, "--modes", mode,
                   "--shapes", shape.spec, "--calls", str(args.calls), "--threads",
                   str(args.threads), "--seed", str(args.seed), "--clock", args.clock]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S)
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:
                raise RuntimeError(
                    f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}"
                )
            got = json.loads(lines[-1])
            times[p].append(got["median_ms"])
            faults[p].append(got["faults_per_call"])
    out = _row(prov, base, shape, mode, procs, times, args.seed)
    for p, key in ((base, "base"), (prov, "prov")):
        out[key]["faults_per_call"] = faults[p]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--provider", default="cpu")
    p.add_argument("--shapes", default=",".join(config.DEFAULT_SHAPES))
    p.add_argument("--modes", default=",".join(config.DEFAULT_MODES))
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the calling thread, which other\n"
        "processes do not inflate (only with --threads 1, where all work runs there)",
    )
    p.add_argument(
        "--fresh",
        type=int,
        default=0,
        metavar="N",
        help="N fresh processes per workload instead of calls in this one\n"
        "(glibc at its defaults, as in a user's process; page faults counted)",
    )
    p.add_argument("--calls", type=int, default=20, help="timed calls per fresh process")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one --fresh process: this provider
    p.add_argument("--md", help="write the markdown table here")
    p.add_argument("--json", help="write the rows and header here")
    args = p.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu needs --threads 1 (other threads' work is not counted)")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    if args.child:
        _child(args.child, config.parse_shape(args.shapes), args.modes, args.calls, args.seed,
               clock)  # fmt: skip
        return 0
    if args.fresh < 0 or args.calls < 1:
        p.error("--fresh must be >= 0 and --calls >= 1")
    timing.steady_cpu_allocator()  # this process's rows (and checks); children keep glibc's
    base = providers.BASELINE["cpu"]
    header = report.environment("cpu", ["bench/interleaved.py", *(argv or sys.argv[1:])])
    header["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    peak, header["peak_method"] = timing.fma_peak_gflops(2.0)
    header["peak_gflops"] = peak
    checker, rows = Checker(seed=args.seed), []
    for mode in config.split_list(args.modes):
        for name in config.split_list(args.shapes):
            shape = config.parse_shape(name)
            label = f"{args.provider} vs {base} {mode} {shape.name} ({shape.spec})"
            if mode == "sample":
                wrong = sampling.check(args.provider, base, shape, "cpu", args.seed)
            else:
                v = checker.check(args.provider, shape, "float32", "cpu", mode)
                wrong = None if v.ok else v.describe()
            if wrong is not None:
                report.progress(f"{label}: DISAGREES: {wrong}")
                return 1
            if args.fresh:
                try:
                    row = pair_fresh(args.provider, base, shape, mode, args.fresh, args)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    report.progress(f"{label}: a fresh process failed: {e}")
                    return 1
            else:
                row = pair(args.provider, base, shape, mode, args.rounds, args.seed, clock)
            rows.append(row)
            report.progress(
                f"{label}: {row['base']['median_ms']:.4g} / {row['prov']['median_ms']:.4g} ms, "
                f"speed-up {row['speedup_median_of_ratios']:.3f}x "
                f"(p20-p80 {row['speedup_p20_p80'][0]:.2f}-{row['speedup_p20_p80'][1]:.2f})"
            )
    header["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    lines = [
        f"## {args.provider} vs {base}, interleaved: {header['device']}",
        "",
        f"{header['date']}, git {(header['git_sha'] or '?')[:12]}"
        f"{' (dirty)' if header['git_dirty'] else ''}, torch {header['torch']}, "
        f"{args.threads} thread(s), {args.clock} clock, "
        + (
            f"{args.fresh} fresh processes per side and row, each timing {args.calls} calls "
            f"after {_WARMUP_CALLS} (processes alternate A B B A ...; glibc's defaults); "
            if args.fresh
            else f"{args.rounds} rounds per row (calls alternate A B B A ...); "
        )
        + f"load average (1, 5, 15 min) {' '.join(header['loadavg_start'])} at start, "
        f"{' '.join(header['loadavg_end'])} at end; measured peak {peak:.0f} GFLOP/s "
        f"({header['peak_method']})",
        "",
        "| mode | shape | L×H:B:T | baseline ms (p20-p80) | ours ms (p20-p80) | baseline GFLOP/s "
        "| ours GFLOP/s | ours % peak | speed-up: median of ratios (p20-p80) |"
        + (" page faults per call: baseline, ours (median) |" if args.fresh else ""),
        "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.fresh else ""),
    ]
    for r in rows:
        b, o = r["base"], r["prov"]
        lines.append(
            f"| {r['mode']} | {r['shape']} | {r['spec']} "
            f"| {b['median_ms']:.4g} ({b['p20_ms']:.4g}-{b['p80_ms']:.4g}) "
            f"| {o['median_ms']:.4g} ({o['p20_ms']:.4g}-{o['p80_ms']:.4g}) "
            f"| {b['gflops']:.0f} | {o['gflops']:.0f} | {100 * o['gflops'] / peak:.0f}% "
            f"| {r['speedup_median_of_ratios']:.2f}× ({r['speedup_p20_p80'][0]:.2f}-"
            f"{r['speedup_p20_p80'][1]:.2f}) |"
            + (
                f" {statistics.median(b['faults_per_call']):,.0f}, "
                f"{statistics.median(o['faults_per_call']):,.0f} |"
                if args.fresh
                else ""
            )
        )
    table = "\n".join(lines)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
