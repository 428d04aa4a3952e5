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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import config, providers, report, sampling, timing
from bench.check import Checker


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def pair(
    prov: str, base: str, shape: config.Shape, mode: str, rounds: int, seed: int, clock
) -> dict:
    """Time `prov` and `base` alternately; medians in ms and the per-round ratio."""
    make = (
        (lambda p: sampling.workload(p, shape, "cpu", seed)[0])
        if mode == "sample"
        else (lambda p: providers.workload(p, mode, shape, "float32", "cpu", seed=seed)[0])
    )
    fns = {base: make(base), prov: make(prov)}
    for f in fns.values():  # warm-up (first calls pack, allocate, compile)
        f()
        f()
    times: dict[str, list[float]] = {base: [], prov: []}
    for r in range(rounds):
        order = (base, prov) if r % 2 == 0 else (prov, base)
        for p in order:
            t0 = clock()
            fns[p]()
            times[p].append((clock() - t0) * 1e3)
    ratios = [b / a for a, b in zip(times[prov], times[base])]
    flops = config.flops(shape, mode)
    out = {"shape": shape.name, "spec": shape.spec, "mode": mode, "rounds": rounds}
    for p, key in ((base, "base"), (prov, "prov")):
        med = statistics.median(times[p])
        out[key] = {"provider": p, "median_ms": med, "p20_ms": _quantile(times[p], 0.2),
                    "p80_ms": _quantile(times[p], 0.8),
                    "gflops": flops / (med / 1e3) / 1e9}  # fmt: skip
    out["speedup_of_medians"] = out["base"]["median_ms"] / out["prov"]["median_ms"]
    out["speedup_median_of_ratios"] = statistics.median(ratios)
    out["speedup_p20_p80"] = (_quantile(ratios, 0.2), _quantile(ratios, 0.8))
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
    p.add_argument("--md", help="write the markdown table here")
    p.add_argument("--json", help="write the rows and header here")
    args = p.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu needs --threads 1 (other threads' work is not counted)")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    timing.steady_cpu_allocator()
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
        f"{args.threads} thread(s), {args.clock} clock, {args.rounds} rounds per row "
        "(calls alternate A B B A ...); "
        f"load average (1, 5, 15 min) {' '.join(header['loadavg_start'])} at start, "
        f"{' '.join(header['loadavg_end'])} at end; measured peak {peak:.0f} GFLOP/s "
        f"({header['peak_method']})",
        "",
        "| mode | shape | L×H:B:T | baseline ms (p20-p80) | ours ms (p20-p80) | baseline GFLOP/s "
        "| ours GFLOP/s | ours % peak | speed-up: median of ratios (p20-p80) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
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
