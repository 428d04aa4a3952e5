"""Timing and peak memory of one step.

GPU: triton.testing.do_bench (median, p20, p80 from its quantiles; it clears the
L2 cache before every run) when triton imports, else CUDA events around each
run with the same L2 clearing. CPU: the workloads being compared interleaved
call by call (alternate), each call timed. Callers cycle over several input
sets inside the step, so no run finds its inputs in cache from the run before.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples: int | None  # None where the timer does not say (do_bench)
    method: str


@dataclass(frozen=True)
class Budget:
    """How long to time: GPU warm-up and repetition in ms, CPU run time in s."""

    gpu_warmup_ms: int = 25
    gpu_rep_ms: int = 200
    gpu_min_samples: int = 20
    gpu_max_rep_ms: int = 10_000
    cpu_min_run_s: float = 1.0
    cpu_min_samples: int = 5
    cpu_max_run_s: float = 60.0


# --quick still takes MIN_SAMPLES samples: a median of one or two timings is
# no median, and a speed-up from it is noise (report.add_speedups refuses it).
MIN_SAMPLES = 5
QUICK = Budget(gpu_warmup_ms=5, gpu_rep_ms=20, gpu_min_samples=MIN_SAMPLES, gpu_max_rep_ms=1000,
               cpu_min_run_s=0.05, cpu_min_samples=MIN_SAMPLES, cpu_max_run_s=2.0)  # fmt: skip


def quantiles(times_ms: list[float]) -> tuple[float, float, float]:
    """Median, p20 and p80 (inclusive deciles) of per-call times or ratios."""
    if len(times_ms) == 1:
        return times_ms[0], times_ms[0], times_ms[0]
    q = statistics.quantiles(times_ms, n=10, method="inclusive")  # deciles: q[1]=p20, q[7]=p80
    return statistics.median(times_ms), q[1], q[7]


def time_step(fn: Callable[[], object], device: torch.device, budget: Budget) -> Timing:
    """GPU: warm up `fn` (first calls may compile kernels), then time it. (CPU
    workloads are timed together, call by call: alternate.)"""
    if device.type != "cuda":
        raise ValueError(f"time_step times CUDA steps, got device {device}; use alternate")
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize(device)
    # Repeat long enough for gpu_min_samples runs of a slow step (for p20/p80).
    once_ms = start.elapsed_time(end)
    rep = min(max(budget.gpu_rep_ms, budget.gpu_min_samples * once_ms), budget.gpu_max_rep_ms)
    return _time_cuda(fn, budget.gpu_warmup_ms, int(rep))


def _time_cuda(fn: Callable[[], object], warmup_ms: int, rep_ms: int) -> Timing:
    try:
        from triton.testing import do_bench
    except ImportError:
        return _time_cuda_events(fn, warmup_ms, rep_ms)
    med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(float(med), float(p20), float(p80), None, "triton.testing.do_bench")


def _time_cuda_events(fn: Callable[[], object], warmup_ms: int, rep_ms: int) -> Timing:
    # Writing a buffer larger than L2 (50 MB on H100) between runs evicts the inputs.
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 3, 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate))):
        fn()
    n = max(5, int(rep_ms / estimate))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(n)]  # fmt: skip
    for s, e in events:
        flush.zero_()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    med, p20, p80 = quantiles([s.elapsed_time(e) for s, e in events])
    return Timing(med, p20, p80, n, "cuda events")


class WorkloadFailed(RuntimeError):
    """One workload of alternate() raised (the cause is chained): `name` says which."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} failed while timed")
        self.name = name


