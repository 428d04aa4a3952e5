"""Who serves a CPU call: ATen's fused LSTM (what nn.LSTM runs) or our kernels.

The drop-in module must never be slower than what it replaces, and which of
the two is faster depends on the CPU (vector width, AMX, cache sizes), the
dtype, the shape and whether gradients are needed. So the choice is measured
on the machine at hand, like `torch.backends.cudnn.benchmark`: the first call
of a kind (`Key`) times both sides on inputs of its shape, a few calls each,
interleaved, and the answer is kept for the process and in a cache file keyed
by the CPU model and the library versions. Ours serves only when it measured
at least `MARGIN` faster; a tie goes to ATen, which is nn.LSTM itself.

First-call cost: one warm-up call of each side, then 2 to 7 rounds of one call
each (as many as fit in `BUDGET_S`, at least 2): about a second for calls of
tens of milliseconds, 3 calls of each side for calls of a second or more.

CHARRNN_FAST_DISPATCH: `auto` (measure, the default), `aten` (ATen wherever it
can serve: never measure, nn.LSTM's speed), `ours` (our kernels always; the
tests use it). CHARRNN_FAST_CACHE_DIR: where the cache file lives (default
$XDG_CACHE_HOME/charrnn_fast, else ~/.cache/charrnn_fast). docs/DESIGN.md,
"Backends", states the rule; docs/performance.md holds what was measured.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ENV = "CHARRNN_FAST_DISPATCH"
MODES = ("auto", "aten", "ours")
CACHE_ENV = "CHARRNN_FAST_CACHE_DIR"
# Variables of earlier versions: set, they are an error rather than ignored.
_REMOVED = ("CHARRNN_FAST_CPU_TRAIN", "CHARRNN_FAST_CPU_FORWARD")
MARGIN = 0.97  # ours serves when its time is at most this fraction of ATen's
BUDGET_S = 1.0  # measuring time a key may take beyond the warm-up and 2 rounds
MIN_ROUNDS, MAX_ROUNDS = 2, 7


def mode() -> str:
    """CHARRNN_FAST_DISPATCH, checked: auto, aten or ours. Also checks the other
    variables that steer which code runs, so that a malformed one is an error
    on any device, not only where it would be read."""
    from charrnn_fast import _ops
    from charrnn_fast.backends import plans

    plans.check_path_env()
    if _ops.isa_error() is not None:
        raise ValueError(_ops.isa_error())
    for name in _REMOVED:
        if name in os.environ:
            raise ValueError(
                f"{name} is no longer read; set {ENV}=auto|aten|ours instead "
                f"(found {name}={os.environ[name]!r})"
            )
    value = os.environ.get(ENV, "auto")
    if value not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}; got {value!r}")
    return value


def _bucket(n: int) -> int:
    """n rounded up to a power of two: calls that differ less than 2x share a key."""
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Key:
    """What decides which side is faster. T and B are bucketed (powers of two)."""

    T: int
    B: int
    I: int
    H: int
    P: int  # proj_size, 0 for none
    L: int
    D: int
    dtype: str
    grad: bool
    packed: bool
    threads: int

    @classmethod
    def of(
        cls, T: int, B: int, I: int, H: int, P: int, L: int, D: int, dtype: torch.dtype,
        grad: bool, packed: bool,
    ) -> Key:  # fmt: skip
        return cls(
            _bucket(T), _bucket(B), I, H, P, L, D, str(dtype).removeprefix("torch."),
            grad, packed, torch.get_num_threads(),
        )  # fmt: skip

    def text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in asdict(self).items())


@dataclass(frozen=True)
class Decision:
    choice: str  # "aten" or "ours"
    ratio: float  # median over rounds of (ours time / ATen time); nan if ours failed
    rounds: int
    why: str


_memo: dict[Key, Decision] = {}
_disk: dict[str, dict] | None = None


@functools.cache
def _machine() -> dict[str, str]:
    """What the cache file is keyed by: a decision holds for this CPU and these versions."""
    model = platform.processor() or platform.machine()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(
                    f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")
                    if f in have
                )  # fmt: skip
                break
    except OSError:
        pass
    from charrnn_fast import __version__

    return {
        "cpu": model,
        "flags": flags,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "charrnn_fast": __version__,
        "onednn": str(torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()),
    }


def cache_path() -> Path:
    """The cache file of this machine and these versions."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "charrnn_fast")
    tag = hashlib.sha256(json.dumps(_machine(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / f"dispatch-{tag}.json"


def _load_disk() -> dict[str, dict]:
    global _disk
    if _disk is None:
        _disk = {}
        try:
            data = json.loads(cache_path().read_text())
            if isinstance(data, dict) and isinstance(data.get("entries"), dict):
                _disk = {
                    k: v for k, v in data["entries"].items()
                    if isinstance(v, dict) and v.get("choice") in ("aten", "ours")
                }  # fmt: skip
        except (OSError, ValueError):
            pass  # no cache yet, or an unreadable one: measure again and rewrite it
    return _disk


def _save(key: Key, d: Decision) -> None:
    entries = _load_disk()
    entries[key.text()] = {"choice": d.choice, "ratio": d.ratio, "rounds": d.rounds}
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dispatch-")
        with os.fdopen(fd, "w") as f:
            json.dump({"machine": _machine(), "entries": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:  # a read-only home, say: the process still remembers
        warnings.warn(f"charrnn_fast: cannot write the dispatch cache {path}: {e}", stacklevel=4)


def measure(
    run_aten: Callable[[], object],
    run_ours: Callable[[], object],
    clock: Callable[[], float] = time.perf_counter,
) -> Decision:
    """Times both sides alternately (after one warm-up call each) and decides."""

    def timed(fn: Callable[[], object]) -> float:
        t0 = clock()
        fn()
        return clock() - t0

    try:
        timed(run_ours)
    except Exception as e:  # ours cannot serve this call: ATen does, and we say why
        return Decision("aten", float("nan"), 0, f"our kernels failed: {type(e).__name__}: {e}")
    try:
        timed(run_aten)
    except Exception as e:  # oneDNN refuses some (dtype, CPU) pairs, e.g. fp16 LSTM primitives
        return Decision("ours", float("nan"), 0, f"ATen failed: {type(e).__name__}: {e}")
    ratios: list[float] = []
    spent = 0.0
    while len(ratios) < MAX_ROUNDS:
        # Alternate which side goes first, so neither always inherits a warm cache.
        if len(ratios) % 2:
            t_ours, t_aten = timed(run_ours), timed(run_aten)
        else:
            t_aten, t_ours = timed(run_aten), timed(run_ours)
        ratios.append(t_ours / max(t_aten, 1e-9))
        spent += t_aten + t_ours
        if len(ratios) >= MIN_ROUNDS and spent >= BUDGET_S:
            break
    r = statistics.median(ratios)
    choice = "ours" if r <= MARGIN else "aten"
    return Decision(choice, r, len(ratios), f"measured: ours takes {r:.2f}x ATen's time")


def decide(
    key: Key, probes: Callable[[], tuple[Callable[[], object], Callable[[], object]]]
) -> Decision:
    """The decision for `key`: remembered, read from the cache file, or measured
    now on the (run_aten, run_ours) pair that `probes()` builds (only then: the
    inputs it makes would cost every call a millisecond)."""
    d = _memo.get(key)
    if d is not None:
        return d
    hit = _load_disk().get(key.text())
    if hit is not None:
        d = Decision(hit["choice"], float(hit.get("ratio", "nan")), int(hit.get("rounds", 0)),
                     "from the cache file " + str(cache_path()))  # fmt: skip
    else:
        d = measure(*probes())
        _save(key, d)
    _memo[key] = d
    return d


def forget() -> None:
    """Drops what this process remembers (the cache file stays): tests, benchmarks."""
    global _disk
    _memo.clear()
    _disk = None


def report_lines() -> list[str]:
    """One line per decision made in this process."""
    m = mode()
    lines = [f"CPU dispatch ({ENV}={m}): " + {
        "auto": f"measured per kind of call, cache {cache_path()}",
        "aten": "ATen's fused LSTM wherever it can serve",
        "ours": "our kernels always",
    }[m]]  # fmt: skip
    for key, d in _memo.items():
        lines.append(f"  {key.text()}: {d.choice} ({d.why})")
    return lines
