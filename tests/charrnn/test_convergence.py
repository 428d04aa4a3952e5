"""Convergence: the same tiny char-rnn trained with backend="reference" and with
the fused backend="cpu" follows the same loss curve, and the loss falls.

Tolerance calibrates itself (docs/DESIGN.md, "Chain of trust", link 8): the fused curve
may differ from the float64 curve by at most twice what plain PyTorch in float32
differs by, plus a small floor.
"""

from __future__ import annotations

import pytest
import torch

from charrnn_fast import backends
from charrnn_fast.charrnn.corpora import prepare
from charrnn_fast.charrnn.data import StreamBatcher, load_prepared, split_tokens
from charrnn_fast.charrnn.model import CharRNN, detach_state, lm_loss
from charrnn_fast.charrnn.train import train
from charrnn_fast.charrnn.trainconfig import TrainConfig

STEPS = 60
KW = dict(
    rnn_size=32,
    num_layers=2,
    batch_size=8,
    seq_length=16,
    learning_rate=2e-2,
    train_frac=0.9,
    val_frac=0.1,
    seed=7,
    grad_clip=5.0,
)
TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump!\n"
) * 12


def float64_curve(data_dir: str) -> list[float]:
    """The training loop of charrnn_fast.train, written out in float64 (train() has
    no float64 mode): the truth against which the float32 curves are measured."""
    data = load_prepared(data_dir)
    tokens = split_tokens(data, KW["train_frac"], KW["val_frac"])["train"]
    batches = StreamBatcher(tokens, KW["batch_size"], KW["seq_length"])
    torch.manual_seed(KW["seed"])
    model = CharRNN(len(data.vocab), KW["rnn_size"], KW["num_layers"], backend="reference")
    model = model.double()
    opt = torch.optim.Adam(model.parameters(), lr=KW["learning_rate"])
    state, losses = None, []
    for step in range(STEPS):
        chunk = step % batches.num_chunks
        state = None if chunk == 0 else state
        x, y = batches.batch(chunk)
        logits, state = model(x, state)
        loss = lm_loss(logits, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), KW["grad_clip"])
        opt.step()
        state = detach_state(state)
        losses.append(loss.item())
    return losses


def curve(data_dir: str, ckpt_dir: str, backend: str) -> list[float]:
    cfg = TrainConfig(
        data_dir=data_dir,
        checkpoint_dir=ckpt_dir,
        backend=backend,
        device="cpu",
        dtype="float32",  # compared with a float64 loop
        max_iters=STEPS,
        print_every=1,
        eval_val_every=STEPS,
        progress=False,
        tensorboard=False,
        learning_rate_decay=1.0,
        lr_schedule="char-rnn",  # constant here, as in the float64 loop above
        warmup_iters=0,
        reset_prob=0.0,
        embedding_dim=0,
        max_time=0.0,
        **KW,
    )
    result = train(cfg)
    assert [s for s, _ in result.losses] == list(range(1, STEPS + 1))
    return [v for _, v in result.losses]


def cpu_backend_unusable() -> str | None:
    """Why the fused CPU backend cannot run (None when it can)."""
    return backends.get("cpu").why_not(torch.zeros(1, 1, 4), torch.zeros(4, 1))


@pytest.mark.skipif(cpu_backend_unusable() is not None, reason=f"{cpu_backend_unusable()}")
def test_reference_and_fused_cpu_backends_train_alike(tmp_path):
    (tmp_path / "in.txt").write_text(TEXT)
    data_dir = str(prepare([str(tmp_path / "in.txt")], tmp_path / "data", progress=False)[0])
    ref = torch.tensor(curve(data_dir, str(tmp_path / "ref"), "reference"), dtype=torch.float64)
    cpu = torch.tensor(curve(data_dir, str(tmp_path / "cpu"), "cpu"), dtype=torch.float64)
    truth = torch.tensor(float64_curve(data_dir), dtype=torch.float64)

    plain_err = (ref - truth).abs()  # what float32 rounding alone does to the curve
    fused_err = (cpu - truth).abs()
    tol = 2 * plain_err.max().item() + 1e-6  # floor: 4 float32 ulps of a loss near 3
    print("\nstep  float64    reference  cpu        |ref-f64|  |cpu-f64|  |cpu-ref|")
    for i in range(0, STEPS, 5):
        print(
            f"{i + 1:4d}  {truth[i]:.6f}  {ref[i]:.6f}  {cpu[i]:.6f}  "
            f"{plain_err[i]:.2e}   {fused_err[i]:.2e}   {(cpu[i] - ref[i]).abs():.2e}"
        )
    print(
        f"max |ref-f64| {plain_err.max():.3e}  max |cpu-f64| {fused_err.max():.3e}  "
        f"max |cpu-ref| {(cpu - ref).abs().max():.3e}  tolerance {tol:.3e}"
    )

    # The float64 loop really is train()'s loop: in float32 it tracks train() closely.
    assert plain_err.max() < 1e-3
    assert fused_err.max() <= tol
    assert (cpu - ref).abs().max() <= tol
    # ... and it learns: the last epoch's mean loss (10 chunks) is well below the
    # first's (about ln V = 3.5; unigram statistics alone reach about 3.2).
    first, last = cpu[:10].mean().item(), cpu[-10:].mean().item()
    print(f"mean loss: first epoch {first:.3f}, last epoch {last:.3f}")
    assert last < first - 0.5, (first, last)
