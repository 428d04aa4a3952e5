"""Result rows: the environment header, speed-ups, and the markdown / JSON / CSV outputs.

The schema (one dict per row, fields in ROW_FIELDS) is documented in bench/README.md.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from bench.config import SAME_KERNELS

SCHEMA = "charrnn_fast.bench/1"
ROW_FIELDS = (
    "provider", "device", "mode", "dtype", "shape", "layers", "hidden", "input_size", "batch",
    "seq", "proj", "varlen", "status", "median_ms", "p20_ms", "p80_ms", "us_per_layer_step", "tokens_per_s",
    "speedup_vs_baseline", "baseline", "peak_mem_mb", "max_err", "tol", "check_seq", "oracle",
    "samples", "timer", "note", "gflops", "peak_fraction", "spread",
)  # fmt: skip
# A row whose (p80 - p20) / median exceeds this is flagged noisy (a warning on
# stderr, "noisy" in the table): its speed-up is shown but is not to be trusted.
NOISY_SPREAD = 0.10
# Fewer timing samples than this: no speed-up at all (a median of one sample).
MIN_SAMPLES = 5
STATUSES = ("ok", "skipped", "disagrees", "error")
REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# The instruction sets that decide which CPU kernels run (fp32 AVX2 / AVX-512;
# bf16 in hardware with AVX512_BF16 or AMX), named in the header when present.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpu_flags() -> list[str]:
    """Which of CPU_FLAGS /proc/cpuinfo lists (empty where it cannot be read)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in have]
    return []


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(
    device: str, argv: list[str], plan_for: list[tuple[int, int, torch.dtype]] = ()
) -> dict:
    """The header of a result file: what ran, where, with which versions, and
    on a GPU the plan of every backend for each (B, H, dtype) in plan_for."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from charrnn_fast import backends

    cuda = device == "cuda" and torch.cuda.is_available()
    plans = {}
    with contextlib.redirect_stdout(io.StringIO()):
        backend_report = backends.report()
        for B, H, dtype in plan_for if cuda else ():
            text = backends.report(shape=(B, H), dtype=dtype, device=device)
            plans[f"B={B} H={H} {dtype}"] = text.splitlines()[1:]
    sha = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else f"cpu: {_cpu_model()}",
        "device_type": device,
        "git_sha": sha,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "command": " ".join(["python", *argv]),
        "backends": backend_report.splitlines(),
        # The kernel path each backend took, and why (forced or planned).
        "forced_path": os.environ.get("CHARRNN_FAST_PATH"),
        "plans": plans,
    }


def shape_key(r: dict) -> tuple:
    """A row's sizes; files written before proj and varlen existed read as plain shapes."""
    return (r["layers"], r["hidden"], r["batch"], r["seq"], r.get("proj") or 0,
            bool(r.get("varlen")))  # fmt: skip


def config_key(r: dict) -> tuple:
    """What a provider's row shares with its baseline's row."""
    return (r["device"], r["mode"], r["dtype"], *shape_key(r))


def add_speedups(rows: list[dict], baseline: dict[str, str]) -> None:
    """speedup_vs_baseline = baseline time / row time, within (device, mode, dtype, shape)
    (see _speedup).

    baseline: device type -> baseline provider. Rows whose baseline was not run
    (or did not pass) keep None.
    """
    base = {
        config_key(r): r
        for r in rows
        if r["provider"] == baseline.get(r["device"]) and r["status"] == "ok"
    }
    for r in rows:
        b = base.get(config_key(r))
        r["baseline"] = baseline.get(r["device"])
        if r["status"] != "ok" or b is None:
            continue
        few = [x for x in (r, b) if x["samples"] is not None and x["samples"] < MIN_SAMPLES]
        if few:
            r["note"] = "; ".join(
                x for x in (r["note"], f"no speed-up: fewer than {MIN_SAMPLES} samples") if x
            )
            continue
        r["speedup_vs_baseline"] = 1.0 if b is r else _speedup(b, r)


def _speedup(b: dict, r: dict) -> float:
    """Baseline over row. Rows timed call by call in the same rounds (timing.alternate:
    `times_ms`, not written out) pair up: the median of the per-round ratios, which
    a burst of other work during some rounds does not move. Else the ratio of medians."""
    bt, rt = b.get("times_ms"), r.get("times_ms")
    if bt and rt and len(bt) == len(rt):
        return statistics.median(x / y for x, y in zip(bt, rt))
    return b["median_ms"] / r["median_ms"]


