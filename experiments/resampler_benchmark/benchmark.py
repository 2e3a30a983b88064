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
GPU (when CUDA is present): Triton vs naive, CUDA-event timings, and the achieved bandwidth
  (bytes of kernels + offsets + image read and output written, over the time) vs the card's peak.

Usage: python experiments/resampler_benchmark/benchmark.py [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")  # before torch/numba load OpenMP

import torch
import torch.nn.functional as F

from taid_car.ops import adaptive_resample


def _naive_setup(hr, kernels):
    """Reflection-padded HR, LR pixel centres (1,1,w) and (1,h,1) in HR pixels, and k."""
    H, W = hr.shape[-2:]
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    p = k // 2
    xp = F.pad(hr, (p, p, p, p), mode="reflect")
    cx = ((torch.arange(w, dtype=hr.dtype, device=hr.device) + 0.5) / w * W).view(1, 1, w)
    cy = ((torch.arange(h, dtype=hr.dtype, device=hr.device) + 0.5) / h * H).view(1, h, 1)
    return xp, cx, cy, k


def _naive_tap(xp, cx, cy, t, k, dh, dv, s):
    """Bilinear samples (B,C,h,w) of tap ``t`` with offsets ``dh``, ``dv`` (B,h,w): one grid_sample."""
    Hp, Wp = xp.shape[-2:]
    ty, tx = divmod(t, k)
    px = cx + tx + dh * s - 0.5
    py = cy + ty + dv * s - 0.5
    grid = torch.stack([px / (Wp - 1) * 2 - 1, py / (Hp - 1) * 2 - 1], -1)
    return F.grid_sample(xp, grid, mode="bilinear", padding_mode="border", align_corners=True)


def naive_resample(hr, kernels, offsets_h, offsets_v, s):
    """One ``grid_sample`` per tap, taps split once with ``unbind``. Same result as the op wherever
    no sample leaves the padded image (``padding_mode='border'`` clamps the coordinate, the
    authors clamp the corners)."""
    xp, cx, cy, k = _naive_setup(hr, kernels)
    out = 0
    taps = zip(kernels.unbind(1), offsets_h.unbind(1), offsets_v.unbind(1))
    for t, (kt, dh, dv) in enumerate(taps):
        out = out + kt[:, None] * _naive_tap(xp, cx, cy, t, k, dh, dv, s)
    return out


def naive_resample_slice(hr, kernels, offsets_h, offsets_v, s):
    """Same as :func:`naive_resample`, written the way a user typically would: each tap's
    kernel and offsets indexed inside the loop (``K[:, t:t+1]``)."""
    xp, cx, cy, k = _naive_setup(hr, kernels)
    out = 0
    for t in range(kernels.shape[1]):
        v = _naive_tap(xp, cx, cy, t, k, offsets_h[:, t], offsets_v[:, t], s)
        out = out + kernels[:, t : t + 1] * v
    return out


def make_inputs(B, C, S, s, device="cpu", dtype=torch.float32, offset_range=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = 3 * s + 1
    h = S // s
    hr = torch.rand(B, C, S, S, generator=g)
    kernels = torch.rand(B, k * k, h, h, generator=g)
    kernels = kernels / kernels.sum(1, keepdim=True)
    oh = (torch.rand(B, k * k, h, h, generator=g) * 2 - 1) * offset_range
    ov = (torch.rand(B, k * k, h, h, generator=g) * 2 - 1) * offset_range
    return [t.to(device, dtype) for t in (hr, kernels, oh, ov)]


METHODS = {
    "ours": lambda a, s: adaptive_resample(*a, s),
    "naive-unbind": lambda a, s: naive_resample(*a, s),
    "naive-slice": lambda a, s: naive_resample_slice(*a, s),
    "floor": lambda a, s: a[1].sum() + a[2].sum() + a[3].sum(),
}
MODES = ("fwd", "fwd+bwd", "fwd+bwd(K,Δ)")


def run_once(method, mode, inputs, s, sync=lambda: None):
    """One timed call; returns seconds."""
    fn = METHODS[method]
    if mode == "fwd" or method == "floor":
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(inputs, s)
        sync()
        return time.perf_counter() - t0
    need_hr = mode == "fwd+bwd"
    xs = [x.detach().requires_grad_(need_hr if i == 0 else True) for i, x in enumerate(inputs)]
    t0 = time.perf_counter()
    out = fn(xs, s)
    out.backward(torch.ones_like(out))
    sync()
    return time.perf_counter() - t0


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


def gpu_section(args):
    if not torch.cuda.is_available():
        print("\n## GPU: skipped (CUDA is not available on this machine)")
        return []
    import triton.testing

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    B, C, S, s = args.batch, args.channels, args.size, args.scale
    print(f"\n## GPU: {props.name}, HR {B}x{C}x{S}x{S} x{s}")
    clock = getattr(props, "memory_clock_rate", 0)  # kHz
    bus = getattr(props, "memory_bus_width", 0)  # bits
    peak = 2 * clock * 1e3 * bus / 8 / 1e9 if clock and bus else float("nan")
    rows = []
    print("| dtype | mode | method | ms | GB/s | % of peak |")
    print("|---|---|---|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        inputs = make_inputs(B, C, S, s, device=dev, dtype=dtype)
        es = inputs[0].element_size()
        moved = (3 * inputs[1].numel() + inputs[0].numel() + inputs[0].numel() // s**2) * es
        for mode in MODES:
            for m in ("ours", "naive-unbind", "naive-slice", "floor"):
                if m == "floor" and mode != "fwd":
                    continue
                ms = triton.testing.do_bench(
                    lambda m=m, mode=mode, x=inputs: run_once(m, mode, x, s), warmup=5, rep=50
                )
                gbs = moved / ms / 1e6 if mode == "fwd" else float("nan")
                print(f"| {dtype} | {mode} | {m} | {ms:.3f} | {gbs:.0f} | {100 * gbs / peak:.0f} |")
                rows.append(
                    {
                        "device": props.name,
                        "dtype": str(dtype),
                        "mode": mode,
                        "method": m,
                        "ms": ms,
                        "gbs": gbs,
                        "peak_gbs": peak,
                    }
                )
    print(f"peak bandwidth from clock x bus width: {peak:.0f} GB/s")
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
    rows = cpu_section(args) + gpu_section(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
