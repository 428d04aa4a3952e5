"""bench/run.py end to end: the --quick run's JSON/CSV/PNG outputs and their schema,
--compare, and the correctness gate (a wrong provider is reported, not timed)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn_fast import backends
from charrnn_fast.backends import Backend, reference

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a top-level folder of the repository, not installed
    sys.path.insert(0, str(REPO))

from bench import compare, config, providers, report, timing  # noqa: E402
from bench import run as bench_run  # noqa: E402

HEADER_KEYS = ("device", "torch", "triton", "cuda", "cudnn", "git_sha", "date", "cpu_model",
               "cpu_flags", "torch_threads", "loadavg")  # fmt: skip
POSITIVE = ("median_ms", "p20_ms", "p80_ms", "us_per_layer_step", "tokens_per_s",
            "speedup_vs_baseline")  # fmt: skip


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out / "q.json"),
           "--csv", str(out / "q.csv"), "--plot", str(out / "q.png")]  # fmt: skip
    # Without TRITON_INTERPRET: interpreted Triton kernels would join the CPU providers.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    print(proc.stderr[-4000:])
    return out, proc


def test_quick_run_writes_valid_results(quick) -> None:
    out, proc = quick
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("speed-up = baseline time")
    # Progress on stderr is plain lines, readable in a log: row k of N, then an ETA.
    progress = [ln for ln in proc.stderr.splitlines() if re.match(r"\[\d+/\d+", ln)]
    assert progress[0].startswith("[1/") and "\r" not in proc.stderr
    later = [ln for ln in progress if not ln.startswith("[1/")]  # row 1: no ETA yet
    assert later and all(re.match(r"\[\d+/\d+, ETA \d+m\d\ds\] ", ln) for ln in later), progress
    doc = json.loads((out / "q.json").read_text())
    header, rows = doc["header"], doc["rows"]
    for k in HEADER_KEYS:
        assert k in header, k
    assert header["schema"] == report.SCHEMA
    assert re.fullmatch(r"[\d.]+ [\d.]+ [\d.]+ / [\d.]+ [\d.]+ [\d.]+", header["loadavg"])
    assert set(header["cpu_flags"]) <= set(report.CPU_FLAGS)
    assert (
        header["cpu_model"] in proc.stdout
        and " ".join(("+" if f in header["cpu_flags"] else "-") + f for f in report.CPU_FLAGS)
        in proc.stdout
    )  # the markdown names the CPU and its flags
    assert rows, "no rows"
    providers_seen = {r["provider"] for r in rows}
    assert {"torch-cpu", "cpu"} <= providers_seen or header["device_type"] == "cuda"
    for r in rows:
        assert set(r) == set(report.ROW_FIELDS), set(r) ^ set(report.ROW_FIELDS)
        assert r["status"] in report.STATUSES
        assert r["status"] != "error" and r["status"] != "disagrees", r
        if r["status"] == "ok":
            for k in POSITIVE:
                if k == "speedup_vs_baseline" and r[k] is None:
                    # refused: this row or its baseline has too few samples (a loaded machine)
                    assert f"fewer than {report.MIN_SAMPLES} samples" in r["note"], r
                    continue
                assert isinstance(r[k], float) and r[k] > 0, (k, r)
            assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"], r
            assert r["max_err"] <= r["tol"], r
            expected_tps = r["batch"] * r["seq"] / (r["median_ms"] / 1e3)
            assert r["tokens_per_s"] == pytest.approx(expected_tps)
        if r["provider"] == r["baseline"] and r["status"] == "ok":
            assert r["speedup_vs_baseline"] in (1.0, None)  # None: refused, as above
    baselines = [r for r in rows if r["provider"] == r["baseline"]]
    assert {r["mode"] for r in baselines} == {"fwd", "fwdbwd", "train"}

    lines = (out / "q.csv").read_text().splitlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    assert any(ln.startswith("# git_sha:") for ln in comments)
    table = list(csv.DictReader(ln for ln in lines if not ln.startswith("#")))
    assert len(table) == len(rows)
    assert list(table[0]) == list(report.ROW_FIELDS)
    assert (out / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_gives_per_row_ratios(quick, capsys) -> None:
    out, proc = quick
    assert proc.returncode == 0
    doc = json.loads((out / "q.json").read_text())
    for r in doc["rows"]:  # B: every timed row twice as fast
        if r["median_ms"] is not None:
            r["median_ms"] /= 2
    (out / "half.json").write_text(json.dumps(doc))
    text, matched = compare.compare(out / "q.json", out / "half.json")
    print(text)
    assert len(matched) == len(doc["rows"])
    ok = [m for m in matched if m["ratio"] is not None]
    assert ok and all(m["ratio"] == pytest.approx(2.0) for m in ok)
    assert bench_run.main(["--compare", str(out / "q.json"), str(out / "half.json")]) == 0
    assert "A/B" in capsys.readouterr().out


def _register(monkeypatch, name: str, fwd=reference.lstm_fwd, bwd=reference.lstm_bwd,
              why_not=lambda gx, w: None) -> None:  # fmt: skip
    monkeypatch.setitem(backends._REGISTRY, name, Backend(name, fwd, bwd, why_not, "test double"))


def test_wrong_providers_are_reported_not_timed(monkeypatch, tmp_path) -> None:
    def fwd_off(gx, w_hh, h0, c0, training):  # y off by 1e-3: far beyond fp32 rounding
        y, c_all, gates = reference.lstm_fwd(gx, w_hh, h0, c0, training)
        return y + 1e-3, c_all, gates

    def bwd_off(*args):  # gradient of the pre-activations 1% too large
        dgx, dw, dh0, dc0 = reference.lstm_bwd(*args)
        return dgx * 1.01, dw, dh0, dc0

    _register(monkeypatch, "fwd-off", fwd=fwd_off)
    _register(monkeypatch, "bwd-off", bwd=bwd_off)
    _register(monkeypatch, "unable", why_not=lambda gx, w: "test double serves nothing")
    path = tmp_path / "r.json"
    rc = bench_run.main(["--device", "cpu", "--providers", "torch-cpu,fwd-off,bwd-off,unable",
                         "--shapes", "1x16:4:6", "--modes", "fwd,fwdbwd", "--quick",
                         "--json", str(path)])  # fmt: skip
    assert rc == 1  # a disagreeing row fails the run
    rows = {(r["provider"], r["mode"]): r for r in json.loads(path.read_text())["rows"]}
    for key, r in rows.items():
        print(key, r["status"], r["max_err"], r["tol"], r["note"])
    assert rows["torch-cpu", "fwd"]["status"] == "ok"
    assert rows["fwd-off", "fwd"]["status"] == "disagrees"
    assert rows["fwd-off", "fwd"]["median_ms"] is None
    assert rows["fwd-off", "fwd"]["max_err"] > rows["fwd-off", "fwd"]["tol"]
    assert rows["fwd-off", "fwdbwd"]["status"] == "disagrees"
    # A backward bug does not touch the inference path, and is caught in fwdbwd.
    assert rows["bwd-off", "fwd"]["status"] == "ok"
    assert rows["bwd-off", "fwd"]["median_ms"] > 0
    assert rows["bwd-off", "fwdbwd"]["status"] == "disagrees"
    assert " on d" in rows["bwd-off", "fwdbwd"]["note"]  # names a gradient
    assert rows["unable", "fwd"]["status"] == "skipped"
    assert "serves nothing" in rows["unable", "fwd"]["note"]
    assert torch.backends.cudnn.allow_tf32  # run() restored the global flags


def _timed(provider: str, median: float, p20: float, p80: float, samples: int) -> dict:
    r = dict.fromkeys(report.ROW_FIELDS)
    r.update(provider=provider, device="cpu", mode="fwd", dtype="float32", shape="s", layers=1,
             hidden=8,
             batch=1, seq=1, status="ok", median_ms=median, p20_ms=p20, p80_ms=p80,
             samples=samples, note="", spread=(p80 - p20) / median)  # fmt: skip
    return r


def test_speedup_needs_enough_samples_and_noise_is_flagged() -> None:
    base = _timed("torch-cpu", 10.0, 9.9, 10.1, 20)
    one = _timed("cpu", 1.0, 1.0, 1.0, 1)  # the "12.8x from one sample" of issue 11
    steady = _timed("cpu", 5.0, 4.9, 5.1, 20)
    noisy = _timed("cpu", 5.0, 4.0, 7.0, 20)
    report.add_speedups([base, one], {"cpu": "torch-cpu"})
    assert one["speedup_vs_baseline"] is None and "fewer than" in one["note"]
    report.add_speedups([base, steady, noisy], {"cpu": "torch-cpu"})
    assert steady["speedup_vs_baseline"] == pytest.approx(2.0) and not report.is_noisy(steady)
    assert report.is_noisy(noisy)
    table = report.markdown([base, steady, noisy], {"device": "cpu", "date": "d", "git_sha": None,
                            "git_dirty": False, "torch": "t", "triton": None, "cuda": None,
                            "cudnn": None, "torch_threads": 2, "cpu_model": "x",
                            "tf32_cudnn": False, "tf32_matmul": False})  # fmt: skip
    assert table.count("noisy (p20-p80 spread 60%)") == 1


@pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="ATen serves our module's calls via oneDNN"
)
def test_rows_that_time_atens_lstm_on_both_sides_say_so(monkeypatch) -> None:
    # Where charrnn_fast.LSTM hands a call to ATen's LSTM (backends/dispatch.py), its
    # row times the baseline's own kernels: a 0.95x there is noise, and the
    # note and the table must say which rows those are.
    def note(provider: str, mode: str) -> str:
        return providers.workload(provider, mode, config.parse_shape("tiny"), "float32", "cpu")[1]

    same = config.SAME_KERNELS
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", "aten")  # tests/conftest.py forces "ours"
    for mode in ("fwd", "fwdbwd", "train"):
        assert same in note("cpu", mode)
        assert same not in note("reference", mode)  # a plain loop of aten ops, not ATen's LSTM
        assert same not in note("torch-cpu", mode)
    monkeypatch.setenv("CHARRNN_FAST_DISPATCH", "ours")
    for mode in ("fwd", "fwdbwd", "train"):
        assert same not in note("cpu", mode)
    row = _timed("cpu", 5.0, 4.9, 5.1, 20)
    row["note"] = note("reference", "fwd") + "; " + same
    assert report._status_text(row) == "ok; the baseline's kernels (ATen)"


def test_alternate_rotates_the_order_and_pairs_survive_drift() -> None:
    """timing.alternate calls every workload once per round, rotating and reversing
    the order; a burst of other work during some rounds moves both sides' medians
    apart but not the median of the per-round ratios that add_speedups takes."""
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    times = timing.alternate(fns, rounds=6)
    timed = calls[6:]  # after two warm-up calls each
    rounds = [timed[i : i + 3] for i in range(0, 18, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds), rounds
    assert rounds[0] != rounds[1] and len({r[0] for r in rounds}) == 3, rounds
    assert {n: len(t) for n, t in times.items()} == {"a": 6, "b": 6, "c": 6}
    budget = timing.Budget(cpu_min_run_s=0.0, cpu_min_samples=7, cpu_max_run_s=60.0)
    assert {len(t) for t in timing.alternate(fns, budget).values()} == {7}

    # The baseline takes twice as long as `cpu` in every round; the machine is
    # 10x slower in 3 rounds of 5, which fall on the baseline's median but not on cpu's.
    base = _timed("torch-cpu", 1.0, 1.0, 1.0, 5)
    ours = _timed("cpu", 1.0, 1.0, 1.0, 5)
    base["times_ms"] = [20.0, 200.0, 20.0, 200.0, 200.0]
    ours["times_ms"] = [10.0, 100.0, 10.0, 100.0, 100.0]
    base["median_ms"], ours["median_ms"] = 200.0, 10.0  # as if timed apart: 20x
    report.add_speedups([base, ours], {"cpu": "torch-cpu"})
    assert ours["speedup_vs_baseline"] == pytest.approx(2.0)


def test_run_interleaves_the_providers_of_a_row_group(monkeypatch, tmp_path) -> None:
    """On the CPU, bench/run.py times the providers of one (shape, mode) call by call
    in the same rounds: each timed row says so and has as many samples as the others."""
    path = tmp_path / "r.json"
    rc = bench_run.main(["--device", "cpu", "--providers", "torch-cpu,reference",
                         "--shapes", "1x16:4:6", "--modes", "fwd,fwdbwd", "--quick",
                         "--json", str(path)])  # fmt: skip
    assert rc == 0
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    for mode in ("fwd", "fwdbwd"):
        group = [r for r in rows if r["mode"] == mode]
        assert all(r["timer"].startswith("interleaved") for r in group), group
        assert len({r["samples"] for r in group}) == 1 and group[0]["samples"] >= 5, group
        assert group[1]["speedup_vs_baseline"] > 0


def test_interleaved_fresh_processes_time_each_side_apart(tmp_path) -> None:
    """bench/interleaved.py --fresh: every process is one side's own, so the row holds
    one median and one page-fault count per process and side, and a ratio per pair."""
    out = tmp_path / "fresh.json"
    cmd = [sys.executable, str(REPO / "bench" / "interleaved.py"), "--shapes", "tiny",
           "--modes", "fwd", "--fresh", "2", "--calls", "2", "--threads", "1",
           "--json", str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 fresh processes per side" in proc.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["rounds"] == 2 and row["mode"] == "fwd" and row["spec"] == "2x64:16:32"
    for side in ("base", "prov"):
        faults = row[side]["faults_per_call"]
        assert len(faults) == 2 and all(f >= 0 for f in faults)
        assert 0 < row[side]["p20_ms"] <= row[side]["median_ms"] <= row[side]["p80_ms"]
    assert row["base"]["provider"] == "torch-cpu" and row["prov"]["provider"] == "cpu"
    lo, hi = row["speedup_p20_p80"]
    assert 0 < lo <= row["speedup_median_of_ratios"] <= hi


def test_a_provider_failing_while_timed_errs_its_own_row_only(monkeypatch, tmp_path) -> None:
    """A step that passes its check and first call, then raises during the
    interleaved timing, errs its row; the others are timed again without it. A shape
    named twice (by preset and by its sizes) is measured once."""
    calls = {"n": 0}

    def fwd_late(gx, w_hh, h0, c0, training):
        calls["n"] += 1
        if calls["n"] > 3:  # after the check and the first call
            raise RuntimeError("late failure in a test double")
        return reference.lstm_fwd(gx, w_hh, h0, c0, training)

    _register(monkeypatch, "late", fwd=fwd_late)
    path = tmp_path / "r.json"
    rc = bench_run.main(["--device", "cpu", "--providers", "torch-cpu,late,reference",
                         "--shapes", "1x16:4:6,1x16:4:6", "--modes", "fwd,fwd", "--quick",
                         "--json", str(path)])  # fmt: skip
    assert rc == 1  # an error row fails the run
    rows = {r["provider"]: r for r in json.loads(path.read_text())["rows"]}
    assert len(json.loads(path.read_text())["rows"]) == 3
    assert rows["late"]["status"] == "error" and "late failure" in rows["late"]["note"]
    for p in ("torch-cpu", "reference"):
        assert rows[p]["status"] == "ok" and rows[p]["samples"] >= 5, rows[p]
    assert rows["reference"]["speedup_vs_baseline"] > 0
