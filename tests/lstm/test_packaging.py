"""The sdist builds a wheel that installs into a fresh environment and works there:
every header is in it, the Triton kernels are plain files (not the symbolic link
of the checkout), and the metadata pins the torch the extension was compiled
against.

The fresh venv borrows this environment's packages (torch, setuptools, pip)
through a .pth file (torch is gigabytes; nothing is downloaded) and compiles the CPU extension only
(CHARRNN_FAST_CUDA=0): a few minutes.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import importlib.metadata as md, pathlib, torch, charrnn_fast, charrnn_fast._C
from charrnn_fast import kernels
assert "site-packages" in charrnn_fast.__file__, charrnn_fast.__file__
folder = pathlib.Path(kernels.__file__).parent
assert not folder.is_symlink() and (folder / "plan.py").is_file(), folder
m = torch.nn.LSTM(3, 5, 2)
ours = charrnn_fast.from_torch(m, backend="cpu")
x = torch.randn(4, 2, 3)
torch.testing.assert_close(ours(x)[0], m(x)[0])
print("requires", md.requires("charrnn_fast"))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_sdist_builds_and_installs_into_a_fresh_venv(tmp_path):
    # The PEP 517 hook that `python -m build --sdist` calls, without the `build` package.
    hook = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    name = _run([sys.executable, "-c", hook, str(tmp_path)], cwd=REPO).stdout.split()[-1]
    sdist = tmp_path / name
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
    for header in ("csrc/checks.h", "csrc/cpu/gemm.h", "csrc/cpu/pointwise.h"):
        assert header in members, header
    assert members["charrnn_fast/kernels/plan.py"].isfile()  # not a link into ../kernels

    venv = tmp_path / "venv"
    # --without-pip: ensurepip would also bring an old setuptools that shadows ours.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    borrowed = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib.stdout.strip(), "borrowed.pth").write_text("\n".join(dict.fromkeys(borrowed)))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env.update(CHARRNN_FAST_CUDA="0", MAX_JOBS=env.get("MAX_JOBS", "2"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # ninja
    install = [str(py), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index"]
    _run([*install, "--disable-pip-version-check", str(sdist)], env=env, cwd=tmp_path)

    out = _run([str(py), "-c", CHECK], env=env, cwd=tmp_path).stdout
    assert f"'torch=={torch.__version__.split('+')[0]}'" in out, out
    help_text = _run([str(venv / "bin" / "charrnn-fast"), "--help"], env=env, cwd=tmp_path)
    assert "prepare" in help_text.stdout
