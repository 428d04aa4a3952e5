"""Correctness gate before timing: a provider's outputs and gradients against a
float64 oracle, with a tolerance calibrated on torch.nn.LSTM in the same dtype.

For each tensor k (forward: y, h_n, c_n; backward: y, h_n, c_n, dx and the
gradient of every parameter):

    err_k = max |provider_k - oracle_k|
    tol_k = 2 * max |nn.LSTM(dtype)_k - oracle_k| + floor(dtype) * max(1, max |oracle_k|)

The oracle is the charrnn_fast reference backend in float64 on plain shapes
where the reference is timed, else torch.nn.LSTM in float64 (the tests hold the
two equal to 1e-10), on the same device, with the weights rounded to the dtype
first so that only the arithmetic differs. With a projection or packed input
the oracle is always nn.LSTM: charrnn_fast runs both in code every backend
shares (recurrence.py), which an oracle built on it could not check. Where a
float64 check of the whole shape would be slow (CPU), the check runs on the
first T_check <= T steps (varlen: on lengths drawn for T_check, config.lengths).

Packed input (varlen shapes): y is the output's packed data [N, R], dx the
gradient of the input's packed data [N, I], dy is shaped like y.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from bench import providers
from bench.config import DTYPES, Shape, lengths

# Relative floor per dtype: what rounding alone allows when nn.LSTM happens to be exact.
FLOOR = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}
# Forward FLOPs of one float64 model that a check may cost, per device type (the
# float64 oracle, the calibration and the provider each run forward + backward).
FLOP_BUDGET = {"cpu": 2e9, "cuda": 5e12}
MIN_CHECK_STEPS = 8


@dataclass(frozen=True)
class Verdict:
    ok: bool
    err: float  # max abs error of the worst tensor (largest err/tol)
    tol: float
    worst: str  # name of that tensor
    seq: int  # steps checked
    oracle: str

    def describe(self) -> str:
        return f"max err {self.err:.3g} on {self.worst} > tol {self.tol:.3g}"


def group_of(mode: str) -> str:
    """Which outputs gate a mode: the inference path for fwd, forward + grads otherwise."""
    return "fwd" if mode == "fwd" else "bwd"


def check_steps(shape: Shape, device_type: str) -> int:
    """T_check: the whole sequence unless that exceeds the device's float64 budget."""
    R, H = shape.out_size, shape.hidden
    per_step = (2 * 4 * H * (shape.input_size + R) + 2 * H * shape.proj) * shape.batch
    fits = int(FLOP_BUDGET[device_type] // (per_step * shape.layers))
    return min(shape.seq, max(MIN_CHECK_STEPS, fits))


def _outputs(
    impl: str,
    shape: Shape,
    dtype: torch.dtype,
    dev: torch.device,
    weights: dict[str, Tensor],
    seed: int,
    group: str,
) -> dict[str, Tensor]:
    """The checked tensors of `group`, as float64 on `dev`, for one implementation.

    fwd: y, h_n, c_n of the inference path (eval, torch.no_grad). bwd: y, h_n,
    c_n of the training path, then dx and every parameter's gradient for dy.
    Varlen shapes: packed input, y and dx as packed data (providers.leaf).
    """
    lstm = providers.new_lstm(impl, shape, dtype, dev, weights)
    g = torch.Generator(device=dev).manual_seed(seed + 7)
    x = torch.randn((shape.seq, shape.batch, shape.input_size), device=dev, generator=g)
    inp, x = providers.leaf(providers.as_input(x.to(dtype), lengths(shape, seed)), group != "fwd")
    dy = torch.randn((*x.shape[:-1], shape.out_size), device=dev, generator=g).to(dtype)
    if group == "fwd":
        lstm.eval()
        with torch.no_grad():
            y, (h, c) = lstm(inp)
        out = {"y": providers.data_of(y), "h_n": h, "c_n": c}
    else:
        lstm.train()  # dropout is 0; cuDNN computes no backward in eval mode
        y, (h, c) = lstm(inp)
        y = providers.data_of(y)
        names = [n for n, _ in lstm.named_parameters()]
        grads = torch.autograd.grad(y, [x, *lstm.parameters()], dy)
        out = {"y": y, "h_n": h, "c_n": c, "dx": grads[0]}
        out.update({f"d{n}": gr for n, gr in zip(names, grads[1:], strict=True)})
    return {k: v.detach().to(torch.float64) for k, v in out.items()}


def _max_err(a: Tensor, b: Tensor) -> float:
    return (a - b).abs().max().item()


def _weights(shape: Shape, dtype: str, seed: int) -> dict[str, Tensor]:
    # Rounded to the dtype once, so the oracle sees exactly the provider's weights.
    return {k: v.to(DTYPES[dtype]) for k, v in providers.seeded_weights(shape, seed).items()}


class Checker:
    """Checks providers; caches the oracle, the calibration and each verdict."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._truth_cache: dict[tuple, tuple[dict, dict, str]] = {}
        self._verdicts: dict[tuple, Verdict] = {}

    def _truth(self, shape: Shape, dtype: str, dev: torch.device, group: str):
        """(oracle outputs, calibration error per tensor, oracle name), cached."""
        key = (shape, dtype, str(dev), group)
        if key not in self._truth_cache:
            weights = _weights(shape, dtype, self.seed)
            small = providers.skip_reason("reference", shape, "float64", dev.type) is None
            # Projection and packing run in code all backends share: nn.LSTM checks them.
            small = small and not (shape.proj or shape.varlen)
            impl = "reference" if small else "torch"
            name = ("reference" if small else "nn.LSTM") + " float64"
            oracle = _outputs(impl, shape, torch.float64, dev, weights, self.seed, group)
            calib = _outputs("torch", shape, DTYPES[dtype], dev, weights, self.seed, group)
            errs = {k: _max_err(calib[k], oracle[k]) for k in oracle}
            self._truth_cache[key] = (oracle, errs, name)
        return self._truth_cache[key]

    def check(self, provider: str, shape: Shape, dtype: str, device: str, mode: str) -> Verdict:
        """The verdict on `provider` for the outputs that gate `mode`."""
        group = group_of(mode)
        key = (provider, shape, dtype, device, group)
        if key in self._verdicts:
            return self._verdicts[key]
        dev = providers.device_of(provider, device)
        short = replace(shape, seq=check_steps(shape, dev.type))
        oracle, calib, oracle_name = self._truth(short, dtype, dev, group)
        weights = _weights(short, dtype, self.seed)
        impl = providers.impl_of(provider)
        got = _outputs(impl, short, DTYPES[dtype], dev, weights, self.seed, group)
        worst = None
        for k, ref in oracle.items():
            err = _max_err(got[k], ref)
            tol = 2 * calib[k] + FLOOR[dtype] * max(1.0, ref.abs().max().item())
            ratio = float("inf") if err != err else err / tol  # NaN never passes
            if worst is None or ratio > worst[0]:
                worst = (ratio, err, tol, k)
        ratio, err, tol, name = worst
        self._verdicts[key] = Verdict(ratio <= 1.0, err, tol, name, short.seq, oracle_name)
        return self._verdicts[key]