def alternate(
    fns: dict[str, Callable[[], object]],
    budget: Budget | None = None,
    rounds: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """CPU: the calls of several workloads interleaved, every call timed (ms).

    Each round calls every workload once, the order rotating and reversing from
    round to round (A B C, C B A, B C A, A C B, ...), so drift in the machine's
    speed (other tenants, clocks) lands on all of them alike and the i-th
    times of two workloads form a fair pair. `rounds` fixed, or, from `budget`:
    at least cpu_min_samples rounds and cpu_min_run_s per workload, at most
    cpu_max_run_s per workload. Warm-up: two calls each (one for a call over 1 s).
    A workload that raises ends it with WorkloadFailed naming that workload.
    """
    names = list(fns)

    def call(n: str) -> None:
        try:
            fns[n]()
        except Exception as e:
            raise WorkloadFailed(n) from e

    for n in names:
        t0 = time.perf_counter()
        call(n)
        if time.perf_counter() - t0 < 1.0:
            call(n)
    times: dict[str, list[float]] = {n: [] for n in names}
    start, r = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        if rounds is not None:
            if r >= rounds:
                break
        elif budget is None:
            raise ValueError("alternate: give `budget` or `rounds`")
        elif elapsed >= budget.cpu_max_run_s * len(names) or (
            r >= budget.cpu_min_samples and elapsed >= budget.cpu_min_run_s * len(names)
        ):
            break
        k = (r // 2) % len(names)
        order = names[k:] + names[:k]
        for n in order if r % 2 == 0 else order[::-1]:
            t0 = clock()
            call(n)
            times[n].append((clock() - t0) * 1e3)
        r += 1
    return times


def summarize(times_ms: list[float], method: str) -> Timing:
    """A Timing from per-call times (ms), e.g. one workload's share of alternate()."""
    med, p20, p80 = quantiles(times_ms)
    return Timing(med, p20, p80, len(times_ms), method)


def fma_peak_gflops(seconds: float = 1.0) -> tuple[float, str]:
    """The best fp32 GFLOP/s of an in-cache GEMM (384^3) at the current thread count:
    oneDNN's (inner product with packed weights) where available, else torch.mm
    (MKL, which on AMD CPUs lacks an AVX-512 path); the better of the two."""
    n = 384
    a, b = torch.randn(n, n), torch.randn(n, n)
    candidates = {"torch.mm": lambda: torch.mm(a, b)}
    mk = torch.ops.mkldnn
    if hasattr(mk, "_linear_pointwise") and hasattr(mk, "_reorder_linear_weight"):
        packed = mk._reorder_linear_weight(b, n)
        candidates["oneDNN"] = lambda: mk._linear_pointwise(a, packed, None, "none", [], "")
    best, how = 0.0, ""
    for name, f in candidates.items():
        f()
        end = time.perf_counter() + seconds / len(candidates)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            for _ in range(10):
                f()
            g = 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e9
            if g > best:
                best, how = g, name
    return best, f"best of {', '.join(candidates)} on a {n}^3 fp32 GEMM (best: {how})"


# glibc mallopt parameters. glibc serves a block from mmap (returned to the OS on
# free) when it is above a threshold that, by default, rises with every large
# block freed: the allocator's behaviour would depend on what ran before.
_M_MMAP_THRESHOLD = -3
_STEADY_MMAP_THRESHOLD = 32 * 2**20  # the ceiling glibc's dynamic threshold reaches
_MEASURE_MMAP_THRESHOLD = 64 * 2**10


def _libc() -> ctypes.CDLL | None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        _ = libc.mallopt, libc.malloc_trim
        return libc
    return None


def steady_cpu_allocator() -> bool:
    """Pin glibc's mmap threshold at the ceiling its dynamic rule rises to, so every
    CPU row is timed under the same allocator behaviour. The trim threshold keeps
    glibc's default (128 KiB): freed memory returns to the OS between calls, as in
    a fresh process (bench/README.md, "Timing"). False where not glibc."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD))


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> tuple[float | None, str]:
    """Memory one more call of `fn` needs beyond what is allocated before it, in MiB.

    CUDA: torch.cuda.max_memory_allocated() - memory_allocated() before the call.
    CPU (Linux, glibc): peak RSS (VmHWM, reset through /proc/self/clear_refs) - RSS
    before, with every block >= 64 KiB served by mmap during the call so that
    freed memory leaves the RSS and reused memory is counted again.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda allocator"
    libc, status, refs = _libc(), Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if libc is None or not status.exists():
        return None, "no per-call peak RSS here (needs Linux and glibc)"
    libc.mallopt(_M_MMAP_THRESHOLD, _MEASURE_MMAP_THRESHOLD)
    try:
        libc.malloc_trim(0)
        refs.write_text("5")  # "5" resets this process's peak RSS (Linux >= 4.0)
        before = _proc_kb(status, "VmRSS")
        fn()
        peak = _proc_kb(status, "VmHWM")
    except OSError as exc:
        return None, f"no per-call peak RSS here ({exc})"
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
    return max(0.0, (peak - before) / 1024), "peak RSS delta"


def _proc_kb(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from {status}")
