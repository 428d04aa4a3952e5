"""PackedSequence input, as test_nn.py's variable-sequence tests check it:
the same results as stock nn.LSTM (sorted and unsorted batches, with and
without hx, bidirectional, batch_first, proj_size), each sequence as if run
alone, and zeros past each length once padded again."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from tests.conformance import harness
from tests.conformance.harness import BACKENDS, PACKED, build, compare, device_of, run


@pytest.mark.parametrize("case", list(PACKED))
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_matches_stock(backend, case):
    kw, x, packed, hx = harness.packed_inputs(case, torch.float64, device_of(backend))
    m = build(backend, *harness.PACKED_SIZES, **kw).double()
    out, _ = m(packed, hx)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    for a, b in ((out.sorted_indices, packed.sorted_indices),
                 (out.unsorted_indices, packed.unsorted_indices)):  # fmt: skip
        assert (a is None and b is None) or torch.equal(a, b)
    got = run(m, packed, hx, x_leaf=x)
    kw2, x2, packed2, hx2 = harness.packed_inputs(case, torch.float64, "cpu")
    want = run(harness.stock(*harness.PACKED_SIZES, **kw2).double(), packed2, hx2, x_leaf=x2)
    compare(got, want, want, torch.float64, f"{backend} {case}")


@pytest.mark.parametrize("case", [c for c in PACKED if c.endswith("-hx")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_sequences_run_as_if_alone(backend, case):
    kw, x, packed, hx = harness.packed_inputs(case, torch.float64, device_of(backend))
    _, lengths, _, _ = PACKED[case]
    m = build(backend, *harness.PACKED_SIZES, **kw).double()
    bf = kw.get("batch_first", False)
    with torch.no_grad():
        out, (h, c) = m(packed, hx)
        padded, got_lengths = pad_packed_sequence(
            out, batch_first=bf, total_length=max(lengths) + 1
        )
        assert got_lengths.tolist() == lengths
        for i, n in enumerate(lengths):
            seq = (x[i] if bf else x[:, i])[:n]  # [n, I], unbatched
            alone, (h1, c1) = m(seq, (hx[0][:, i], hx[1][:, i]))
            rows = padded[i] if bf else padded[:, i]
            torch.testing.assert_close(rows[:n], alone, rtol=1e-12, atol=1e-12)
            assert not rows[n:].any(), "padding past the length must be zeros"
            torch.testing.assert_close(h[:, i], h1, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(c[:, i], c1, rtol=1e-12, atol=1e-12)
