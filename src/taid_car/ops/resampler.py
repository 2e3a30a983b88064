"""Public CAR resampler: input validation, backend dispatch, autograd wiring, ``nn.Module``.

Backends (argument ``backend`` or, when it is None, ``$TAID_CAR_RESAMPLER_BACKEND``):

* ``"auto"`` (default): Triton on CUDA tensors, the numba CPU kernels on CPU tensors, the
  pure-torch reference on any other device (or on CPU when numba is missing, with a warning).
* ``"triton"``: Triton kernels; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
* ``"cpu"``: numba kernels; CPU tensors.
* ``"torch"``: the pure-torch reference (:mod:`.reference`), differentiated by torch autograd.

Compiled backends compute in float32 (float64 when an input is float64). Triton reads each
input in its own dtype (e.g. bfloat16 kernels and offsets beside a float32 image under autocast)
and returns the promoted dtype, with each gradient in its input's dtype. On CPU, float16/bfloat16
inputs are computed in float32 and the result cast back; mixed float dtypes are promoted.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .common import lr_centers
from .reference import adaptive_resample_torch

ENV_BACKEND = "TAID_CAR_RESAMPLER_BACKEND"
BACKENDS = ("auto", "triton", "cpu", "torch")

_NAMES = ("hr", "kernels", "offsets_h", "offsets_v")


def _validate(hr, kernels, offsets_h, offsets_v, scale) -> int:
    """Check shapes, dtypes and devices; return the tap-grid side k. Raises ValueError."""
    tensors = (hr, kernels, offsets_h, offsets_v)
    for name, t in zip(_NAMES, tensors):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")  # noqa: TRY004
        if t.ndim != 4:
            layout = "(B,C,H,W)" if name == "hr" else "(B,k*k,H/s,W/s)"
            raise ValueError(f"{name} must be 4-D {layout}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype, got {t.dtype}")
    devices = {name: t.device for name, t in zip(_NAMES, tensors)}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all inputs must be on one device, got {devices}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    kk = kernels.shape[1]
    k = math.isqrt(kk)
    if kk == 0 or k * k != kk:
        raise ValueError(
            f"kernels channel count must be a square k*k, got kernels shape {tuple(kernels.shape)}"
        )
    for name, t in (("offsets_h", offsets_h), ("offsets_v", offsets_v)):
        if t.shape != kernels.shape:
            raise ValueError(
                f"{name} shape {tuple(t.shape)} must equal kernels shape {tuple(kernels.shape)}"
            )
    B, _, H, W = hr.shape
    if kernels.shape[0] != B:
        raise ValueError(
            f"batch mismatch: hr shape {tuple(hr.shape)} vs kernels shape {tuple(kernels.shape)}"
        )
    lr = (H // scale, W // scale)
    if tuple(kernels.shape[2:]) != lr or 0 in lr:
        raise ValueError(
            f"kernels/offsets spatial size {tuple(kernels.shape[2:])} must be hr size "
            f"({H},{W}) // scale {scale} = {lr} (hr shape {tuple(hr.shape)})"
        )
    p = k // 2
    if p >= H or p >= W:
        raise ValueError(
            f"reflection padding k//2 = {p} (k = {k}) needs hr height and width > {p}, "
            f"got hr shape {tuple(hr.shape)}"
        )
    return k


def _resolve_backend(backend: str | None, device: torch.device) -> str:
    name = backend if backend is not None else os.environ.get(ENV_BACKEND, "auto")
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return "triton"
        if device.type == "cpu":
            if _numba_available():
                return "cpu"
            warnings.warn(
                "numba is not installed: the CAR resampler falls back to the slow pure-torch "
                "reference on CPU (pip install numba)",
                RuntimeWarning,
                stacklevel=3,
            )
        return "torch"
    if name == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got device {device}")
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if name == "triton" and device.type != "cuda" and not (device.type == "cpu" and interpreted):
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 with CPU tensors), "
            f"got device {device}"
        )
    return name


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernels_module(name: str):
    if name == "triton":
        from . import triton_kernels

        return triton_kernels
    from . import cpu_kernels

    return cpu_kernels


class _AdaptiveResampleFn(torch.autograd.Function):
    """Autograd glue around a compiled backend (``forward``/``backward`` of a kernels module)."""

    @staticmethod
    def forward(ctx, hr, kernels, offsets_h, offsets_v, scale: int, backend: str):
        ctx.scale, ctx.backend = scale, backend
        ctx.xp = None
        ctx.save_for_backward(hr, kernels, offsets_h, offsets_v)
        if backend == "triton":  # pads (channels last) and builds the LR centres on the device
            from . import triton_kernels

            return triton_kernels.forward(hr, kernels, offsets_h, offsets_v, scale)
        from . import cpu_kernels

        cx, cy = _host_centres(hr, kernels)
        out, xp = cpu_kernels.forward(hr, kernels, offsets_h, offsets_v, cx, cy, scale, True)
        # The CPU backward reuses the forward's padded copy (kept only when a gradient will be
        # asked for; it is an internal buffer, never handed to the caller).
        if any(ctx.needs_input_grad[:4]):
            ctx.xp = xp
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        hr, kernels, offsets_h, offsets_v = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        grad_out = grad_out.contiguous()
        if ctx.backend == "triton":
            from . import triton_kernels

            gx, gk, gh, gv = triton_kernels.backward(
                hr, kernels, offsets_h, offsets_v, ctx.scale, grad_out, need_x
            )
        else:
            from . import cpu_kernels

            cx, cy = _host_centres(hr, kernels)
            gx, gk, gh, gv = cpu_kernels.backward(
                hr, kernels, offsets_h, offsets_v, cx, cy, ctx.scale, grad_out, need_x, xp=ctx.xp
            )
        ctx.xp = None
        needs = ctx.needs_input_grad
        return (
            gx if need_x else None,
            gk if needs[1] else None,
            gh if needs[2] else None,
            gv if needs[3] else None,
            None,
            None,
        )


def _host_centres(hr: torch.Tensor, kernels: torch.Tensor):
    """LR-pixel centres (cx (w,), cy (h,)) in the CPU kernels' compute precision."""
    H, W = hr.shape[-2:]
    h, w = kernels.shape[2:]
    return lr_centers(w, W, hr.dtype, hr.device), lr_centers(h, H, hr.dtype, hr.device)


