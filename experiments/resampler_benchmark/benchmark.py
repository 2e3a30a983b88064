"""Benchmark of the CAR adaptive resampler (``taid_car.ops.adaptive_resample``).

CPU (always): HR B×C×S×S at ×s with k = 3s+1 (default 16×3×192×192 at ×4, k = 13), against
  (a) two naive versions of what a user would write, one ``F.grid_sample`` per tap,
      accumulated: ``naive-slice`` takes each tap's kernel and offsets by indexing
      (``K[:, t:t+1]``, ``offsets[:, t]``: the typical loop, and the one the issue's timing,
      ~0.2 s forward and ~3 s backward, describes; every per-tap index backward writes a
      full-size zero gradient) and ``naive-unbind`` splits them once with ``unbind`` (the
      stronger baseline, same result), and
  (b) ``floor``: the memory-traffic floor, one read of kernels and offsets (a ``.sum()`` each).
  Modes: ``fwd`` (no autograd), ``fwd+bwd`` (all four inputs need gradients, HR included),
  ``fwd+bwd(K,Δ)`` (HR is data: CAR's training case). Runs are interleaved (each round runs
  every method once) and the median and minimum over rounds are reported.
  Peak memory: every (method, mode) runs once in a fresh subprocess that first warms the code
  up on a tiny input (imports, JIT cache), builds the inputs, resets the kernel's RSS
  high-water mark (``/proc/self/clear_refs`` ← 5), reads VmRSS, runs the op once and reads
  VmHWM: peak − baseline is the extra resident memory the op needed, outputs and grads
  included (tracemalloc does not see torch's allocations; RSS does).
  OpenMP threads spin between parallel regions (``OMP_WAIT_POLICY=ACTIVE`` unless set): with
  the default passive policy each of the naive loop's ~2,500 small torch ops can wait
  milliseconds for a sleeping thread on a busy machine, which made it 10-40x slower here.
GPU: not here; ``make gpu-check`` (experiments/gpu_check/gpu_check.py) measures the same op on a
  GPU with the same helpers (taid_car.ops.bench).

The naive baselines, inputs, ``run_once``, the byte count and the peak bandwidth live in
:mod:`taid_car.ops.bench` (shared with ``experiments/gpu_check``).

Usage: python experiments/resampler_benchmark/benchmark.py [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")  # before torch/numba load OpenMP

import torch

from taid_car.ops import adaptive_resample
from taid_car.ops.bench import (
    METHODS,
    MODES,
    make_inputs,
    naive_resample,
    naive_resample_slice,
    run_once,
)


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def probe_memory(method, mode, B, C, S, s):
    """Child process: extra peak RSS (MiB) of one call, after a tiny warm-up."""
    run_once(method, mode, make_inputs(1, C, 8 * s, s), s)
    inputs = make_inputs(B, C, S, s)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
        run_once(method, mode, inputs, s)
        peak = _status_kib("VmHWM")
    except OSError:  # no /proc: high-water mark since start (over-counts input creation)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_once(method, mode, inputs, s)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak - base) / 1024


def cpu_section(args):
    B, C, S, s = args.batch, args.channels, args.size, args.scale
    k = 3 * s + 1
    print(
        f"## CPU: HR {B}x{C}x{S}x{S}, x{s}, k={k}; torch threads {torch.get_num_threads()}, "
        f"cores {os.cpu_count()}, {platform.processor() or platform.machine()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    # Agreement where both definitions coincide (no sample leaves the padded image).
    small = make_inputs(2, C, S // 2, s, dtype=torch.float64, offset_range=0.3)
    ref = adaptive_resample(*small, s)
    for name, fn in (("naive-unbind", naive_resample), ("naive-slice", naive_resample_slice)):
        diff = (ref - fn(*small, s)).abs().max().item()
        print(f"ours vs {name}, |offsets| <= 0.3, float64: max |diff| = {diff:.2e}")

    inputs = make_inputs(B, C, S, s)
    for m in METHODS:  # warm-up (JIT cache load, allocator)
        for mode in MODES:
            run_once(m, mode, inputs, s)
    times = {(m, mode): [] for m in METHODS for mode in MODES}
    for r in range(args.rounds):
        for mode in MODES:
            for m in METHODS:
                if m == "floor" and mode != "fwd":
                    continue
                if m.startswith("naive") and mode != "fwd" and r >= args.naive_bwd_rounds:
                    continue
                times[(m, mode)].append(run_once(m, mode, inputs, s))
    mem = {}
    if not args.no_memory:
        for m in ("ours", "naive-unbind", "naive-slice"):
            for mode in MODES:
                cmd = [
                    sys.executable,
                    __file__,
                    "--probe",
                    m,
                    mode,
                    "--batch",
                    str(B),
                    "--channels",
                    str(C),
                    "--size",
                    str(S),
                    "--scale",
                    str(s),
                ]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                mem[(m, mode)] = float(res.stdout.strip().splitlines()[-1])
    rows = []
    print(
        "\n| mode | method | median ms | min ms | runs | naive-unbind/ours median (min) "
        "| naive-slice/ours median (min) | peak extra RSS MiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        for m in METHODS:
            ts = times[(m, mode)]
            if not ts:
                continue
            med, mn = statistics.median(ts), min(ts)
            ratios = {}
            if m == "ours":
                for base in ("naive-unbind", "naive-slice"):
                    bt = times[(base, mode)]
                    ratios[base] = (statistics.median(bt) / med, min(bt) / mn)
            cells = [f"{a:.1f}x ({b:.1f}x)" for a, b in ratios.values()] or ["", ""]
            mm = mem.get((m, mode))
            print(
                f"| {mode} | {m} | {med * 1e3:.1f} | {mn * 1e3:.1f} | {len(ts)} | "
                f"{cells[0]} | {cells[1]} | {'' if mm is None else f'{mm:.0f}'} |"
            )
            rows.append(
                {
                    "mode": mode,
                    "method": m,
                    "median_s": med,
                    "min_s": mn,
                    "runs": len(ts),
                    "times_s": ts,
                    "ratios_median_min": ratios,
                    "peak_extra_rss_mib": mm,
                }
            )
    floor = statistics.median(times[("floor", "fwd")])
    ours = statistics.median(times[("ours", "fwd")])
    print(
        f"\nours fwd / floor = {ours / floor:.1f}x  (floor reads {3 * inputs[1].numel() * 4 / 2**20:.0f} MiB)"
    )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--naive-bwd-rounds", type=int, default=3, help="rounds for naive fwd+bwd (slow)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--probe", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(probe_memory(*args.probe, args.batch, args.channels, args.size, args.scale))
        return
    rows = cpu_section(args)
    if torch.cuda.is_available():
        print("\n## GPU: run `make gpu-check` (experiments/gpu_check/): Triton vs the torch path and "
              "the naive loops, achieved HBM bandwidth, compiled tests, a training smoke run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