def is_noisy(r: dict) -> bool:
    return r.get("spread") is not None and r["spread"] > NOISY_SPREAD


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v >= 10**digits:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def _status_text(r: dict) -> str:
    if r["status"] == "ok":
        text = f"ok, noisy (p20-p80 spread {r['spread']:.0%})" if is_noisy(r) else "ok"
        same = SAME_KERNELS in (r.get("note") or "")
        return f"{text}; the baseline's kernels (ATen)" if same else text
    if r["status"] == "disagrees":
        return f"DISAGREES: {r['note']}"
    return f"{r['status']}: {r['note']}"


def markdown(rows: list[dict], header: dict) -> str:
    """The human summary: a few header lines, then one table row per result row."""
    # +flag / -flag for each of CPU_FLAGS; files from before cpu_flags have none to show.
    have = header.get("cpu_flags")
    flags = "flags unknown" if have is None else " ".join(
        ("+" if f in have else "-") + f for f in CPU_FLAGS)  # fmt: skip
    lines = [
        f"## charrnn_fast bench: {header['device']}",
        "",
        f"{header['date']}, git {(header['git_sha'] or '?')[:12]}"
        f"{' (dirty)' if header['git_dirty'] else ''}, torch {header['torch']}, "
        f"triton {header['triton']}, CUDA {header['cuda']}, cuDNN {header['cudnn']}, "
        f"{header['torch_threads']} threads on {header['cpu_model']} ({flags}); "
        f"TF32 cudnn={header['tf32_cudnn']} matmul={header['tf32_matmul']}",
    ]
    if header.get("peak_gflops"):
        lines.append(
            f"\nmeasured peak {header['peak_gflops']:.0f} GFLOP/s ({header['peak_method']})"
        )
    if header.get("loadavg"):
        lines.append(f"\nload average (1, 5, 15 min) at start / end: {header['loadavg']}")
    if header.get("startup"):
        lines.append("\nstart-up, median of fresh interpreters: " + ", ".join(
            f"{k} {v:.2f}" for k, v in header["startup"].items()))  # fmt: skip
    lines += [
        "",
        "| provider | mode | dtype | shape | L×H | B | T | median ms | p20 ms | p80 ms "
        "| µs/layer-step | tokens/s | GFLOP/s | % peak | speed-up | peak MiB | status |",
        "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        speed = "" if r["speedup_vs_baseline"] is None else f"{r['speedup_vs_baseline']:.3g}×"
        cells = [
            r["provider"], r["mode"], r["dtype"], r["shape"],
            f"{r['layers']}×{r['hidden']}" + (f" P{r['proj']}" if r.get("proj") else ""),
            str(r["batch"]), f"≤{r['seq']} (var)" if r.get("varlen") else str(r["seq"]), _fmt(r["median_ms"]), _fmt(r["p20_ms"]),
            _fmt(r["p80_ms"]), _fmt(r["us_per_layer_step"]), _fmt(r["tokens_per_s"]),
            _fmt(r["gflops"]),
            "" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.0f}%", speed,
            _fmt(r["peak_mem_mb"]), _status_text(r).replace("|", "/"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    base = ", ".join(
        f"{k}: {v}" for k, v in sorted({r["device"]: r["baseline"] for r in rows}.items())
    )
    lines += [
        "",
        f"speed-up = baseline time / provider time (baseline per device: {base}): the "
        "median of per-round ratios where the rows' calls were interleaved (CPU), else of "
        "the medians; "
        "µs/layer-step = median / (layers × T); tokens/s = valid positions (B × T, or the "
        "sum of the lengths where T says var) / median; P: proj_size; GFLOP/s: "
        "bench/config.flops over the median; % peak: of the measured peak; noisy: p20-p80 "
        f"spread > {NOISY_SPREAD:.0%} of the median (other work on the machine; rerun).",
    ]
    return "\n".join(lines)


def write_json(path: str | Path, header: dict, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    doc = {"header": header, "rows": [{k: r.get(k) for k in ROW_FIELDS} for r in rows]}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def write_csv(path: str | Path, header: dict, rows: list[dict]) -> None:
    """CSV with the header as leading `# key: value` comment lines."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        for k, v in header.items():
            text = " / ".join(v) if isinstance(v, list) else v
            f.write(f"# {k}: {text}\n")
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in ROW_FIELDS})


def load_json(path: str | Path) -> dict:
    doc = json.loads(Path(path).read_text())
    if doc.get("header", {}).get("schema") != SCHEMA or "rows" not in doc:
        raise ValueError(f"{path}: not a bench/run.py result file (schema {SCHEMA})")
    return doc


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
