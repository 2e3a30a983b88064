"""Triton kernels of the CAR resampler (GPU; CPU tensors only under ``TRITON_INTERPRET=1``).

Layout: padded HR ``xp`` (B,C,Hp,Wp), kernels/offsets (B,k²,h,w), all contiguous. A program
owns BLOCK_P LR pixels of the flattened index n = b·h·w + i·w + j (so the batch shares one grid
axis) and walks the k² taps BLOCK_T at a time; the geometry (sample position, bilinear
weights, clamped corners) of a [BLOCK_P, BLOCK_T] tile is computed once and applied to
BLOCK_C channels at a time as a [BLOCK_P, BLOCK_T, BLOCK_C] gather reduced over taps.
BLOCK_T = 1 is the classic "one tap per step" kernel; larger BLOCK_T trades registers for
fewer steps (and makes the interpreter, which pays per operation, fast enough for tests).
Accumulation is in float32 (float64 for float64 inputs); inputs may be float32/float16/bfloat16.

Backward design
---------------
* Kernel and offset gradients: d out/d K[t] and d out/d α,β need only the four corner values
  of the same tap, so the backward program recomputes the geometry, reduces over channels in
  registers and writes each (b, t, i, j) exactly once: no atomics, no intermediate.
* Image gradient: every tap scatters ``grad_out·K·w_corner`` onto four padded-image pixels whose
  positions depend on the *data* (the offsets), so a gather formulation would need an inverse
  map from HR pixels to the (LR pixel, tap) pairs that sample them, i.e. a sort/bucketing pass
  over B·k²·h·w samples plus a variable-length loop per HR pixel. Instead the same backward
  program ``tl.atomic_add``s the four contributions into a float32 buffer of the *padded*
  shape (B,C,Hp,Wp): memory is one padded image instead of the B×C×k²×h×w tensor a
  composition of torch ops would hold, and the accumulation is float32 even for half inputs.
  Contention is low (each HR pixel receives about 4k²/s² ≈ 40 adds, spread over time). The
  reflection padding is folded back afterwards with ``aten.reflection_pad2d_backward`` (the
  exact adjoint of the pad). The order of float atomics is not deterministic, so the image
  gradient may differ between runs in the last bits; kernel/offset gradients are deterministic.
  When the image needs no gradient (the usual case: HR is data) the atomics are compiled out.

Autotuning: (BLOCK_P, BLOCK_T, warps), keyed on (B·h·w, C, k²) and dtypes; the backward resets
its atomic buffer between trials. Under the interpreter a single config is used.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _configs() -> list[triton.Config]:
    """Tile shapes (BLOCK_P pixels × BLOCK_T taps; channels are BLOCK_C, set by the launcher)."""
    if INTERPRET:  # one program, all taps at once: few (slow) interpreted ops
        return [triton.Config({"BLOCK_P": 128, "BLOCK_T": 256}, num_warps=4)]
    return [
        triton.Config({"BLOCK_P": bp, "BLOCK_T": bt}, num_warps=nw)
        for bp, bt, nw in (
            (128, 1, 4),
            (256, 1, 8),
            (64, 4, 4),
            (32, 8, 4),
            (64, 8, 8),
            (32, 16, 8),
        )
    ]


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
def _pixels(cx_ptr, cy_ptr, NPIX, HW, w, BLOCK_P: tl.constexpr):
    """This program's flattened LR pixels n = b·HW + i·w + j → (mask, b (int64), p, cx, cy)."""
    n = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = n < NPIX
    b = n // HW
    p = (n - b * HW).to(tl.int32)
    i = p // w
    j = p - i * w
    cx = tl.load(cx_ptr + j, mask=mask, other=0.0)
    cy = tl.load(cy_ptr + i, mask=mask, other=0.0)
    return mask, b, p, cx, cy


