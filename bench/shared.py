"""Throughput on a shared machine: one training-like loop (LSTM forward and
backward) alone, next to a busy loop, and next to a second copy of itself,
with torch's thread count fixed or following the free cores
(charrnn_fast.threads.FreeCores, what `charrnn-fast train` does by default).

    python -m bench.shared [--seconds 20] [--shape 2x256:64:64] [--json PATH]

Prints iterations per second of the measured process in each case and its
share of the speed alone; the cores taken by the neighbour bound what is fair
(one of two cores taken: 50%).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time

import torch

from bench import config


def _loop(spec: str, seconds: float, follow: bool, out: mp.Queue | None) -> float:
    """Forward + backward of charrnn_fast.LSTM on `spec` for `seconds`; iterations/s."""
    import charrnn_fast
    from charrnn_fast.threads import FreeCores

    shape = config.parse_shape(spec)
    torch.manual_seed(0)
    m = charrnn_fast.LSTM(shape.input_size, shape.hidden, shape.layers)
    x = torch.randn(shape.seq, shape.batch, shape.input_size, requires_grad=True)
    threads = FreeCores(period=1.0) if follow else None
    for _ in range(3):  # warm-up (and the dispatch's first-call measurement)
        m(x)[0].sum().backward()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if threads is not None:
            threads.update()
        m(x)[0].sum().backward()
        n += 1
    rate = n / (time.perf_counter() - t0)
    if out is not None:
        out.put(rate)
    return rate


def _busy(stop: mp.Event) -> None:
    while not stop.is_set():
        pass


def measure(spec: str, seconds: float) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for follow in (False, True):
        label = "free cores" if follow else f"fixed {torch.get_num_threads()} threads"
        alone = _loop(spec, seconds, follow, None)
        rows.append({"threads": label, "neighbour": "none", "it_s": alone, "share": 1.0})
        stop = ctx.Event()
        busy = ctx.Process(target=_busy, args=(stop,))
        busy.start()
        try:
            rate = _loop(spec, seconds, follow, None)
        finally:
            stop.set()
            busy.join()
        rows.append({"threads": label, "neighbour": "busy loop (1 core)", "it_s": rate,
                     "share": rate / alone})  # fmt: skip
        q = ctx.Queue()
        twin = ctx.Process(target=_loop, args=(spec, seconds, follow, q))
        twin.start()
        rate = _loop(spec, seconds, follow, None)
        twin.join()
        other = q.get()
        rows.append({"threads": label, "neighbour": "a second copy", "it_s": rate,
                     "share": rate / alone, "other_it_s": other})  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--shape", default="2x256:64:64")
    p.add_argument("--json")
    args = p.parse_args()
    rows = measure(args.shape, args.seconds)
    print(f"{args.shape}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print("| threads | neighbour | it/s | share of alone |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['neighbour']} | {r['it_s']:.2f} | {r['share']:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": args.shape, "loadavg_end": os.getloadavg(), "rows": rows}, f,
                      indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
