"""bench/results_index.py: which run supplies each current figure, how superseded
runs are marked, and that the committed index and tables match the results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results_index

REPO = Path(__file__).resolve().parents[2]


def _row(provider: str, mode: str, speedup: float, tokens: float, **kw) -> dict:
    row = dict(provider=provider, device="cpu", mode=mode, dtype="float32", shape="char-rnn",
               layers=2, hidden=128, input_size=128, batch=50, seq=50, proj=0, varlen=False,
               status="ok", speedup_vs_baseline=speedup, tokens_per_s=tokens, spread=0.02,
               note="", timer="interleaved per call with 1 other provider(s)")  # fmt: skip
    row.update(kw)
    return row


def _run(root: Path, name: str, date: str, speedup: float, superseded: bool = False,
         extra_rows: tuple[dict, ...] = ()) -> None:  # fmt: skip
    folder = root / "bench" / "results" / name
    folder.mkdir(parents=True)
    header = {"schema": results_index.SCHEMA, "date": date, "device": "cpu: Test CPU",
              "cpu_model": "Test CPU", "cpu_flags": ["avx2"], "cpu_count": 2,
              "torch_threads": 2, "torch": "2.14.1"}  # fmt: skip
    rows = [_row("torch-cpu", "train", 1.0, 1000.0), _row("cpu", "train", speedup, 1000.0 * speedup),
            _row("reference", "train", 0.4, 400.0), *extra_rows]  # fmt: skip
    (folder / "run.json").write_text(json.dumps({"header": header, "rows": rows}))
    # Another JSON with the same schema but other rows (bench/interleaved.py): listed, not read.
    (folder / "interleaved.json").write_text(
        json.dumps({"header": header, "rows": [{"shape": "x"}]})
    )
    status = "SUPERSEDED by a later run\n" if superseded else "CURRENT\n"
    (folder / "README.md").write_text(f"# {name}\n\n{status}")


def _repo(tmp_path: Path) -> Path:
    for name in ("README.md", "docs/performance.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(
            f"head\n{results_index.BEGIN}\nold\n{results_index.END}\ntail\n"
        )
    return tmp_path


def test_the_newest_run_that_is_not_superseded_supplies_the_figure(tmp_path):
    repo = _repo(tmp_path)
    # Newest by date but superseded: never current. The older run is current for
    # the train row; only the superseded one timed fwd, so fwd has no current figure.
    _run(repo, "2026-01-02-cpu-test", "2026-01-02T10:00:00+00:00", 1.25)
    _run(repo, "2026-01-03-cpu-test", "2026-01-03T10:00:00+00:00", 9.99, superseded=True,
         extra_rows=(_row("torch-cpu", "fwd", 1.0, 10.0), _row("cpu", "fwd", 7.0, 70.0)))  # fmt: skip
    runs = results_index.load_runs(repo / "bench" / "results", repo)
    figs = results_index.current(runs)
    assert set(figs) == {("cpu-test", "char-rnn", "2x128:50:50", "float32", "train", "cpu")}
    fig = next(iter(figs.values()))
    assert fig.run.name == "2026-01-02-cpu-test"
    assert fig.row["speedup_vs_baseline"] == 1.25 and fig.baseline["tokens_per_s"] == 1000.0

    assert results_index.main(["--repo", str(repo)]) == 0
    index = (repo / "bench/results/INDEX.md").read_text()
    assert (
        "| char-rnn | float32 | train | cpu | 1.25× | 1,250 | [2026-01-02-cpu-test/run.json]"
        in index
    )
    assert "9.99" not in index and "7.00" not in index
    assert (
        "| [2026-01-03-cpu-test](2026-01-03-cpu-test/) | cpu-test | SUPERSEDED by a later run |"
        in index
    )
    assert "| [2026-01-02-cpu-test](2026-01-02-cpu-test/) | cpu-test | current |" in index
    assert "interleaved.json" in index  # listed as another file of the run
    assert "GPU: not yet measured." in index
    readme = (repo / "README.md").read_text()
    assert readme.startswith("head\n") and readme.endswith("tail\n") and "old" not in readme
    assert "| char-rnn | 2x128:50:50 | float32 | cpu |  |  | 1.25× |" in readme
    perf = (repo / "docs/performance.md").read_text()
    assert "[2026-01-02-cpu-test/run.json](../bench/results/2026-01-02-cpu-test/run.json)" in perf
    assert results_index.main(["--repo", str(repo), "--check"]) == 0


def test_check_reports_a_stale_file_and_a_missing_block(tmp_path, capsys):
    repo = _repo(tmp_path)
    _run(repo, "2026-01-02-cpu-test", "2026-01-02T10:00:00+00:00", 1.25)
    assert results_index.main(["--repo", str(repo), "--check"]) == 1
    assert "out of date: bench/results/INDEX.md" in capsys.readouterr().err
    (repo / "README.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- results:begin -->"):
        results_index.main(["--repo", str(repo)])


def test_projected_and_variable_length_rows_are_their_own_rows(tmp_path):
    repo = _repo(tmp_path)
    varlen = dict(shape="char-rnn-varlen", varlen=True)
    proj = dict(shape="proj", layers=2, hidden=256, batch=64, seq=64, proj=64, dtype="bfloat16")
    _run(repo, "2026-01-02-cpu-test", "2026-01-02T10:00:00+00:00", 1.25,
         extra_rows=(_row("torch-cpu", "train", 1.0, 10.0, **varlen), _row("cpu", "train", 1.1, 11.0, **varlen),
                     _row("torch-cpu", "train", 1.0, 10.0, **proj), _row("cpu", "train", 0.9, 9.0, **proj)))  # fmt: skip
    figs = results_index.current(results_index.load_runs(repo / "bench" / "results", repo))
    specs = {(k[1], k[2], k[3]): f.row["speedup_vs_baseline"] for k, f in figs.items()}
    assert specs == {("char-rnn", "2x128:50:50", "float32"): 1.25,
                     ("char-rnn-varlen", "2x128:50:50v", "float32"): 1.1,
                     ("proj", "2x256:64:64p64", "bfloat16"): 0.9}  # fmt: skip


def test_the_committed_index_and_tables_are_up_to_date():
    assert results_index.main(["--repo", str(REPO), "--check"]) == 0, (
        "run python -m bench.results_index and commit what it writes"
    )
