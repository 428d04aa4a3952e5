"""Register use and SASS instruction counts of the persistent CUDA kernels.

Compiles csrc/cuda/persistent_{fwd,bwd}.cu alone (no torch needed) with
`nvcc -cubin -Xptxas -v` for one architecture and disassembles the cubins with
cuobjdump (the CUDA toolkit's, or the copy in the triton wheel), then prints
one row per kernel: registers, spills, and the count of the opcodes the
review of issue 10 is about (static counts in the kernel body, not executed
counts). No GPU needed.

    python bench/sass_stats.py [--arch sm_90a] [--md OUT.md] [-D NAME=VALUE ...] [--root TREE]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Opcode groups (SASS mnemonic before the first '.', or the whole mnemonic).
GROUPS = {
    "HMMA": ("HMMA",),
    "LDSM": ("LDSM",),
    "LDS": ("LDS",),
    "LD (generic)": ("LD",),
    "LDG": ("LDG",),
    "LDGSTS": ("LDGSTS",),
    "STS": ("STS",),
    "MEMBAR": ("MEMBAR",),
    "CCTL": ("CCTL",),
    "FENCE": ("FENCE",),
    "BAR": ("BAR",),
}


def _tool(name: str) -> str:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    for cand in (os.path.join(home, "bin", name), shutil.which(name)):
        if cand and os.path.exists(cand):
            return cand
    try:
        import triton

        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if cand.exists():
            return str(cand)
    except ImportError:
        pass
    sys.exit(f"sass_stats: {name} not found (CUDA_HOME, PATH or the triton wheel)")


def _short(mangled: str) -> str:
    """lstm_fwd_persistent<bf16> from the mangled kernel name."""
    kind = "fwd" if "lstm_fwd" in mangled else "bwd"
    dt = "fp32" if "persistentIf" in mangled else "bf16" if "bfloat16" in mangled else "fp16"
    return f"{kind} {dt}"


def stats(arch: str, defines: list[str], root: Path = ROOT) -> list[dict[str, object]]:
    nvcc, cuobjdump = _tool("nvcc"), _tool("cuobjdump")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in ("persistent_fwd.cu", "persistent_bwd.cu"):
            cubin = os.path.join(tmp, src + ".cubin")
            cmd = [nvcc, "-std=c++20", "-O3", f"-arch={arch}", "-cubin", "-Xptxas", "-v"]
            cmd += ["-diag-suppress", "3189", "-I", str(root / "csrc" / "cuda")]
            cmd += [f"-D{d}" for d in defines] + [str(root / "csrc" / "cuda" / src), "-o", cubin]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            regs: dict[str, tuple[int, str]] = {}
            name = None
            for line in res.stderr.splitlines():
                m = re.search(r"Compiling entry function '(\w+)'", line)
                if m:
                    name = m.group(1)
                m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m and name:
                    regs[name] = (0, f"{m.group(1)}/{m.group(2)}")
                m = re.search(r"Used (\d+) registers", line)
                if m and name:
                    regs[name] = (int(m.group(1)), regs.get(name, (0, "?"))[1])
            sass = subprocess.run(
                [cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True
            ).stdout
            for block in sass.split("Function : ")[1:]:
                fname = block.split()[0]
                ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", block)
                row: dict[str, object] = {"kernel": _short(fname)}
                row["regs"], row["spill st/ld"] = regs.get(fname, (0, "?"))
                row["instrs"] = len(ops)
                for group, names in GROUPS.items():
                    row[group] = sum(op in names for op in ops)
                rows.append(row)
    return sorted(rows, key=lambda r: str(r["kernel"]))


def markdown(rows: list[dict[str, object]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90a", help="nvcc -arch (default sm_90a)")
    ap.add_argument("--md", help="also write the table to this file")
    ap.add_argument("-D", dest="defines", action="append", default=[], help="extra -D for nvcc")
    ap.add_argument("--root", type=Path, default=ROOT, help="source tree (default: this one)")
    args = ap.parse_args()
    table = markdown(stats(args.arch, args.defines, args.root))
    print(table, end="")
    if args.md:
        Path(args.md).write_text(table)


if __name__ == "__main__":
    main()
