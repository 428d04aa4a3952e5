"""Compile every Triton LSTM kernel variant for a GPU target, with no GPU needed.

    python -m bench.triton_compile_check [--arch 90] [--H 64 1024] [--dtype bf16]

The interpreter (TRITON_INTERPRET=1) checks the numerics but not what the
compiler accepts: layouts, loop-carried types, the atomics of the barrier. This
runs the real pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin, with the ptxas
that ships in the triton wheel) and prints per kernel the registers, spills and
shared memory, whether the barrier's atomics carry acquire/release order, and
whether its polling is an acquire load (not an atomic).
Run it without TRITON_INTERPRET. It does not run anything: timing and the
barrier's behaviour under contention need a GPU (bench/run.py, tests -m cuda).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from charrnn_fast.kernels import plan as plan_mod

_DT = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
_TORCH_DT = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _sig(fn, ptrs: dict[str, str], consts: dict) -> tuple[dict, dict]:
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in ptrs:
            sig[name] = "*" + ptrs[name]
        else:
            sig[name] = "i32"
    return sig, consts


def _compile(fn, ptrs, consts, num_warps: int, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, consts = _sig(fn, ptrs, consts)
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def _ptxas_v(ptx: str, arch: int) -> str:
    """ptxas -v of the kernel's PTX: registers and spills as the GPU will see them."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    try:  # triton 3.8 takes the arch, older releases did not
        ptxas = get_ptxas(arch)
    except TypeError:
        ptxas = get_ptxas()
    ptxas = getattr(ptxas, "path", ptxas)
    suffix = "a" if arch >= 90 else ""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        out = subprocess.run(
            [ptxas, "-v", f"-arch=sm_{arch}{suffix}", f.name, "-o", os.devnull],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return out.stderr


def _report(label: str, k, arch: int) -> str:
    ptx = k.asm["ptx"]
    log = _ptxas_v(ptx, arch)
    regs = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores", log)
    atoms = sorted(set(re.findall(r"atom\.[\w.]+", ptx)))
    polls = sorted(set(re.findall(r"ld\.acquire\.[\w.]+", ptx)))
    return (
        f"{label:58s} regs={regs[-1] if regs else '?':>3} "
        f"spill={spills[-1] if spills else '?':>5}B "
        f"shared={k.metadata.shared:>6}B warps={k.metadata.num_warps} atoms={atoms or '-'} "
        f"polls={polls or '-'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--H", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--dtype", choices=sorted(_DT), nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--fp32-prec", choices=["ieee", "tf32x3", "tf32"], default="ieee")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("unset TRITON_INTERPRET: this compiles the kernels for a GPU")
    import torch

    # Budgets of an H100 (the compile target has no device to ask).
    from charrnn_fast.backends.plans import H100
    from charrnn_fast.kernels import lstm_persistent as P
    from charrnn_fast.kernels import lstm_small as S

    for dts in args.dtype:
        dt, tdt = _DT[dts], getattr(torch, _TORCH_DT[dts])
        prec = args.fp32_prec if dt == "fp32" else "tf32"
        es = torch.empty((), dtype=tdt).element_size()
        for H in args.H:
            hp = plan_mod.padded_h(H)
            sp = plan_mod.small(args.B, H, es, H100)
            if sp is not None:
                base = {"BLOCK_B": sp.block_b, "BLOCK_H": hp, "PREC": prec, "INTERPRET": False}
                ptr = {n: dt for n in S._fwd_kernel.arg_names if n.endswith("_ptr")}
                ptr["c_ptr"] = "fp32"
                k = _compile(S._fwd_kernel, ptr, {**base, "STORE_GATES": True}, sp.num_warps,
                             args.arch)  # fmt: skip
                print(_report(f"small fwd {dts} H={H} BB={sp.block_b}", k, args.arch), flush=True)
                ptr = {n: dt for n in S._bwd_kernel.arg_names if n.endswith("_ptr")}
                ptr["c_ptr"] = "fp32"
                k = _compile(S._bwd_kernel, ptr, base, sp.num_warps, args.arch)
                print(_report(f"small bwd {dts} H={H} BB={sp.block_b}", k, args.arch), flush=True)
            for pp in (
                plan_mod.persistent(args.B, H, es, H100),
                plan_mod.stepwise(args.B, H),
            ):
                if pp is None:
                    continue
                pers = pp.path == "persistent"
                base = {"BLOCK_B": pp.block_b, "BLOCK_J": pp.block_j, "BLOCK_K": pp.block_k,
                        "W_RESIDENT": pp.w_resident, "PERSISTENT": pers, "PREC": prec,
                        "INTERPRET": False}  # fmt: skip
                ptr = {n: dt for n in P._fwd_kernel.arg_names if n.endswith("_ptr")}
                ptr.update(c_ptr="fp32", count_ptr="i32")
                tag = f"BB={pp.block_b} BJ={pp.block_j} res={int(pp.w_resident)} grid={pp.grid}"
                k = _compile(P._fwd_kernel, ptr, {**base, "STORE_GATES": True}, pp.num_warps,
                             args.arch)  # fmt: skip
                print(_report(f"{pp.path} fwd {dts} H={H} {tag}", k, args.arch), flush=True)
                ptr = {n: dt for n in P._bwd_kernel.arg_names if n.endswith("_ptr")}
                ptr.update(c_ptr="fp32", dh_ptr="fp32", dc_ptr="fp32", count_ptr="i32")
                phases = [(True, True)] if pers else [(True, False), (False, True)]
                for pw, dot in phases:
                    c = {**base, "DO_POINTWISE": pw, "DO_DOT": dot}
                    k = _compile(P._bwd_kernel, ptr, c, pp.num_warps, args.arch)
                    print(_report(f"{pp.path} bwd{'' if pers else ' pw' if pw else ' dot'} "
                                  f"{dts} H={H} {tag}", k, args.arch), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
