"""--dtype auto (charrnn/precision.py): bfloat16 autocast only where it measures
clearly faster, the measurement leaves the model alone, and the checkpoint
records the precision that was chosen."""

from __future__ import annotations

import pytest
import torch

from charrnn_fast.charrnn import precision
from charrnn_fast.charrnn.checkpoint import load_checkpoint
from charrnn_fast.charrnn.model import CharRNN
from charrnn_fast.charrnn.train import train
from tests.charrnn.test_train import data_dir, tiny  # noqa: F401 (fixture)


@pytest.mark.parametrize(
    "speedup,dtype", [(2.0, "bfloat16"), (precision.MIN_SPEEDUP, "bfloat16"), (1.05, "float32")]
)
def test_bfloat16_only_where_it_measures_clearly_faster(monkeypatch, speedup, dtype):
    monkeypatch.setattr(precision, "measure", lambda *a: speedup)
    model = CharRNN(10, rnn_size=8, num_layers=1)
    got, why = precision.choose(model, 10, 2, 4, torch.device("cpu"))
    assert got == dtype and f"{speedup:.2f}x" in why


def test_a_gpu_gets_float32_without_measuring(monkeypatch):
    def never(*a):
        raise AssertionError("measured on a GPU")

    monkeypatch.setattr(precision, "measure", never)
    assert precision.choose(None, 10, 2, 4, torch.device("cuda"))[0] == "float32"


def test_measuring_leaves_weights_gradients_and_rng_alone():
    torch.manual_seed(0)
    model = CharRNN(12, rnn_size=16, num_layers=2, dropout=0.3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    ratio = precision.measure(model, 12, 3, 5, torch.device("cpu"))
    assert ratio > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training  # the mode it had
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_auto_is_resolved_before_training_and_recorded(data_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(precision, "measure", lambda *a: 3.0)
    train(tiny(data_dir, tmp_path, dtype="auto", max_iters=2, dropout=0.0))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["dtype"] == "bfloat16"
