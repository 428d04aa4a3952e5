"""Build of charrnn_fast and its extension `charrnn_fast._C`.

The metadata is in pyproject.toml; this file adds what must be computed: the
extension, and the torch requirement, pinned to the torch version the extension
is compiled against (a compiled extension loaded under another torch fails at
import).

The C++ CPU sources (csrc/*.cpp) are always built. The CUDA sources
(csrc/cuda/*.cu, *.cpp) are built when torch is a CUDA build and nvcc is found,
whether or not a GPU is present; CHARRNN_FAST_CUDA=0|1 forces them off or on.
Install with `pip install --no-build-isolation .` (or `-e .`): build isolation
would compile against a second, freshly downloaded torch. An sdist
(`python -m build --sdist`) needs no torch.
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

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
except ImportError:  # an sdist or metadata step, or a build in an isolated environment
    torch = None

# setup.py commands that compile the extension (direct, pip and PEP 517 hooks).
_BUILDS = {"build", "build_ext", "bdist_wheel", "develop", "install", "editable_wheel"}


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
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
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


def _build_args() -> dict:
    """The extension and the pinned torch, or, where nothing is compiled (sdist,
    metadata), an unpinned torch; a compiling command without torch stops here."""
    if torch is None:
        if _BUILDS.intersection(sys.argv[1:]):
            sys.exit(
                "charrnn_fast compiles its extension against the torch of the build "
                "environment, and there is none: install torch, then "
                "`pip install --no-build-isolation .`"
            )
        return {"install_requires": ["torch"]}
    return {
        "ext_modules": [_extension()],
        "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)},
        # The LSTM library needs torch alone (triton comes with CUDA builds of
        # torch), the very version compiled against (2.14.1 for 2.14.1+cu130:
        # the CPU and CUDA builds of one version share the ABI; a CUDA-built
        # extension under a CPU-only torch falls back to the reference backend).
        "install_requires": [f"torch=={torch.__version__.split('+')[0]}"],
    }


setup(
    # charrnn_fast/kernels is a symbolic link to the top-level kernels/, so the
    # Triton kernels are charrnn_fast.kernels in a source checkout, an editable
    # install and a wheel alike, never a top-level `kernels` module (that name
    # is taken on PyPI). The sdist and the wheel hold them as plain files.
    packages=find_packages(include=["charrnn_fast", "charrnn_fast.*"]),
    **_build_args(),
)