@triton.autotune(configs=_configs(), key=["NPIX", "C", "KK"])
@triton.jit
def _fwd_kernel(
    xp_ptr,
    k_ptr,
    oh_ptr,
    ov_ptr,
    cx_ptr,
    cy_ptr,
    out_ptr,
    NPIX,
    C,
    Hp,
    Wp,
    w,
    HW,
    KK,
    k,
    s,
    ACC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    mask_p, b, p, cx, cy = _pixels(cx_ptr, cy_ptr, NPIX, HW, w, BLOCK_P)
    cx = cx.to(ACC)[:, None]
    cy = cy.to(ACC)[:, None]
    plane = Hp * Wp
    tap0 = (b * KK * HW + p)[:, None]  # [P,1] int64 offset of tap 0 in kernels/offsets
    offs_c = tl.arange(0, BLOCK_C)
    for c0 in range(0, C, BLOCK_C):
        mask_c = (c0 + offs_c) < C
        chan = ((b * C + c0)[:, None] + offs_c[None, :]) * plane  # [P,BC] int64
        chan = chan[:, None, :]
        mask3 = mask_p[:, None, None] & mask_c[None, None, :]
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ACC)
        for t0 in range(0, KK, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            ty = t // k
            tx = t - ty * k
            m2 = mask_p[:, None] & (t < KK)[None, :]
            off = tap0 + (t * HW)[None, :]
            kv = tl.load(k_ptr + off, mask=m2, other=0.0).to(ACC)
            dh = tl.load(oh_ptr + off, mask=m2, other=0.0).to(ACC)
            dv = tl.load(ov_ptr + off, mask=m2, other=0.0).to(ACC)
            al, be, xl, xr, yt, yb = _geometry(cx, cy, tx[None, :], ty[None, :], dh, dv, s, Hp, Wp)
            m3 = m2[:, :, None] & mask3
            v = ((1 - al) * (1 - be) * kv)[:, :, None] * tl.load(
                xp_ptr + chan + (yt * Wp + xl)[:, :, None], mask=m3, other=0.0
            ).to(ACC)
            v += (al * (1 - be) * kv)[:, :, None] * tl.load(
                xp_ptr + chan + (yt * Wp + xr)[:, :, None], mask=m3, other=0.0
            ).to(ACC)
            v += ((1 - al) * be * kv)[:, :, None] * tl.load(
                xp_ptr + chan + (yb * Wp + xl)[:, :, None], mask=m3, other=0.0
            ).to(ACC)
            v += (al * be * kv)[:, :, None] * tl.load(
                xp_ptr + chan + (yb * Wp + xr)[:, :, None], mask=m3, other=0.0
            ).to(ACC)
            acc += tl.sum(v, axis=1)
        out_off = ((b * C + c0)[:, None] + offs_c[None, :]) * HW + p[:, None]
        tl.store(
            out_ptr + out_off,
            acc.to(out_ptr.dtype.element_ty),
            mask=mask_p[:, None] & mask_c[None, :],
        )


@triton.autotune(configs=_configs(), key=["NPIX", "C", "KK"], reset_to_zero=["gx_ptr"])
@triton.jit
def _bwd_kernel(
    xp_ptr,
    k_ptr,
    oh_ptr,
    ov_ptr,
    cx_ptr,
    cy_ptr,
    gout_ptr,
    gx_ptr,
    gk_ptr,
    gh_ptr,
    gv_ptr,
    NPIX,
    C,
    Hp,
    Wp,
    w,
    HW,
    KK,
    k,
    s,
    ACC: tl.constexpr,
    NEED_X: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    mask_p, b, p, cx, cy = _pixels(cx_ptr, cy_ptr, NPIX, HW, w, BLOCK_P)
    cx = cx.to(ACC)[:, None]
    cy = cy.to(ACC)[:, None]
    plane = Hp * Wp
    tap0 = (b * KK * HW + p)[:, None]
    offs_c = tl.arange(0, BLOCK_C)
    for t0 in range(0, KK, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        ty = t // k
        tx = t - ty * k
        m2 = mask_p[:, None] & (t < KK)[None, :]
        off = tap0 + (t * HW)[None, :]
        kv = tl.load(k_ptr + off, mask=m2, other=0.0).to(ACC)
        dh = tl.load(oh_ptr + off, mask=m2, other=0.0).to(ACC)
        dv = tl.load(ov_ptr + off, mask=m2, other=0.0).to(ACC)
        al, be, xl, xr, yt, yb = _geometry(cx, cy, tx[None, :], ty[None, :], dh, dv, s, Hp, Wp)
        o_tl = (yt * Wp + xl)[:, :, None]
        o_tr = (yt * Wp + xr)[:, :, None]
        o_bl = (yb * Wp + xl)[:, :, None]
        o_br = (yb * Wp + xr)[:, :, None]
        a3 = al[:, :, None]
        b3 = be[:, :, None]
        gk = tl.zeros([BLOCK_P, BLOCK_T], dtype=ACC)
        ga = tl.zeros([BLOCK_P, BLOCK_T], dtype=ACC)
        gb = tl.zeros([BLOCK_P, BLOCK_T], dtype=ACC)
        for c0 in range(0, C, BLOCK_C):
            mask_c = (c0 + offs_c) < C
            gidx = (b * C + c0)[:, None] + offs_c[None, :]  # [P,BC] int64 plane index
            g = tl.load(
                gout_ptr + gidx * HW + p[:, None], mask=mask_p[:, None] & mask_c[None, :], other=0.0
            ).to(ACC)
            g = g[:, None, :]  # [P,1,BC]
            chan = (gidx * plane)[:, None, :]
            m3 = m2[:, :, None] & mask_c[None, None, :]
            v_tl = tl.load(xp_ptr + chan + o_tl, mask=m3, other=0.0).to(ACC)
            v_tr = tl.load(xp_ptr + chan + o_tr, mask=m3, other=0.0).to(ACC)
            v_bl = tl.load(xp_ptr + chan + o_bl, mask=m3, other=0.0).to(ACC)
            v_br = tl.load(xp_ptr + chan + o_br, mask=m3, other=0.0).to(ACC)
            top = (1 - a3) * v_tl + a3 * v_tr
            bot = (1 - a3) * v_bl + a3 * v_br
            gk += tl.sum(g * ((1 - b3) * top + b3 * bot), axis=2)
            ga += tl.sum(g * ((1 - b3) * (v_tr - v_tl) + b3 * (v_br - v_bl)), axis=2)
            gb += tl.sum(g * (bot - top), axis=2)
            if NEED_X:
                gw = g * kv[:, :, None]
                ty_ = gx_ptr.dtype.element_ty
                tl.atomic_add(gx_ptr + chan + o_tl, (gw * ((1 - a3) * (1 - b3))).to(ty_), mask=m3)
                tl.atomic_add(gx_ptr + chan + o_tr, (gw * (a3 * (1 - b3))).to(ty_), mask=m3)
                tl.atomic_add(gx_ptr + chan + o_bl, (gw * ((1 - a3) * b3)).to(ty_), mask=m3)
                tl.atomic_add(gx_ptr + chan + o_br, (gw * (a3 * b3)).to(ty_), mask=m3)
        tl.store(gk_ptr + off, gk.to(gk_ptr.dtype.element_ty), mask=m2)
        tl.store(gh_ptr + off, (s * kv * ga).to(gh_ptr.dtype.element_ty), mask=m2)
        tl.store(gv_ptr + off, (s * kv * gb).to(gv_ptr.dtype.element_ty), mask=m2)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block_c(C: int) -> int:
    return min(triton.next_power_of_2(C), 4)


def _device_ctx(t: torch.Tensor):
    if t.is_cuda:
        return torch.cuda.device(t.device)
    import contextlib

    if not INTERPRET:
        raise RuntimeError(
            "Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
        )
    return contextlib.nullcontext()


def forward(xp, kernels, offsets_h, offsets_v, cx, cy, scale: int) -> torch.Tensor:
    """Padded HR (B,C,Hp,Wp), kernels/offsets (B,k²,h,w), centres cx (w,), cy (h,) → (B,C,h,w)."""
    B, C, Hp, Wp = xp.shape
    kk, h, w = kernels.shape[1:]
    xp, kernels = xp.contiguous(), kernels.contiguous()
    offsets_h, offsets_v = offsets_h.contiguous(), offsets_v.contiguous()
    out = torch.empty(B, C, h, w, dtype=xp.dtype, device=xp.device)
    bc = _block_c(C)
    grid = lambda meta: (triton.cdiv(B * h * w, meta["BLOCK_P"]),)
    with _device_ctx(xp):
        _fwd_kernel[grid](
            xp,
            kernels,
            offsets_h,
            offsets_v,
            cx,
            cy,
            out,
            B * h * w,
            C,
            Hp,
            Wp,
            w,
            h * w,
            kk,
            math.isqrt(kk),
            float(scale),
            ACC=_acc(xp.dtype),
            BLOCK_C=bc,
        )
    return out


def backward(xp, kernels, offsets_h, offsets_v, cx, cy, scale: int, grad_out, need_x: bool):
    """Gradients (padded-image grad (B,C,Hp,Wp) float32/64 or None, dK, dΔh, dΔv)."""
    B, C, Hp, Wp = xp.shape
    kk, h, w = kernels.shape[1:]
    xp, kernels = xp.contiguous(), kernels.contiguous()
    offsets_h, offsets_v = offsets_h.contiguous(), offsets_v.contiguous()
    grad_out = grad_out.contiguous()
    acc_dtype = torch.float64 if xp.dtype == torch.float64 else torch.float32
    if need_x:
        gx = torch.zeros(B, C, Hp, Wp, dtype=acc_dtype, device=xp.device)
    else:
        gx = torch.zeros(1, dtype=acc_dtype, device=xp.device)
    gk = torch.empty_like(kernels)
    gh = torch.empty_like(kernels)
    gv = torch.empty_like(kernels)
    grid = lambda meta: (triton.cdiv(B * h * w, meta["BLOCK_P"]),)
    with _device_ctx(xp):
        _bwd_kernel[grid](
            xp,
            kernels,
            offsets_h,
            offsets_v,
            cx,
            cy,
            grad_out,
            gx,
            gk,
            gh,
            gv,
            B * h * w,
            C,
            Hp,
            Wp,
            w,
            h * w,
            kk,
            math.isqrt(kk),
            float(scale),
            ACC=_acc(xp.dtype),
            NEED_X=bool(need_x),
            BLOCK_C=_block_c(C),
        )
    return (gx if need_x else None), gk, gh, gv
