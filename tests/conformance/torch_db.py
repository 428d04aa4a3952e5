"""nn.LSTM's entry in the installed torch's `module_db` (torch.testing._internal):
its sample inputs and its error inputs, named for test ids.

torch.testing._internal is torch's own test support and not a public API, so
every attribute is looked up defensively: what this torch lacks becomes a
skip that says what is missing, never an import error at collection.
"""

from __future__ import annotations

import re
import sys
import types
import unittest
from typing import Any

import torch
from torch import nn


def _common_modules() -> tuple[types.ModuleType | None, str]:
    """torch.testing._internal.common_modules, or None and why not."""
    try:
        import expecttest  # noqa: F401
    except ImportError:
        # torch's common_utils imports expecttest (a test-only package, not a
        # dependency of the wheel) for the base class of its TestCase alone;
        # module_db never uses it, so an empty stand-in lets it load.
        stub = types.ModuleType("expecttest")
        stub.TestCase = unittest.TestCase
        sys.modules["expecttest"] = stub
    try:
        from torch.testing._internal import common_modules
    except Exception as e:  # any import failure of torch's internals is a skip reason
        return None, f"torch.testing._internal.common_modules does not import: {e!r}"
    return common_modules, ""


_CM, _WHY = _common_modules()


def lstm_info() -> tuple[Any, str]:
    """The ModuleInfo of nn.LSTM, or None and the reason it is unavailable."""
    if _CM is None:
        return None, _WHY
    infos = [m for m in getattr(_CM, "module_db", []) if m.module_cls is nn.LSTM]
    if len(infos) != 1:
        return None, f"module_db of torch {torch.__version__} has {len(infos)} nn.LSTM entries"
    return infos[0], ""


INFO, MISSING = lstm_info()


def _case_id(mi: Any) -> str:
    """A readable id from a sample's constructor input and whether it passes hx."""
    kw = mi.constructor_input.kwargs
    parts = [
        "bias" if kw.get("bias", True) else "nobias",
        "bf" if kw.get("batch_first", False) else "tf",
        "bi" if kw.get("bidirectional", False) else "uni",
        f"p{kw.get('proj_size', 0)}",
        "hx" if len(mi.forward_input.args) > 1 else "nohx",
    ]
    return "-".join(parts)


def samples(dtype: torch.dtype = torch.float64, training: bool = True) -> dict[str, Any]:
    """module_db's ModuleInputs for nn.LSTM on the CPU, by case id; their tensors
    are drawn from a fixed seed, so every call gives the same values."""
    if INFO is None:
        return {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        got = INFO.module_inputs_func(
            INFO, device="cpu", dtype=dtype, requires_grad=False, training=training
        )
    out = {}
    for mi in got:
        key = _case_id(mi)
        assert key not in out, f"two module_db samples map to the id {key}"
        out[key] = mi
    return out


def error_samples(device: str = "cpu") -> dict[str, Any]:
    """module_db's ErrorModuleInputs for nn.LSTM (float32, on `device`), by id."""
    func = getattr(INFO, "module_error_inputs_func", None)
    if func is None:
        return {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        got = func(INFO, device=device, dtype=torch.float32, requires_grad=False, training=True)
    out = {}
    for e in got:
        # Named by what is wrong (the start of the expected message), so ids stay
        # put when torch adds or reorders cases.
        where = "ctor" if e.error_on.name == "CONSTRUCTION_ERROR" else "fwd"
        words = re.findall(r"[A-Za-z_]+", e.error_regex)[:4]
        base = "-".join([where, *words])
        key, n = base, 1
        while key in out:
            n += 1
            key = f"{base}-{n}"
        out[key] = e
    return out


CASE_IDS = list(samples()) or ["module_db-unavailable"]
ERROR_IDS = list(error_samples()) or ["module_db-unavailable"]
