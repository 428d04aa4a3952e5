import os
import tempfile

import pytest
import torch

# On the CPU, ATen's fused LSTM serves the calls where it measured faster
# (charrnn_fast/backends/dispatch.py). The chain of trust must test our
# kernels, so the tests run them everywhere; tests/lstm/test_dispatch.py checks
# the measured choice itself with "auto", against a cache folder of its own.
os.environ.setdefault("CHARRNN_FAST_DISPATCH", "ours")
os.environ.setdefault("CHARRNN_FAST_CACHE_DIR", tempfile.mkdtemp(prefix="charrnn_fast_cache_"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
