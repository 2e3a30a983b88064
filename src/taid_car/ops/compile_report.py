"""Ahead-of-time compile check of the Triton resampler for real GPUs, with no GPU needed.

Compiles every kernel variant the autotuner can pick (forward; backward for kernels/offsets;
backward with the image gradient) × every offered tile configuration × every supported dtype
combination × every target architecture, with the ``ptxas`` bundled in Triton's wheel, and
reports per variant: registers per thread, spill stores/loads and stack frame (bytes, from
``ptxas -v``), shared memory, the global loads in the PTX (vector vs scalar) and the atomics
(relaxed-order ones in brackets). A variant *fails* on a compile error or on any register
spill (float64 is offered its own smaller tiles so that it does not spill either).

    python -m taid_car.ops.compile_report [--arch 80 90] [--jobs 2] [--json F] [--markdown F]

Exits 1 when a variant fails. Runs compiled Triton, so ``TRITON_INTERPRET`` must be unset or 0
(the command refuses otherwise). Pointer arguments are compiled as 16-byte aligned (every torch
allocation is) and h·w as a multiple of 16 (e.g. 48×48 training crops), the specialisation
under which the loads of kernels and offsets can vectorise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from taid_car.atomic_write import write_atomically

ARCHS = (80, 90)
KERNELS = ("forward", "backward", "backward+image")
# name → (hr dtype, kernels/offsets dtype); "fp32+bf16" is a float32 image with bfloat16
# kernels and offsets, as the kernel net produces them under bf16 autocast.
DTYPES = {
    "fp32": ("fp32", "fp32"),
    "fp16": ("fp16", "fp16"),
    "bf16": ("bf16", "bf16"),
    "fp32+bf16": ("fp32", "bf16"),
    "fp64": ("fp64", "fp64"),
}
_PTXAS = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
    r"(?P<loads>\d+) bytes spill loads"
)
_REGS = re.compile(r"Used (?P<regs>\d+) registers")


@dataclass(frozen=True)
class Variant:
    """One compiled kernel: which kernel, dtypes, tile (BLOCK_P, BLOCK_T, warps), sm_<arch>."""

    kernel: str
    dtypes: str
    block_p: int
    block_t: int
    num_warps: int
    arch: int

    @property
    def fp64(self) -> bool:
        return self.dtypes == "fp64"


def variants(archs=ARCHS, kernels=KERNELS, dtypes=tuple(DTYPES)) -> list[Variant]:
    """Every (kernel, dtypes, configuration, arch) the autotuner can launch."""
    from . import triton_kernels as tk

    out = []
    for arch in archs:
        for kernel in kernels:
            for dt in dtypes:
                for cfg in tk.configs_for(dt == "fp64"):
                    bp, bt = cfg.kwargs["BLOCK_P"], cfg.kwargs["BLOCK_T"]
                    out.append(Variant(kernel, dt, bp, bt, cfg.num_warps, arch))
    return out


def _signature(fn, v: Variant) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of ``fn`` for variant ``v``, as the launcher would pass."""
    import triton.language as tl

    from . import triton_kernels as tk

    hr_t, k_t = DTYPES[v.dtypes]
    acc = "fp64" if "fp64" in (hr_t, k_t) else "fp32"
    out_t = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp64": "fp64"}[
        "fp32" if v.dtypes == "fp32+bf16" else hr_t
    ]
    ptr_types = {
        "xp_ptr": hr_t, "k_ptr": k_t, "oh_ptr": k_t, "ov_ptr": k_t, "out_ptr": out_t,
        "gout_ptr": out_t, "gx_ptr": acc, "gk_ptr": k_t, "gh_ptr": k_t, "gv_ptr": k_t,
    }
    floats = {"wf", "Wf", "hf", "Hf", "s"}
    consts = {
        "ACC": tl.float64 if acc == "fp64" else tl.float32,
        "CP": 4,
        "BLOCK_C": tk.block_c(3),
        "INDEX64": False,
        "NEED_X": v.kernel == "backward+image",
        "BLOCK_P": v.block_p,
        "BLOCK_T": v.block_t,
    }
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + ptr_types[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name == "HW":
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, {k: c for k, c in consts.items() if k in fn.arg_names}, attrs


def compile_variant(v: Variant) -> dict:
    """Compile ``v`` for sm_<arch> with the bundled ptxas; registers, spills and loads as a dict."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import triton_kernels as tk

    fn = (tk._fwd_kernel if v.kernel == "forward" else tk._bwd_kernel).fn
    sig, consts, attrs = _signature(fn, v)
    row = asdict(v) | {"ok": False, "error": None}
    log = io.StringIO()
    t0 = time.perf_counter()
    prev = (knobs.compilation.always_compile, knobs.nvidia.dump_ptxas_log)
    try:
        knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its log
        knobs.nvidia.dump_ptxas_log = True
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(fn, sig, constexprs=consts, attrs=attrs),
                target=GPUTarget("cuda", v.arch, 32),
                options={"num_warps": v.num_warps, "enable_fp_fusion": tk.FP_FUSION},
            )
    except Exception as e:  # noqa: BLE001 - a compile error is a result to report, not a crash
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        return row
    finally:
        knobs.compilation.always_compile, knobs.nvidia.dump_ptxas_log = prev
    row["seconds"] = round(time.perf_counter() - t0, 2)
    text = log.getvalue()
    regs, spills = _REGS.search(text), _PTXAS.search(text)
    if regs is None or spills is None:
        row["error"] = f"no ptxas -v report in the compile log: {text[-300:]!r}"
        return row
    ptx = compiled.asm["ptx"]
    row.update(
        ok=True,
        registers=int(regs["regs"]),
        spill_store_bytes=int(spills["stores"]),
        spill_load_bytes=int(spills["loads"]),
        stack_bytes=int(spills["stack"]),
        shared_bytes=int(compiled.metadata.shared),
        vector_loads=len(re.findall(r"ld\.global(?:\.\w+)*\.v[248]\.", ptx)),
        scalar_loads=len(re.findall(r"ld\.global(?:\.\w+)*\.(?:b|f|u|s)\d+\s", ptx)),
        atomics=len(re.findall(r"\b(?:red|atom)\.global", ptx)),
        relaxed_atomics=len(re.findall(r"\b(?:red|atom)\.global[\w.]*\.relaxed\.", ptx)),
    )
    return row


def failures(rows: list[dict]) -> list[str]:
    """Why each failing row fails: a compile error or a register spill."""
    out = []
    for r in rows:
        name = _name(r)
        if not r["ok"]:
            out.append(f"{name}: {r['error']}")
        elif r["spill_store_bytes"] or r["spill_load_bytes"]:
            out.append(
                f"{name}: spills {r['spill_store_bytes']} B stores / {r['spill_load_bytes']} B loads"
            )
    return out


def _name(r: dict) -> str:
    return (
        f"sm_{r['arch']} {r['kernel']} {r['dtypes']} "
        f"P{r['block_p']}×T{r['block_t']} w{r['num_warps']}"
    )


def markdown(rows: list[dict]) -> str:
    """The report as a markdown table, one row per variant, plus a one-line summary."""
    head = (
        "| arch | kernel | dtypes | BLOCK_P×BLOCK_T | warps | registers | spill st/ld B "
        "| stack B | shared B | vector / scalar loads | atomics (relaxed) |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        cfg = f"{r['block_p']}×{r['block_t']}"
        if not r["ok"]:
            lines.append(
                f"| sm_{r['arch']} | {r['kernel']} | {r['dtypes']} | {cfg} | {r['num_warps']} "
                f"| **error** | | | | | {r['error']} |"
            )
            continue
        lines.append(
            f"| sm_{r['arch']} | {r['kernel']} | {r['dtypes']} | {cfg} | {r['num_warps']} "
            f"| {r['registers']} | {r['spill_store_bytes']}/{r['spill_load_bytes']} "
            f"| {r['stack_bytes']} | {r['shared_bytes']} | {r['vector_loads']} / {r['scalar_loads']} "
            f"| {r['atomics']} ({r['relaxed_atomics']}) |"
        )
    bad = failures(rows)
    regs = [r["registers"] for r in rows if r["ok"]]
    summary = (
        f"\n{len(rows)} variants, {len(regs)} compiled, {len(bad)} failing (compile error or "
        f"register spill); registers per thread {min(regs, default=0)}-{max(regs, default=0)}.\n"
    )
    return head + "\n".join(lines) + "\n" + summary


def _environment() -> dict:
    import triton

    return {"triton": triton.__version__, "python": sys.version.split()[0]}


def run(archs=ARCHS, jobs: int = 1, kernels=KERNELS, dtypes=tuple(DTYPES)) -> list[dict]:
    """Compile all :func:`variants` (``jobs`` processes) and return one row per variant."""
    todo = variants(archs, kernels, dtypes)
    if jobs <= 1:
        return [compile_variant(v) for v in todo]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(compile_variant, todo))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities ×10")
    ap.add_argument("--kernel", nargs="+", default=list(KERNELS), choices=KERNELS)
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    ap.add_argument("--json", help="write the rows (and environment) here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        ap.error("TRITON_INTERPRET is set: the report compiles real GPU code; unset it")
    t0 = time.perf_counter()
    rows = run(args.arch, args.jobs, args.kernel, args.dtypes)
    table = markdown(rows)
    print(table)
    print(f"compiled in {time.perf_counter() - t0:.0f} s with {args.jobs} process(es)")
    if args.json:
        write_atomically(args.json, json.dumps({"environment": _environment(), "variants": rows}, indent=1))
    if args.markdown:
        write_atomically(args.markdown, table)
    bad = failures(rows)
    for line in bad:
        print("FAIL", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
