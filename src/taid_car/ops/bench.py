"""Benchmark core of the CAR adaptive resampler, shared by ``experiments/resampler_benchmark`` and
``experiments/gpu_check``: naive per-tap ``F.grid_sample`` baselines, inputs, timing of one
method x mode, the forward's byte count, peak and measured memory bandwidth.

Shapes follow :func:`taid_car.ops.adaptive_resample`: HR (B,C,H,W); kernels and offsets
(B,k²,H//s,W//s). Times are in seconds, byte counts in bytes, bandwidths in GB/s (1e9 B/s).
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .resampler import adaptive_resample

# ----------------------------------------------------------------------------- naive baselines


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
    """One ``grid_sample`` per tap, taps split once with ``unbind``: HR (B,C,H,W), kernels and
    offsets (B,k²,H//s,W//s) → LR (B,C,H//s,W//s). Same result as the op wherever no sample
    leaves the padded image (``padding_mode='border'`` clamps the coordinate, the authors clamp
    the corners)."""
    xp, cx, cy, k = _naive_setup(hr, kernels)
    out = 0
    taps = zip(kernels.unbind(1), offsets_h.unbind(1), offsets_v.unbind(1))
    for t, (kt, dh, dv) in enumerate(taps):
        out = out + kt[:, None] * _naive_tap(xp, cx, cy, t, k, dh, dv, s)
    return out


def naive_resample_slice(hr, kernels, offsets_h, offsets_v, s):
    """Same as :func:`naive_resample`, written the way a user typically would: each tap's
    kernel and offsets indexed inside the loop (``K[:, t:t+1]``; every index's backward
    writes a full-size zero gradient)."""
    xp, cx, cy, k = _naive_setup(hr, kernels)
    out = 0
    for t in range(kernels.shape[1]):
        v = _naive_tap(xp, cx, cy, t, k, offsets_h[:, t], offsets_v[:, t], s)
        out = out + kernels[:, t : t + 1] * v
    return out


# ----------------------------------------------------------------------------- inputs, methods


def make_inputs(B, C, size, s, device="cpu", dtype=torch.float32, offset_range=1.0, seed=0):
    """[hr (B,C,H,W), kernels, offsets_h, offsets_v (B,k²,H//s,W//s)] with k = 3s+1.

    ``size`` is S (square S×S) or (H, W). HR uniform in [0,1), kernels positive and summing
    to 1 over the taps, offsets uniform in ±``offset_range`` (units of s HR pixels). Drawn on
    the CPU from ``seed`` (same values on every device), then moved to ``device``/``dtype``.
    """
    H, W = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    k = 3 * s + 1
    h, w = H // s, W // s
    hr = torch.rand(B, C, H, W, generator=g)
    kernels = torch.rand(B, k * k, h, w, generator=g)
    kernels = kernels / kernels.sum(1, keepdim=True)
    oh = (torch.rand(B, k * k, h, w, generator=g) * 2 - 1) * offset_range
    ov = (torch.rand(B, k * k, h, w, generator=g) * 2 - 1) * offset_range
    return [t.to(device, dtype) for t in (hr, kernels, oh, ov)]


def method_fn(name: str) -> Callable:
    """``fn(inputs, s)`` for a method name: ``ours`` (default backend), a backend name
    (``triton``, ``cpu``, ``torch``: :func:`adaptive_resample` forced to it), ``naive-unbind``,
    ``naive-slice``, or ``floor`` (one read of kernels and offsets: a ``.sum()`` of each)."""
    if name == "ours":
        return lambda a, s: adaptive_resample(*a, s)
    if name in ("triton", "cpu", "torch"):
        return lambda a, s: adaptive_resample(*a, s, backend=name)
    if name == "naive-unbind":
        return lambda a, s: naive_resample(*a, s)
    if name == "naive-slice":
        return lambda a, s: naive_resample_slice(*a, s)
    if name == "floor":
        return lambda a, s: a[1].sum() + a[2].sum() + a[3].sum()
    raise ValueError(f"unknown method {name!r}")


METHODS = {name: method_fn(name) for name in ("ours", "naive-unbind", "naive-slice", "floor")}
#: ``fwd``: no autograd; ``fwd+bwd``: all four inputs need gradients (HR included);
#: ``fwd+bwd(K,Δ)``: HR is data (CAR's training case).
MODES = ("fwd", "fwd+bwd", "fwd+bwd(K,Δ)")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")


def run_once(method, mode, inputs, s, sync=lambda: None):
    """One timed call of ``method`` (a :data:`METHODS` key or :func:`method_fn` name) in
    ``mode``, fresh leaf tensors and a ones gradient; returns seconds (after ``sync()``)."""
    _check_mode(mode)
    fn = METHODS[method] if method in METHODS else method_fn(method)
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


def make_step(method: str, mode: str, inputs: Sequence[torch.Tensor], s: int) -> Callable[[], None]:
    """A no-argument callable running ``method`` once in ``mode`` for repeated timing.

    Leaf views of the inputs (``detach``, no copy) and the output gradient (ones, LR-shaped) are
    made once, here, so they count as inputs; each call drops its gradients after the backward,
    so every call starts from the same allocated memory (the gradients still count in its peak).
    """
    _check_mode(mode)
    fn = method_fn(method)
    if mode == "fwd" or method == "floor":

        def forward():
            with torch.no_grad():
                fn(inputs, s)

        return forward
    need_hr = mode == "fwd+bwd"
    xs = [x.detach().requires_grad_(need_hr if i == 0 else True) for i, x in enumerate(inputs)]
    B, C = inputs[0].shape[:2]
    h, w = inputs[1].shape[2:]
    dtype = inputs[0].dtype
    for t in inputs[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    grad_out = torch.ones(B, C, h, w, dtype=dtype, device=inputs[0].device)

    def forward_backward():
        fn(xs, s).backward(grad_out)
        for x in xs:
            x.grad = None

    return forward_backward


# ----------------------------------------------------------------------------- timing, memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(fn: Callable[[], None], device, rounds: int = 5, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median seconds of one ``fn()`` call.

    CUDA: ``triton.testing.do_bench`` (median, L2 flushed between calls; ``warmup_ms``/``rep_ms``
    of warm-up and repetitions), or CUDA events over ``rounds`` calls when Triton is missing.
    CPU: ``time.perf_counter`` over ``rounds`` calls after one warm-up call.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            do_bench = None
        if do_bench is not None:
            return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median") / 1e3
        fn()
        times = []
        for _ in range(rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cuda_extra_peak_bytes(fn: Callable[[], None], device) -> int | None:
    """Peak CUDA memory one ``fn()`` call allocates beyond what was allocated before it (bytes;
    outputs and gradients it leaves included); None on a non-CUDA device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def forward_bytes(hr, kernels, offsets_h, offsets_v, scale: int) -> int:
    """Bytes the forward must move at least once: HR, kernels and both offsets read, the LR
    output (B,C,H//s,W//s, promoted dtype) written, each in its own element size."""
    B, C, H, W = hr.shape
    read = sum(t.numel() * t.element_size() for t in (hr, kernels, offsets_h, offsets_v))
    dtype = hr.dtype
    for t in (kernels, offsets_h, offsets_v):
        dtype = torch.promote_types(dtype, t.dtype)
    out_elem = torch.empty((), dtype=dtype).element_size()
    return read + B * C * (H // scale) * (W // scale) * out_elem


def padded_image_bytes(hr_shape: Sequence[int], k: int, element_size: int = 4) -> int:
    """Bytes of one reflection-padded image (B,C,H+2p,W+2p), p = k//2 (float32 by default)."""
    B, C, H, W = hr_shape
    p = k // 2
    return B * C * (H + 2 * p) * (W + 2 * p) * element_size


def measure_copy_gbs(device, nbytes: int = 1 << 30, rounds: int = 5) -> float:
    """Measured copy bandwidth (GB/s) of ``dst.copy_(src)`` on ``device``: 2·nbytes (read +
    write) over the median time of one copy of ``nbytes`` (float32 tensors)."""
    device = torch.device(device)
    n = max(nbytes // 4, 1)
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    seconds = time_step(lambda: dst.copy_(src), device, rounds=rounds)
    return 2 * n * 4 / seconds / 1e9


# ----------------------------------------------------------------------------- peak bandwidth

#: Peak DRAM/HBM bandwidth in GB/s from the vendors' datasheets (NVIDIA product pages and data
#: sheets: H100/H200 "Tensor Core GPU" datasheets, A100 datasheet, L4/L40S datasheets,
#: GeForce RTX 4090 specifications, T4/V100/A10 datasheets). Regex on the torch device name,
#: most specific first (``NVIDIA H100 80GB HBM3`` is the SXM part).
KNOWN_PEAK_GBS: tuple[tuple[str, float], ...] = (
    (r"H200", 4800.0),
    (r"H100 NVL", 3900.0),
    (r"H100 PCIe", 2000.0),
    (r"\bH100\b", 3350.0),
    (r"A100-SXM4-80GB", 2039.0),
    (r"A100 80GB PCIe", 1935.0),
    (r"\bA100\b", 1555.0),  # A100-SXM4-40GB and A100-PCIE-40GB
    (r"L40S|L40\b", 864.0),
    (r"\bL4\b", 300.0),
    (r"RTX 4090", 1008.0),
    (r"\bA10G?\b", 600.0),
    (r"\bT4\b", 320.0),
    (r"V100-SXM2|V100-PCIE", 900.0),
)


def bandwidth_from_clock(memory_clock_khz: float, bus_width_bits: float) -> float:
    """Peak bandwidth (GB/s) = 2 (double data rate) × memory clock (kHz) × bus width (bits) / 8."""
    return 2 * memory_clock_khz * 1e3 * bus_width_bits / 8 / 1e9


def datasheet_peak_gbs(device_name: str) -> float | None:
    """Datasheet peak bandwidth (GB/s) for a torch device name, None when not in the table."""
    for pattern, gbs in KNOWN_PEAK_GBS:
        if re.search(pattern, device_name):
            return gbs
    return None


def peak_bandwidth(props) -> tuple[float | None, str]:
    """(peak GB/s, source) of a device: from ``props.memory_clock_rate`` (kHz) and
    ``props.memory_bus_width`` (bits) when torch reports both, else the datasheet table by
    ``props.name``; (None, "unknown") when neither is available."""
    clock = getattr(props, "memory_clock_rate", 0) or 0
    bus = getattr(props, "memory_bus_width", 0) or 0
    if clock > 0 and bus > 0:
        return bandwidth_from_clock(clock, bus), "device properties (2 x memory clock x bus width)"
    gbs = datasheet_peak_gbs(getattr(props, "name", ""))
    if gbs is not None:
        return gbs, "datasheet table (taid_car.ops.bench.KNOWN_PEAK_GBS)"
    return None, "unknown"


__all__ = [
    "KNOWN_PEAK_GBS",
    "METHODS",
    "MODES",
    "bandwidth_from_clock",
    "cuda_extra_peak_bytes",
    "datasheet_peak_gbs",
    "forward_bytes",
    "make_inputs",
    "make_step",
    "measure_copy_gbs",
    "method_fn",
    "naive_resample",
    "naive_resample_slice",
    "padded_image_bytes",
    "peak_bandwidth",
    "run_once",
    "time_step",
]
