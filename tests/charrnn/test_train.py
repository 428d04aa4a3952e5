"""Training: exact resume, Ctrl-C, checkpoints, schedule, options, logs."""

from __future__ import annotations

import csv
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from charrnn_fast.charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.errors import CheckpointError, UserError, VocabError
from charrnn_fast.charrnn.schedule import learning_rate_at
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig

TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("corpus")
    (root / "in.txt").write_text(TEXT * 2)
    out, _ = prepare([str(root / "in.txt")], root / "data", progress=False)
    return str(out)


def tiny(data_dir: str, ckpt_dir: Path, **kw) -> TrainConfig:
    """A seconds-long run that crosses epoch boundaries (5 chunks per epoch) with
    dropout and learning-rate decay active, so resuming must restore all of it."""
    base = dict(
        data_dir=data_dir,
        checkpoint_dir=str(ckpt_dir),
        rnn_size=16,
        num_layers=2,
        dropout=0.3,
        batch_size=4,
        seq_length=8,
        train_frac=0.7,
        val_frac=0.3,
        learning_rate=1e-2,
        learning_rate_decay=0.5,
        learning_rate_decay_after=1,
        lr_schedule="char-rnn",
        max_iters=12,
        max_time=0.0,  # step-bounded: resumes bit-identically
        print_every=1,
        eval_val_every=4,
        device="cpu",
        backend="cpu",
        # Runs compared bit for bit: one precision and a fixed thread count, not
        # choices measured on a machine whose load may change between them.
        dtype="float32",
        threads=torch.get_num_threads(),
        progress=False,
        tensorboard=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_continues_exactly(data_dir, tmp_path):
    full = train(tiny(data_dir, tmp_path / "full"))
    assert [s for s, _ in full.losses] == list(range(1, 13))
    first = train(tiny(data_dir, tmp_path / "split", max_iters=6))
    second = train(tiny(data_dir, tmp_path / "split", max_iters=12, resume=True))
    print("full  ", [f"{v:.6f}" for _, v in full.losses])
    print("resume", [f"{v:.6f}" for _, v in first.losses + second.losses])
    # Same process, same ops: the losses are bit-identical, not merely close.
    assert first.losses + second.losses == full.losses
    assert full.losses[-1][1] < full.losses[0][1]
    a, b = params(tmp_path / "full" / "last.pt"), params(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "split" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["train_loss"]] == list(range(1, 13))  # appended


def test_ctrl_c_saves_and_resume_matches_uninterrupted(data_dir, tmp_path):
    full = train(tiny(data_dir, tmp_path / "full", max_iters=9))

    def press_ctrl_c(step: int, loss: float | None) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # goes to the training loop's handler

    cut = train(tiny(data_dir, tmp_path / "cut", max_iters=9), on_step=press_ctrl_c)
    assert cut.interrupted and cut.step == 5
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert ckpt["step"] == 5 and ckpt["position"] == {"epoch": 1, "chunk": 0, "chunks_per_epoch": 5}
    rest = train(tiny(data_dir, tmp_path / "cut", max_iters=9, resume=True))
    assert not rest.interrupted
    assert cut.losses + rest.losses == full.losses
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_checkpoint_contents_load_with_weights_only(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "c", max_iters=4))
    raw = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "config", "vocab", "step", "rng", "hidden", "position"):
        assert key in raw
    assert raw["step"] == 4 and isinstance(raw["rng"]["torch"], torch.Tensor)
    assert [tuple(h.shape) for h in raw["hidden"]] == [(2, 4, 16), (2, 4, 16)]
    assert (tmp_path / "c" / "best.pt").is_file()
    assert not [p for p in os.listdir(tmp_path / "c") if p.endswith(".tmp")]


def test_atomic_save_keeps_the_old_checkpoint_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"step": 2, "x": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # temporary file removed


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a charrnn_fast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_resume_refuses_another_vocabulary(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "c", max_iters=2))
    (tmp_path / "other.txt").write_text("completely different words here, XYZ! " * 20)
    other, _ = prepare([str(tmp_path / "other.txt")], tmp_path / "other", progress=False)
    before = (tmp_path / "c" / "last.pt").read_bytes()
    with pytest.raises(VocabError, match=r"vocabulary mismatch.*only in"):
        train(tiny(str(other), tmp_path / "c", max_iters=4, resume=True))
    assert (tmp_path / "c" / "last.pt").read_bytes() == before  # nothing lost


def test_a_new_run_does_not_overwrite_an_old_one(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "c", max_iters=2))
    with pytest.raises(UserError, match="--resume"):
        train(tiny(data_dir, tmp_path / "c", max_iters=2))
    train(tiny(data_dir, tmp_path / "c", max_iters=1, overwrite=True))
    assert load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 1


def test_init_from_loads_weights_and_restarts_the_count(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "a", max_iters=4, rnn_size=24))
    r = train(
        tiny(
            data_dir,
            tmp_path / "b",
            max_iters=1,
            eval_val_every=100,
            init_from=str(tmp_path / "a" / "last.pt"),
        )
    )
    assert r.step == 1
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["model_config"]["rnn_size"] == 24  # architecture from the checkpoint


def test_learning_rate_schedule_follows_char_rnn():
    cfg = TrainConfig(learning_rate=1.0, learning_rate_decay=0.5, learning_rate_decay_after=3)
    assert [learning_rate_at(cfg, e) for e in range(6)] == [1, 1, 1, 0.5, 0.25, 0.125]
    cfg = replace(cfg, learning_rate_decay=1.0)
    assert learning_rate_at(cfg, 50) == 1.0


@pytest.mark.parametrize(
    "kw",
    [
        dict(optimizer="adamw", weight_decay=0.1, model="gru"),
        dict(optimizer="rmsprop", grad_clip_mode="value", model="rnn", embedding_dim=8),
        dict(dtype="bfloat16", backend="reference"),
    ],
    ids=["adamw-gru", "rmsprop-value-clip-rnn", "bf16"],
)
def test_options_train(data_dir, tmp_path, kw):
    r = train(tiny(data_dir, tmp_path / "c", max_iters=6, eval_val_every=6, **kw))
    losses = [v for _, v in r.losses]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert r.val_losses and r.val_losses[-1][0] == 6
    assert (
        load_checkpoint(tmp_path / "c" / "last.pt")["config"]["optimizer"]
        == tiny(data_dir, tmp_path, **kw).optimizer
    )


def test_corpus_smaller_than_one_batch(data_dir, tmp_path):
    with pytest.raises(UserError, match="one batch needs"):
        train(tiny(data_dir, tmp_path / "c", batch_size=64, seq_length=64))
    assert not (tmp_path / "c" / "last.pt").exists()


def test_nanogpt_split_and_max_epochs(data_dir, tmp_path):
    from charrnn_fast.charrnn.trainconfig import config_from_args

    cfg = config_from_args({"nanogpt_split": True, "max_epochs": 2.0, "max_iters": 0})
    assert (cfg.train_frac, cfg.val_frac) == (0.9, 0.1)
    r = train(
        tiny(
            data_dir,
            tmp_path / "c",
            max_iters=0,
            max_epochs=2.0,
            train_frac=0.9,
            val_frac=0.1,
            eval_val_every=1000,
        )
    )
    # 0.9 * 264 tokens -> 237 train tokens; (237-1)//4 = 59 per row; 59//8 = 7 chunks.
    assert r.step == 14 and r.val_losses[-1][0] == 14
