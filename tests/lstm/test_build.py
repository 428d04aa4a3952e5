"""The extension was built as asked, and imports on a machine without a GPU."""

import os

import pytest

from charrnn_fast import _ops


def test_extension_loaded():
    assert _ops.load_error() is None


@pytest.mark.skipif(os.environ.get("CHARRNN_FAST_CUDA") != "1", reason="CUDA build not forced")
def test_cuda_sources_were_compiled_and_linked():
    # CI forces CHARRNN_FAST_CUDA=1: the CUDA kernels must be inside _C even
    # though this machine has no GPU to run them.
    assert _ops.with_cuda
