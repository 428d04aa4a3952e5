"""The extension was built as asked, and imports on a machine without a GPU."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from charrnn_fast import _ops


def test_extension_loaded():
    assert _ops.load_error() is None


@pytest.mark.skipif(os.environ.get("CHARRNN_FAST_CUDA") != "1", reason="CUDA build not forced")
def test_cuda_sources_were_compiled_and_linked():
    # CI forces CHARRNN_FAST_CUDA=1: the CUDA kernels must be inside _C even
    # though this machine has no GPU to run them.
    assert _ops.with_cuda


def _cuobjdump() -> str | None:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    for cand in (os.path.join(home, "bin", "cuobjdump"), shutil.which("cuobjdump")):
        if cand and os.path.exists(cand):
            return cand
    triton = pytest.importorskip("triton")
    cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(cand) if cand.exists() else None


@pytest.mark.skipif(
    os.environ.get("CHARRNN_FAST_CUDA") != "1" or bool(os.environ.get("TORCH_CUDA_ARCH_LIST")),
    reason="CUDA build not forced, or built for TORCH_CUDA_ARCH_LIST",
)
def test_cuda_kernels_built_for_the_default_architectures():
    # setup.py's DEFAULT_CUDA_ARCHS: every kernel has machine code for each
    # architecture, and PTX for the one marked +PTX.
    setup_py = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    archs = re.search(r'DEFAULT_CUDA_ARCHS = "([^"]+)"', setup_py).group(1).split(";")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (CUDA_HOME, PATH or the triton wheel)")
    so = next(str(p) for p in Path(_ops.__file__).parent.glob("_C*.so"))

    def listing(kind: str) -> str:
        return subprocess.run([tool, kind, so], capture_output=True, text=True, check=True).stdout

    elf, ptx = listing("--list-elf"), listing("--list-ptx")
    kernels = ("persistent_fwd", "persistent_bwd", "stepwise", "wavefront_fwd", "wavefront_bwd")
    for arch in archs:
        sm = "sm_" + arch.removesuffix("+PTX").replace(".", "")
        for k in kernels:
            assert f"{k}.{sm}.cubin" in elf, f"no {sm} code for {k}.cu in {so}:\n{elf}"
            if arch.endswith("+PTX"):
                assert f"{k}.{sm}.ptx" in ptx, f"no {sm} PTX for {k}.cu in {so}:\n{ptx}"
