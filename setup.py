"""Build of charrnn_fast and its extension `charrnn_fast._C`.

The C++ CPU sources (csrc/*.cpp) are always built. The CUDA sources
(csrc/cuda/*.cu, *.cpp) are built when torch is a CUDA build and nvcc is found,
whether or not a GPU is present; CHARRNN_FAST_CUDA=0|1 forces them off or on.
Install with `pip install -e . --no-build-isolation` (build isolation would pull
a second, different torch into the build).
"""

import glob
import os
import shutil
import site
import sys

from setuptools import find_packages, setup


def _cuda_home() -> str | None:
    # torch guesses CUDA_HOME from `which nvcc` (/usr/local/bin -> /usr/local),
    # which is wrong when nvcc is a symlink or a wrapper: resolve it ourselves.
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for root in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(root, "bin", "nvcc")):
            return root
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


_home = _cuda_home()
if _home:
    os.environ["CUDA_HOME"] = _home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

DEFAULT_CUDA_ARCHS = "7.5;8.0+PTX;8.6;8.9;9.0a"


def _want_cuda() -> bool:
    flag = os.environ.get("CHARRNN_FAST_CUDA", "").strip()
    if flag not in ("", "0", "1"):
        sys.exit(f"CHARRNN_FAST_CUDA must be 0 or 1, got {flag!r}")
    have_nvcc = _home is not None and os.path.exists(os.path.join(_home, "bin", "nvcc"))
    if flag == "1":
        if torch.version.cuda is None:
            sys.exit("CHARRNN_FAST_CUDA=1 but torch is a CPU-only build: install a CUDA build")
        if not have_nvcc:
            sys.exit(
                "CHARRNN_FAST_CUDA=1 but nvcc was not found: set CUDA_HOME or put nvcc on PATH"
            )
        return True
    if flag == "0":
        return False
    return torch.version.cuda is not None and have_nvcc


def _nvidia_includes() -> list[str]:
    # Headers behind ATen/cuda/CUDAContext.h (cuBLAS, cuSPARSE) ship in the
    # nvidia-* wheels that the CUDA build of torch depends on.
    dirs = []
    for sp in [*site.getsitepackages(), site.getusersitepackages()]:
        dirs += glob.glob(os.path.join(sp, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(sp, "nvidia", "*", "include"))
    return sorted(set(dirs))


def _extension():
    here = os.path.dirname(os.path.abspath(__file__))
    cpu_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cpu_sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # -fno-trapping-math lets GCC if-convert the clamps in csrc/cpu/pointwise.h
    # and vectorise the pointwise loops (we never read FP exception flags);
    # NaN and Inf semantics are untouched (no -ffast-math).
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fno-trapping-math"]
    include_dirs = [os.path.join(here, "csrc")]
    if not _want_cuda():
        return CppExtension(
            "charrnn_fast._C",
            cpu_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    # T4 / RTX 20 (7.5: stepwise path only, the persistent kernels need
    # cp.async), A100 (8.0), RTX 30 (8.6), RTX 40 / L4 (8.9), H100/H200 (9.0a),
    # and compute_80 PTX that the driver compiles for newer GPUs.
    # TORCH_CUDA_ARCH_LIST overrides.
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    cuda_sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    return CUDAExtension(
        "charrnn_fast._C",
        cpu_sources + cuda_sources,
        include_dirs=include_dirs + _nvidia_includes(),
        define_macros=[("CHARRNN_FAST_WITH_CUDA", "1")],
        extra_compile_args={
            "cxx": cxx,
            "nvcc": ["-O3", "-std=c++20", "-lineinfo", "-diag-suppress", "3189"],
        },
        extra_link_args=["-fopenmp"],
    )


setup(
    name="charrnn_fast",
    version="0.1.0",
    description="A drop-in torch.nn.LSTM with fused recurrence kernels, and char-rnn on top",
    python_requires=">=3.10",
    # charrnn_fast/kernels is a symbolic link to the top-level kernels/, so the
    # Triton kernels are charrnn_fast.kernels in a source checkout, an editable
    # install and a wheel alike, never a top-level `kernels` module (that name
    # is taken on PyPI).
    packages=find_packages(include=["charrnn_fast", "charrnn_fast.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    # The LSTM library needs torch alone (triton comes with CUDA builds of
    # torch); the char-rnn application's own needs are the `charrnn` extra.
    install_requires=["torch"],
    extras_require={"charrnn": ["numpy", "tqdm", "matplotlib"]},
    entry_points={"console_scripts": ["charrnn-fast=charrnn_fast.charrnn.cli:main"]},
)
