"""bench/run.py on shapes with a projection (proj_size) and variable lengths
(PackedSequence): the LxH:B:T[pP][v] grammar, the lengths, exact FLOPs, rows
through run.py's own code path, and the check catching wrong results there."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from charrnn_fast import backends
from charrnn_fast.backends import Backend, reference

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a top-level folder of the repository, not installed
    sys.path.insert(0, str(REPO))

from bench import config, providers, report  # noqa: E402
from bench import run as bench_run  # noqa: E402
from bench.check import Checker  # noqa: E402

VARLEN, PROJ = "1x16:4:12v", "2x16:4:6p8"


def _sizes(s: config.Shape) -> tuple:
    return tuple(v for k, v in dataclasses.asdict(s).items() if k != "name")


def test_spec_grammar_and_round_trip() -> None:
    s = config.parse_shape("2x256:64:64p64")
    assert (s.layers, s.hidden, s.batch, s.seq, s.proj, s.varlen) == (2, 256, 64, 64, 64, False)
    s = config.parse_shape("2x128:50:50v")
    assert (s.proj, s.varlen, s.out_size) == (0, True, 128)
    s = config.parse_shape("2x256:64:64p64v")
    assert (s.proj, s.varlen, s.out_size, s.spec) == (64, True, 64, "2x256:64:64p64v")
    assert config.PRESETS["proj"].spec == "2x256:64:64p64"
    assert config.PRESETS["char-rnn-varlen"].spec == "2x128:50:50v"
    for s in [*config.PRESETS.values(), config.parse_shape("3x32:5:7p16v")]:
        back = config.parse_shape(s.spec)
        assert _sizes(back) == _sizes(s) and back.spec == s.spec, (s, back)
    for bad, why in (("2x16:4:6p16", "proj_size"), ("2x16:4:6p0", "proj_size"),
                     ("2x16:4:6vp4", "LxH:B:T[pP][v]"), ("2x16:4:6q", "LxH:B:T[pP][v]")):  # fmt: skip
        with pytest.raises(ValueError, match=r"--shapes") as e:
            config.parse_shape(bad)
        assert why in str(e.value), e.value
    # A varlen or projected shape is not its plain twin: each gets its own rows.
    plain, var = config.parse_shape("1x16:4:6"), config.parse_shape("1x16:4:6v")
    assert bench_run._unique([plain, var, config.parse_shape("1x16:4:6")]) == [plain, var]


def test_lengths_are_seeded_and_in_range() -> None:
    s = config.parse_shape("1x16:64:40v")
    lens = config.lengths(s, seed=0)
    assert lens == config.lengths(s, seed=0) and lens != config.lengths(s, seed=1)
    assert len(lens) == 64 and min(lens) >= 10 and max(lens) <= 40
    assert len(set(lens)) > 10  # drawn, not one length for all rows
    assert config.lengths(config.parse_shape("1x16:5:4v")) == [4] * 5  # min(10, T) = T
    assert config.lengths(config.parse_shape("1x16:5:4")) is None
    assert config.tokens(s) == sum(lens) and config.tokens(config.parse_shape("1x16:5:4")) == 20


def test_flops_count_the_projection_and_the_valid_positions_only() -> None:
    # Plain: 2 T B 4H (I + H) per layer, as before.
    assert config.flops(config.parse_shape("2x16:4:6"), "fwd") == 2 * 6 * 4 * 64 * 32 * 2
    # 2x16 P8 over T B = 24 positions, by hand: layer 0 reads I = 16 and h of P = 8
    # (2 * 64 * 24), layer 1 reads P + P (2 * 64 * 16), each projects H -> P (2 * 16 * 8).
    per_position = 2 * 64 * 24 + 2 * 16 * 8 + 2 * 64 * 16 + 2 * 16 * 8
    p = config.parse_shape(PROJ)
    assert config.flops(p, "fwd") == 24 * per_position == 135168
    assert config.flops(p, "fwdbwd") == 3 * 135168
    assert config.flops(p, "train") == 3 * (135168 + 2 * 24 * 8 * config.VOCAB)  # head 8 -> V
    v = config.parse_shape(VARLEN)
    n = sum(config.lengths(v))
    assert n < 48  # some rows end early, and only their steps count
    assert config.flops(v, "fwd") == n * 2 * 64 * 32
    assert config.flops(v, "train") == 3 * n * (2 * 64 * 32 + 2 * 16 * config.VOCAB)
    with pytest.raises(ValueError, match="sample"):
        config.flops(v, "sample")


def test_varlen_and_proj_rows_through_run(tmp_path) -> None:
    """The --quick path in process: every row ok, checked against nn.LSTM in float64,
    with FLOPs and tokens/s over the valid positions."""
    path = tmp_path / "r.json"
    rc = bench_run.main(["--device", "cpu", "--providers", "torch-cpu,cpu", "--shapes",
                         f"{VARLEN},{PROJ}", "--modes", "fwd,fwdbwd,train", "--quick",
                         "--json", str(path)])  # fmt: skip
    assert rc == 0
    doc = json.loads(path.read_text())
    assert set(doc["header"]["cpu_flags"]) <= set(report.CPU_FLAGS)
    rows = doc["rows"]
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows), rows
    v = config.parse_shape(VARLEN)
    n = providers.as_input(torch.zeros(12, 4, 16), config.lengths(v)).data.shape[0]
    for r in rows:
        assert r["oracle"] == "nn.LSTM float64" and r["max_err"] <= r["tol"], r
        proj, varlen = r["shape"] == PROJ, r["shape"] == VARLEN
        assert (r["proj"], r["varlen"]) == (8 if proj else 0, varlen)
        per_position = (
            (2 * 64 * 24 + 2 * 16 * 8 + 2 * 64 * 16 + 2 * 16 * 8) if proj else 2 * 64 * 32
        )
        positions, out = (24, 8) if proj else (n, 16)
        want = positions * per_position
        want = {"fwd": want, "fwdbwd": 3 * want,
                "train": 3 * (want + 2 * positions * out * config.VOCAB)}[r["mode"]]  # fmt: skip
        assert r["gflops"] * 1e9 * r["median_ms"] / 1e3 == pytest.approx(want, rel=1e-9), r
        assert r["tokens_per_s"] == pytest.approx(positions / (r["median_ms"] / 1e3))


def _register(monkeypatch, name: str, **kw) -> None:
    entry = Backend(name, reference.lstm_fwd, reference.lstm_bwd, lambda x, w: None, "test double")
    monkeypatch.setitem(backends._REGISTRY, name, dataclasses.replace(entry, **kw))


@pytest.mark.parametrize("dtype, off", [("float32", 1e-3), ("bfloat16", 0.1)])
def test_the_check_catches_wrong_packed_and_projected_results(monkeypatch, dtype, off) -> None:
    def fwd_off(gx, w_hh, h0, c0, training):  # y off by far more than rounding in dtype
        y, c_all, gates = reference.lstm_fwd(gx, w_hh, h0, c0, training)
        return y + off, c_all, gates

    def bwd_off(*args):  # gradient of the pre-activations 10% too large
        dgx, dw, dh0, dc0 = reference.lstm_bwd(*args)
        return dgx * 1.1, dw, dh0, dc0

    _register(monkeypatch, "fwd-off", fwd=fwd_off)
    _register(monkeypatch, "bwd-off", bwd=bwd_off)
    checker = Checker()
    v, p = config.parse_shape(VARLEN), config.parse_shape(PROJ)
    for shape in (v, p):  # the real backend passes, with the calibrated tolerance of dtype
        for mode in ("fwd", "fwdbwd"):
            verdict = checker.check("cpu", shape, dtype, "cpu", mode)
            assert verdict.ok and verdict.oracle == "nn.LSTM float64", (shape, mode, verdict)
    assert not checker.check("fwd-off", v, dtype, "cpu", "fwd").ok
    assert checker.check("bwd-off", v, dtype, "cpu", "fwd").ok  # forward untouched
    wrong = checker.check("bwd-off", v, dtype, "cpu", "fwdbwd")
    assert not wrong.ok and wrong.worst.startswith("d"), wrong  # a gradient

    # A backend whose projected op is off (the cpu backend's, output shifted).
    def proj_off(*args):
        y, c_all, gates, r = torch.ops.charrnn_fast.lstm_proj_fwd(*args)
        return y + off, c_all, gates, r

    cpu = backends.get("cpu")
    _register(monkeypatch, "proj-off", proj_fwd=proj_off, proj_bwd=cpu.proj_bwd)
    wrong = Checker().check("proj-off", p, dtype, "cpu", "fwd")
    assert not wrong.ok and wrong.worst in ("y", "h_n"), wrong


def test_cpu_runs_time_float32_and_bfloat16_by_default() -> None:
    def dtypes(*argv: str) -> list[str]:
        return bench_run._plan(bench_run.parse_args(["--device", "cpu", *argv]))[4]

    assert dtypes() == ["float32", "bfloat16"]
    assert dtypes("--quick") == ["float32"]
    assert dtypes("--dtypes", "bf16") == ["bfloat16"]


def test_varlen_train_step_scores_the_valid_positions_only(monkeypatch) -> None:
    """train mode: the loss sees N positions (the sum of the lengths) for a varlen
    shape, and the head takes the P features of a projected LSTM."""
    seen = []
    real = providers.lm_loss

    def spy(logits, targets):
        seen.append((tuple(logits.shape), tuple(targets.shape)))
        return real(logits, targets)

    monkeypatch.setattr(providers, "lm_loss", spy)
    n = sum(config.lengths(config.parse_shape(VARLEN)))
    for spec, positions in ((VARLEN, (n,)), (PROJ, (6, 4))):
        step, _ = providers.workload("cpu", "train", config.parse_shape(spec), "float32", "cpu")
        assert torch.isfinite(step())
        assert seen[-1] == ((*positions, config.VOCAB), positions), (spec, seen)
