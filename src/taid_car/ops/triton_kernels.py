"""Triton kernels of the CAR resampler (GPU; CPU tensors only under ``TRITON_INTERPRET=1``).

Layout
------
* HR: reflection-padded by p = k//2 into a *channels-last* copy ``xp`` (B, Hp, Wp, CP) with the
  channels zero-padded to CP = next power of two ≥ C (3 → 4), so the four bilinear corners of a
  sample are each one aligned CP-element vector load instead of C scalar loads from C planes.
* kernels / offsets: (B, k², h, w) as the network produces them, each read in its own dtype
  (float32, float16 or bfloat16, e.g. bf16 kernels beside a float32 image under autocast).
* Grid (cdiv(h·w, BLOCK_P), B): axis 1 is the batch item, so a program's BLOCK_P LR pixels
  p = i·w + j are contiguous and tap ``t`` of them is one contiguous run at t·h·w + p (the
  loads vectorise when h·w is a multiple of the vector width). Batch offsets are int64
  scalars; in-item offsets are int32 unless an item holds ≥ 2³¹ elements (``INDEX64``).
* LR-pixel centres (j + ½)/w·W are computed in the kernel with IEEE division (``div_rn``),
  the same value the authors' kernel and the torch reference compute: no host tensor, no copy.

A program walks the k² taps BLOCK_T at a time; the geometry (sample position, bilinear
weights, clamped corners) of a [BLOCK_P, BLOCK_T] tile is computed once and applied to
BLOCK_C channels as a [BLOCK_P, BLOCK_T, BLOCK_C] gather reduced over taps. Accumulation is in
float32 (float64 when any input is float64).

Backward
--------
* Kernel and offset gradients need only the four corner values of the same tap: the backward
  program recomputes the geometry, reduces over channels in registers and writes each
  (b, t, i, j) once: no atomics, no intermediate, deterministic.
* Image gradient: every tap scatters ``grad_out·K·w_corner`` onto four padded-image pixels at
  data-dependent positions, so the program ``atomic_add``s (relaxed order: only the sum
  matters) into a float32 (float64) buffer of the padded channels-last shape; the reflection
  padding is folded back afterwards with ``aten.reflection_pad2d_backward``. Float atomics make
  the image gradient nondeterministic in the last bits. When HR needs no gradient (the usual
  case: HR is data) the atomics are compiled out.

Autotuning: (BLOCK_P, BLOCK_T, warps) from :func:`configs_for` (smaller tiles for float64, so
no offered configuration spills registers; ``python -m taid_car.ops.compile_report`` checks),
keyed on a power-of-two bucket of B·h·w (so validation images of many sizes share a few
tunings), C, k² and the dtypes. Under the interpreter a single configuration is used.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .common import fold_reflect_pad

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# (BLOCK_P, BLOCK_T, num_warps) offered to the autotuner. float64 doubles every register tile.
TILES = ((128, 1, 4), (256, 1, 8), (64, 4, 4), (32, 8, 4), (64, 8, 8))
TILES_FP64 = ((128, 1, 4), (64, 1, 2), (32, 4, 4), (64, 2, 4))
INTERPRETER_TILE = (128, 256, 4)  # one program, all taps at once: few (slow) interpreted ops
MAX_BATCH = 65535  # CUDA's limit on grid axis 1
INT32_LIMIT = 2**31
FP_FUSION = True  # FMA contraction, as nvcc compiles the authors' CUDA op (Triton's default)


def configs_for(fp64: bool) -> list[triton.Config]:
    """The autotuner's tile configurations for float32/16/bf16 (``fp64=False``) or float64."""
    tiles = TILES_FP64 if fp64 else TILES
    return [triton.Config({"BLOCK_P": bp, "BLOCK_T": bt}, num_warps=nw) for bp, bt, nw in tiles]


