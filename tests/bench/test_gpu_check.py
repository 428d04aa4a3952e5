"""bench/gpu_check.sh without a GPU (a dry run): what it leaves in OUT_DIR obeys
the GPU machine's rules for what comes back (at most 8 files, at most two
folders down, plain names), the logs are in one archive, every step of the
mode is accounted for in summary.txt, and the caps fit the mode's budget.

The build step is skipped (GPU_CHECK_SKIP=build): it would rebuild this
checkout's extension. The steps that need a GPU skip themselves here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
NAME = re.compile(r"[A-Za-z0-9._-]+")
MAX_FILES, MAX_DEPTH = 8, 2  # what the GPU machine hands back from OUT_DIR
STEPS = {
    "first": ["env", "build", "plans", "smoke", "cuda_tests", "bench_headline", "triton_tests"],
    "full": ["build", "memcheck", "racecheck", "bench_full", "path_sweep", "micro"],
}
BUDGET = {"first": 360, "full": 420}

pytestmark = pytest.mark.slow


def _run(out: Path, mode: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "GPU_CHECK_SKIP": "build",
        **env,
    }
    r = subprocess.run(
        ["bash", str(SCRIPT), str(out), mode],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(r.stdout, r.stderr)
    return r


def _check_returnable(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= MAX_FILES, f"{len(files)} files in OUT_DIR: {files}"
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        assert len(rel.parts) - 1 <= MAX_DEPTH, f"{rel} is too deep"
        assert all(NAME.fullmatch(part) for part in rel.parts), f"{rel}: odd characters"
        assert p.is_file() or p.is_dir(), f"{rel}: not a plain file"
    return files


@pytest.mark.parametrize("mode", ["first", "full"])
def test_dry_run_leaves_what_comes_back(mode, tmp_path):
    out = tmp_path / "out"
    r = _run(out, mode)
    assert r.returncode == 0, r.stderr
    files = _check_returnable(out)
    names = {p.name for p in files}
    assert {"summary.txt", "logs.tar.gz"} <= names
    assert not any(n.endswith(".part") for n in names), "the archive is renamed into place"
    summary = (out / "summary.txt").read_text()
    for name in STEPS[mode]:
        assert re.search(rf"^{name} ", summary, re.M), f"{name} missing from the summary"
    assert "build not requested" in summary
    with tarfile.open(out / "logs.tar.gz") as tar:
        members = {Path(m.name).name for m in tar.getmembers() if m.isfile()}
    if mode == "first":
        # The CPU can run env and plans: their logs are archived, plans.json kept.
        assert re.search(r"^env rc=0 ", summary, re.M) and re.search(r"^plans rc=0 ", summary, re.M)
        assert {"01-env.log", "03-plans.log", "plans.json"} <= members
        plans = json.loads((out / "plans.json").read_text())
        assert plans["gpu"] is False and len(plans["plans"]) == 18
        assert all(row["lines"][0].startswith("plans for B=") for row in plans["plans"])
        assert re.search(r"^smoke skipped: needs a CUDA GPU", summary, re.M)


def test_results_beyond_the_file_limit_stay_in_the_archive(tmp_path):
    out = tmp_path / "out"
    r = _run(out, "first", GPU_CHECK_ONLY="plans", GPU_CHECK_MAX_FILES="2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in _check_returnable(out)) == ["logs.tar.gz", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    assert "plans.json: in logs.tar.gz only" in summary
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "plans.json" in {Path(m.name).name for m in tar.getmembers()}


def _caps(mode: str) -> dict[str, str]:
    """{step: cap} as the script's `step NAME CAP ...` lines of `mode` say."""
    text = SCRIPT.read_text()
    block = re.search(rf"^  {mode}\)\n(.*?)^    ;;", text, re.M | re.S)
    assert block, f"no '{mode})' block in gpu_check.sh"
    return dict(re.findall(r"^    step (\w+) (\S+) ", block.group(1), re.M))


@pytest.mark.parametrize("mode", ["first", "full"])
def test_caps_fit_the_budget(mode):
    caps = _caps(mode)
    assert list(caps) == STEPS[mode]
    fixed = sum(int(c) for c in caps.values() if c.isdigit())
    assert f"{mode}) DEFAULT_BUDGET={BUDGET[mode]} ;;" in SCRIPT.read_text()
    # The steps end within the budget (each step's limit is cut to what is left);
    # the first call also leaves its last step, the Triton tests, 45 s or more.
    assert fixed <= BUDGET[mode]
    if mode == "first":
        assert caps["triton_tests"] == '"$BUDGET"'
        assert BUDGET[mode] - fixed >= 45
