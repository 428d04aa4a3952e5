import os

import pytest
import torch

# The cpu backend hands float32 calls to ATen's fused LSTM where that is faster
# (charrnn_fast/backends/cpu.py). The chain of trust must test our kernels, so
# the tests run them everywhere; tests/lstm/test_cpu_paths.py checks the
# automatic choice itself with "auto".
os.environ.setdefault("CHARRNN_FAST_CPU_FORWARD", "ours")
os.environ.setdefault("CHARRNN_FAST_CPU_TRAIN", "ours")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