def _all_configs() -> list[triton.Config]:
    if INTERPRET:
        bp, bt, nw = INTERPRETER_TILE
        return [triton.Config({"BLOCK_P": bp, "BLOCK_T": bt}, num_warps=nw)]
    seen, out = set(), []
    for cfg in configs_for(False) + configs_for(True):
        key = (cfg.kwargs["BLOCK_P"], cfg.kwargs["BLOCK_T"], cfg.num_warps)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def _prune(configs, named_args, **kwargs):
    """Keep the configurations offered for this accumulation dtype (see :func:`configs_for`)."""
    fp64 = kwargs.get("ACC", named_args.get("ACC")) == tl.float64
    allowed = {
        (c.kwargs["BLOCK_P"], c.kwargs["BLOCK_T"], c.num_warps) for c in configs_for(fp64)
    }
    kept = [c for c in configs if (c.kwargs["BLOCK_P"], c.kwargs["BLOCK_T"], c.num_warps) in allowed]
    return kept or configs[:1]


def size_bucket(n: int) -> int:
    """Autotune key for a problem of ``n`` = B·h·w LR pixels: the next power of two ≥ n (≥ 1024)."""
    return max(1024, 1 << max(0, n - 1).bit_length())


@triton.jit
def _wide(x, INDEX64: tl.constexpr):
    """``x`` as int64 when in-item offsets can reach 2³¹, else unchanged (int32)."""
    if INDEX64:
        return x.to(tl.int64)
    else:
        return x