def adaptive_resample(
    hr: torch.Tensor,
    kernels: torch.Tensor,
    offsets_h: torch.Tensor,
    offsets_v: torch.Tensor,
    scale: int,
    backend: str | None = None,
) -> torch.Tensor:
    """Downscale ``hr`` with per-pixel kernels and offsets (the CAR resampler).

    Args:
        hr: HR image (B,C,H,W), any float dtype, any C.
        kernels: per-LR-pixel resampling kernels (B,k²,H//s,W//s), shared by all channels;
            any k (CAR uses k = 3s+1 with kernels normalised to sum 1).
        offsets_h, offsets_v: horizontal/vertical tap offsets (B,k²,H//s,W//s) in units of
            ``scale`` HR pixels (CAR: tanh outputs in [-1,1]).
        scale: integer downscaling factor s ≥ 1.
        backend: "auto" | "triton" | "cpu" | "torch"; None reads $TAID_CAR_RESAMPLER_BACKEND.

    Returns:
        LR image (B,C,H//s,W//s) in the promoted input dtype; differentiable w.r.t. all four
        tensors (first derivatives).
    """
    _validate(hr, kernels, offsets_h, offsets_v, scale)
    dtype = hr.dtype
    for t in (kernels, offsets_h, offsets_v):
        dtype = torch.promote_types(dtype, t.dtype)
    name = _resolve_backend(backend, hr.device)
    if name == "triton":  # reads every tensor in its own dtype (no copies), returns ``dtype``
        return _AdaptiveResampleFn.apply(hr, kernels, offsets_h, offsets_v, scale, name)
    compute = dtype
    if name == "cpu" and dtype not in (torch.float32, torch.float64):
        compute = torch.float32
    args = [t.to(compute) for t in (hr, kernels, offsets_h, offsets_v)]
    if name == "torch":
        out = adaptive_resample_torch(*args, scale)
    else:
        out = _AdaptiveResampleFn.apply(*args, scale, name)
    return out.to(dtype)


class AdaptiveResampler(nn.Module):
    """``nn.Module`` form of :func:`adaptive_resample` for a fixed integer ``scale``."""

    def __init__(self, scale: int, backend: str | None = None) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.scale = scale
        self.backend = backend

    def forward(
        self,
        hr: torch.Tensor,
        kernels: torch.Tensor,
        offsets_h: torch.Tensor,
        offsets_v: torch.Tensor,
    ) -> torch.Tensor:
        """hr (B,C,H,W), kernels/offsets (B,k²,H/s,W/s) → LR (B,C,H/s,W/s)."""
        return adaptive_resample(hr, kernels, offsets_h, offsets_v, self.scale, self.backend)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, backend={self.backend or 'auto'}"


__all__: list[str] = ["BACKENDS", "ENV_BACKEND", "AdaptiveResampler", "adaptive_resample"]