@triton.jit
def _div_ieee(a, b, ACC: tl.constexpr):
    """a / b rounded to nearest (float32 ``/`` may compile to an approximate division)."""
    if ACC == tl.float64:
        return a / b  # float64 division is always IEEE (div.rn.f64)
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _lr_pixels(HW, w, wf, Wf, hf, Hf, ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's LR pixels p = i·w + j [P] (int32, contiguous), mask, centres cx, cy (ACC)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = p < HW
    i = p // w
    j = p - i * w
    cx = _div_ieee(j.to(ACC) + 0.5, tl.cast(wf, ACC), ACC) * tl.cast(Wf, ACC)
    cy = _div_ieee(i.to(ACC) + 0.5, tl.cast(hf, ACC), ACC) * tl.cast(Hf, ACC)
    return p, mask, cx, cy


@triton.jit
def _geometry(cx, cy, tx, ty, dh, dv, s, Hp, Wp):
    """Sample position → (α, β, xL, xR, yT, yB); α, β taken before clamping, NaN-safe."""
    px = ((cx + tx) + dh * s) - 0.5
    py = ((cy + ty) + dv * s) - 0.5
    fx = tl.floor(px)
    fy = tl.floor(py)
    al = px - fx
    be = py - fy
    fx = tl.where(fx >= 0, fx, 0)
    fx = tl.where(fx <= Wp - 1, fx, Wp - 1)
    fy = tl.where(fy >= 0, fy, 0)
    fy = tl.where(fy <= Hp - 1, fy, Hp - 1)
    xl = fx.to(tl.int32)
    yt = fy.to(tl.int32)
    xr = tl.minimum(xl + 1, Wp - 1)
    yb = tl.minimum(yt + 1, Hp - 1)
    return al, be, xl, xr, yt, yb


@triton.jit
def _tap_tile(k_ptr, oh_ptr, ov_ptr, p, mask_p, cx, cy, t0, HW, KK, k, s, Hp, Wp,
              ACC: tl.constexpr, INDEX64: tl.constexpr, BLOCK_T: tl.constexpr):
    """Taps t0..t0+BLOCK_T of the pixels p: (offsets [P,T], mask, K, α, β, four corner offsets
    into the channels-last image in pixels, i.e. without the factor CP)."""
    t = t0 + tl.arange(0, BLOCK_T)
    ty = t // k
    tx = t - ty * k
    m2 = mask_p[:, None] & (t < KK)[None, :]
    off = _wide(t, INDEX64)[None, :] * HW + p[:, None]
    kv = tl.load(k_ptr + off, mask=m2, other=0.0).to(ACC)
    dh = tl.load(oh_ptr + off, mask=m2, other=0.0).to(ACC)
    dv = tl.load(ov_ptr + off, mask=m2, other=0.0).to(ACC)
    al, be, xl, xr, yt, yb = _geometry(
        cx[:, None], cy[:, None], tx[None, :], ty[None, :], dh, dv, s, Hp, Wp
    )
    row_t = _wide(yt, INDEX64) * Wp
    row_b = _wide(yb, INDEX64) * Wp
    return off, m2, kv, al, be, row_t + xl, row_t + xr, row_b + xl, row_b + xr


@triton.autotune(
    configs=_all_configs(),
    key=["SIZE_BUCKET", "C", "KK"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _fwd_kernel(
    xp_ptr, k_ptr, oh_ptr, ov_ptr, out_ptr,
    C, Hp, Wp, HW, w, wf, Wf, hf, Hf, KK, k, s, SIZE_BUCKET,
    ACC: tl.constexpr, CP: tl.constexpr, BLOCK_C: tl.constexpr, INDEX64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    xp_ptr += b * Hp * Wp * CP
    k_ptr += b * KK * HW
    oh_ptr += b * KK * HW
    ov_ptr += b * KK * HW
    out_ptr += b * C * HW
    p, mask_p, cx, cy = _lr_pixels(HW, w, wf, Wf, hf, Hf, ACC, BLOCK_P)
    for c0 in range(0, CP, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        c3 = ch[None, None, :]
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC)
        for t0 in range(0, KK, BLOCK_T):
            _, m2, kv, al, be, o_tl, o_tr, o_bl, o_br = _tap_tile(
                k_ptr, oh_ptr, ov_ptr, p, mask_p, cx, cy, t0, HW, KK, k, s, Hp, Wp,
                ACC, INDEX64, BLOCK_T,
            )
            m3 = m2[:, :, None]
            v_tl = tl.load(xp_ptr + (o_tl * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v_tr = tl.load(xp_ptr + (o_tr * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v_bl = tl.load(xp_ptr + (o_bl * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v_br = tl.load(xp_ptr + (o_br * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v = ((1 - al) * (1 - be) * kv)[:, :, None] * v_tl
            v += (al * (1 - be) * kv)[:, :, None] * v_tr
            v += ((1 - al) * be * kv)[:, :, None] * v_bl
            v += (al * be * kv)[:, :, None] * v_br
            acc += tl.sum(v, axis=1)
        out_off = _wide(ch, INDEX64)[None, :] * HW + p[:, None]
        tl.store(
            out_ptr + out_off,
            acc.to(out_ptr.dtype.element_ty),
            mask=mask_p[:, None] & (ch < C)[None, :],
        )


@triton.autotune(
    configs=_all_configs(),
    key=["SIZE_BUCKET", "C", "KK"],
    prune_configs_by={"early_config_prune": _prune},
    reset_to_zero=["gx_ptr"],
)
@triton.jit
def _bwd_kernel(
    xp_ptr, k_ptr, oh_ptr, ov_ptr, gout_ptr, gx_ptr, gk_ptr, gh_ptr, gv_ptr,
    C, Hp, Wp, HW, w, wf, Wf, hf, Hf, KK, k, s, SIZE_BUCKET,
    ACC: tl.constexpr, CP: tl.constexpr, BLOCK_C: tl.constexpr, INDEX64: tl.constexpr,
    NEED_X: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    xp_ptr += b * Hp * Wp * CP
    if NEED_X:
        gx_ptr += b * Hp * Wp * CP
    k_ptr += b * KK * HW
    oh_ptr += b * KK * HW
    ov_ptr += b * KK * HW
    gk_ptr += b * KK * HW
    gh_ptr += b * KK * HW
    gv_ptr += b * KK * HW
    gout_ptr += b * C * HW
    p, mask_p, cx, cy = _lr_pixels(HW, w, wf, Wf, hf, Hf, ACC, BLOCK_P)
    for t0 in range(0, KK, BLOCK_T):
        off, m2, kv, al, be, o_tl, o_tr, o_bl, o_br = _tap_tile(
            k_ptr, oh_ptr, ov_ptr, p, mask_p, cx, cy, t0, HW, KK, k, s, Hp, Wp,
            ACC, INDEX64, BLOCK_T,
        )
        m3 = m2[:, :, None]
        a3 = al[:, :, None]
        b3 = be[:, :, None]
        gk = tl.zeros([BLOCK_P, BLOCK_T], dtype=ACC)
        ga = tl.zeros([BLOCK_P, BLOCK_T], dtype=ACC)
        gb = tl.zeros([BLOCK_P, BLOCK_T], dtype=ACC)
        for c0 in range(0, CP, BLOCK_C):
            ch = c0 + tl.arange(0, BLOCK_C)
            c3 = ch[None, None, :]
            g = tl.load(
                gout_ptr + _wide(ch, INDEX64)[None, :] * HW + p[:, None],
                mask=mask_p[:, None] & (ch < C)[None, :],
                other=0.0,
            ).to(ACC)
            g = g[:, None, :]  # [P,1,BC]
            v_tl = tl.load(xp_ptr + (o_tl * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v_tr = tl.load(xp_ptr + (o_tr * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v_bl = tl.load(xp_ptr + (o_bl * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            v_br = tl.load(xp_ptr + (o_br * CP)[:, :, None] + c3, mask=m3, other=0.0).to(ACC)
            top = (1 - a3) * v_tl + a3 * v_tr
            bot = (1 - a3) * v_bl + a3 * v_br
            gk += tl.sum(g * ((1 - b3) * top + b3 * bot), axis=2)
            ga += tl.sum(g * ((1 - b3) * (v_tr - v_tl) + b3 * (v_br - v_bl)), axis=2)
            gb += tl.sum(g * (bot - top), axis=2)
            if NEED_X:
                gw = g * kv[:, :, None]
                mx = m3 & (c3 < C)
                ty_ = gx_ptr.dtype.element_ty
                tl.atomic_add(gx_ptr + (o_tl * CP)[:, :, None] + c3,
                              (gw * ((1 - a3) * (1 - b3))).to(ty_), mask=mx, sem="relaxed")
                tl.atomic_add(gx_ptr + (o_tr * CP)[:, :, None] + c3,
                              (gw * (a3 * (1 - b3))).to(ty_), mask=mx, sem="relaxed")
                tl.atomic_add(gx_ptr + (o_bl * CP)[:, :, None] + c3,
                              (gw * ((1 - a3) * b3)).to(ty_), mask=mx, sem="relaxed")
                tl.atomic_add(gx_ptr + (o_br * CP)[:, :, None] + c3,
                              (gw * (a3 * b3)).to(ty_), mask=mx, sem="relaxed")
        tl.store(gk_ptr + off, gk.to(gk_ptr.dtype.element_ty), mask=m2)
        tl.store(gh_ptr + off, (s * kv * ga).to(gh_ptr.dtype.element_ty), mask=m2)
        tl.store(gv_ptr + off, (s * kv * gb).to(gv_ptr.dtype.element_ty), mask=m2)


# ----------------------------------------------------------------------------- launchers


def channel_pad(C: int) -> int:
    """CP: channels of the channels-last padded image (next power of two ≥ C)."""
    return triton.next_power_of_2(C)


def block_c(C: int) -> int:
    """Channels per gather (≤ 4: one 16-byte vector of float32)."""
    return min(channel_pad(C), 4)


def needs_int64(C: int, Hp: int, Wp: int, kk: int, hw: int) -> bool:
    """Whether offsets inside one batch item can reach 2³¹ (then the kernels index in int64)."""
    return max(kk * hw, C * hw, Hp * Wp * channel_pad(C)) >= INT32_LIMIT


def accumulator(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _tl(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def pad_channels_last(hr: torch.Tensor, p: int) -> torch.Tensor:
    """hr (B,C,H,W) → reflection-padded channels-last copy (B,H+2p,W+2p,CP), zero extra channels."""
    B, C, H, W = hr.shape
    cp = channel_pad(C)
    padded = torch.nn.functional.pad(hr, (p, p, p, p), mode="reflect") if p else hr
    if cp == C:
        return padded.permute(0, 2, 3, 1).contiguous()
    xp = hr.new_zeros(B, H + 2 * p, W + 2 * p, cp)
    xp[..., :C] = padded.permute(0, 2, 3, 1)
    return xp


def _check_launch(hr: torch.Tensor) -> None:
    if hr.shape[0] > MAX_BATCH:
        raise ValueError(
            f"the Triton resampler takes at most {MAX_BATCH} images per call (CUDA grid limit), "
            f"got hr shape {tuple(hr.shape)}: split the batch"
        )
    if not hr.is_cuda and not INTERPRET:
        raise RuntimeError("Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")


def _device_ctx(t: torch.Tensor):
    if t.is_cuda:
        return torch.cuda.device(t.device)
    import contextlib

    return contextlib.nullcontext()


def _scalars(hr: torch.Tensor, kernels: torch.Tensor, scale: int, xp: torch.Tensor):
    """Positional scalar arguments shared by both kernels, and the constexpr keyword arguments."""
    B, C, H, W = hr.shape
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    Hp, Wp, cp = xp.shape[1:]
    args = (C, Hp, Wp, h * w, w, float(w), float(W), float(h), float(H), kk, k, float(scale),
            size_bucket(B * h * w))
    meta = {
        "CP": cp,
        "BLOCK_C": block_c(C),
        "INDEX64": needs_int64(C, Hp, Wp, kk, h * w),
    }
    return args, meta


def forward(hr, kernels, offsets_h, offsets_v, scale: int) -> torch.Tensor:
    """HR (B,C,H,W), kernels/offsets (B,k²,h,w), each any of float16/bfloat16/float32/float64 →
    LR (B,C,h,w) in the promoted dtype of the four."""
    _check_launch(hr)
    B, C = hr.shape[:2]
    kk, h, w = kernels.shape[1:]
    xp = pad_channels_last(hr.contiguous(), math.isqrt(kk) // 2)
    kernels, offsets_h, offsets_v = (t.contiguous() for t in (kernels, offsets_h, offsets_v))
    dtype = hr.dtype
    for t in (kernels, offsets_h, offsets_v):
        dtype = torch.promote_types(dtype, t.dtype)
    out = torch.empty(B, C, h, w, dtype=dtype, device=hr.device)
    args, meta = _scalars(hr, kernels, scale, xp)
    acc = _tl(accumulator(hr, kernels, offsets_h, offsets_v))
    grid = lambda m: (triton.cdiv(h * w, m["BLOCK_P"]), B)
    with _device_ctx(hr):
        _fwd_kernel[grid](
            xp, kernels, offsets_h, offsets_v, out, *args, ACC=acc, **meta,
            enable_fp_fusion=FP_FUSION,
        )
    return out


def backward(hr, kernels, offsets_h, offsets_v, scale: int, grad_out, need_x: bool):
    """Gradients (d hr (B,C,H,W) in hr's dtype or None, d kernels, d offsets_h, d offsets_v),
    each in its input's dtype. ``grad_out`` is (B,C,h,w)."""
    _check_launch(hr)
    B, C = hr.shape[:2]
    kk, h, w = kernels.shape[1:]
    p = math.isqrt(kk) // 2
    xp = pad_channels_last(hr.contiguous(), p)
    kernels, offsets_h, offsets_v = (t.contiguous() for t in (kernels, offsets_h, offsets_v))
    grad_out = grad_out.contiguous()
    acc_dtype = accumulator(hr, kernels, offsets_h, offsets_v)
    if need_x:
        gx = torch.zeros(xp.shape, dtype=acc_dtype, device=hr.device)
    else:
        gx = torch.zeros(1, dtype=acc_dtype, device=hr.device)
    gk = torch.empty_like(kernels)
    gh = torch.empty_like(offsets_h)
    gv = torch.empty_like(offsets_v)
    args, meta = _scalars(hr, kernels, scale, xp)
    grid = lambda m: (triton.cdiv(h * w, m["BLOCK_P"]), B)
    with _device_ctx(hr):
        _bwd_kernel[grid](
            xp, kernels, offsets_h, offsets_v, grad_out, gx, gk, gh, gv, *args,
            ACC=_tl(acc_dtype), NEED_X=bool(need_x), **meta, enable_fp_fusion=FP_FUSION,
        )
    if not need_x:
        return None, gk, gh, gv
    gxp = gx[..., :C].permute(0, 3, 1, 2)
    return fold_reflect_pad(gxp.contiguous(), hr, p).to(hr.dtype), gk, gh, gv
