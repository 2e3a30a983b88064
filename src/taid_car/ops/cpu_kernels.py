"""CPU kernels of the CAR resampler (numba, multi-threaded, float32 and float64).

Compiled on first use (a few seconds per dtype) and cached on disk (``cache=True``, next to
this file or under ``$NUMBA_CACHE_DIR``). No B×C×k²×h×w intermediate is ever built:

* forward: parallel over LR rows (b, i); for each tap the geometry (position, bilinear weights,
  clamped corners) of the whole row is computed once in a vectorisable pass and then applied
  to all C channels in a gather pass.
* backward: one fused pass, parallel over work items (b, band of LR rows). Kernel and offset
  gradients are written per (b, t, i, j): race-free. The image gradient is scattered into a
  zero-initialised padded buffer; items of different images write different planes, so with
  B ≥ threads there is one buffer and no race. With fewer images than threads each image is
  cut into ``bands`` row bands, each band with its own padded buffer (bands×B×C×Hp×Wp),
  summed afterwards. The caller then folds the reflection padding back (adjoint of the pad).

Arithmetic follows the authors' CUDA kernel in the input precision (``fastmath=False``):
``px = ((cx[j] + tx) + s·Δh) − 0.5`` with ``cx[j] = (j + 0.5)/w·W`` precomputed on the host.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange


@njit(inline="always")
def _corner(f, n):
    """Clamp a floored coordinate ``f`` (float) to [0, n-1] → int; NaN maps to 0."""
    if not f >= 0:
        return 0
    if f > n - 1:
        return n - 1
    return int(f)


@njit(parallel=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")
def _forward(xp, ker, oh, ov, cx, cy, taps, sf, half, wmax, hmax, out):  # pragma: no cover
    """xp (B,C,Hp,Wp); ker/oh/ov (B,k²,h,w); cx (w,); cy (h,); taps (k,) = 0..k-1;
    wmax, hmax = Wp-1, Hp-1 as floats → out (B,C,h,w).

    Per (row, tap): a branch-free, SIMD-vectorisable pass over the row computes corner index
    and the four K-weighted bilinear weights; a second pass gathers them for every channel.
    """
    B, C, Wp = xp.shape[0], xp.shape[1], xp.shape[3]
    kk, h, w = ker.shape[1], ker.shape[2], ker.shape[3]
    k = taps.shape[0]
    one = half + half
    zero = half - half
    wp32 = np.int32(Wp)
    for r in prange(B * h):
        b = r // h
        i = r - b * h
        acc = np.zeros((C, w), dtype=out.dtype)
        idx = np.empty(w, dtype=np.int32)
        dxa = np.empty(w, dtype=np.int32)
        dya = np.empty(w, dtype=np.int32)
        w00 = np.empty(w, dtype=out.dtype)
        w01 = np.empty(w, dtype=out.dtype)
        w10 = np.empty(w, dtype=out.dtype)
        w11 = np.empty(w, dtype=out.dtype)
        for t in range(kk):
            ty = t // k
            fty = cy[i] + taps[ty]
            ftx = taps[t - ty * k]
            kr = ker[b, t, i]
            ohr = oh[b, t, i]
            ovr = ov[b, t, i]
            for j in range(w):
                px = ((cx[j] + ftx) + sf * ohr[j]) - half
                py = (fty + sf * ovr[j]) - half
                fx = np.floor(px)
                fy = np.floor(py)
                al = px - fx
                be = py - fy
                fx = max(fx, zero)  # NaN → 0
                fy = max(fy, zero)
                inx = fx < wmax
                iny = fy < hmax
                fx = fx if inx else wmax
                fy = fy if iny else hmax
                idx[j] = np.int32(fy) * wp32 + np.int32(fx)
                dxa[j] = np.int32(1) if inx else np.int32(0)
                dya[j] = wp32 if iny else np.int32(0)
                kv = kr[j]
                w00[j] = (one - al) * (one - be) * kv
                w01[j] = al * (one - be) * kv
                w10[j] = (one - al) * be * kv
                w11[j] = al * be * kv
            for c in range(C):
                pl = xp[b, c].ravel()
                for j in range(w):
                    o = idx[j]
                    dx = dxa[j]
                    dy = dya[j]
                    acc[c, j] += (
                        w00[j] * pl[o]
                        + w01[j] * pl[o + dx]
                        + w10[j] * pl[o + dy]
                        + w11[j] * pl[o + dy + dx]
                    )
        for c in range(C):
            for j in range(w):
                out[b, c, i, j] = acc[c, j]


@njit(parallel=True, cache=True, fastmath=False, boundscheck=False)
def _backward(
    xp, ker, oh, ov, cx, cy, taps, sf, half, gout, need_x, gbuf, gker, goh, gov
):  # pragma: no cover - compiled
    """Fused backward. gout (B,C,h,w) → gker/goh/gov (B,k²,h,w) and, if ``need_x``,
    gbuf (bands,B,C,Hp,Wp) += scattered image gradient (band q holds rows of band q)."""
    B, C, Hp, Wp = xp.shape
    kk, h, w = ker.shape[1], ker.shape[2], ker.shape[3]
    k = taps.shape[0]
    bands = gbuf.shape[0] if need_x else 1
    one = half + half
    zero = half - half
    for q in prange(B * bands):
        b = q // bands
        band = q - b * bands
        i0 = (band * h) // bands
        i1 = ((band + 1) * h) // bands
        for i in range(i0, i1):
            for t in range(kk):
                ty = t // k
                tx = t - ty * k
                fty = cy[i] + taps[ty]
                for j in range(w):
                    px = ((cx[j] + taps[tx]) + sf * oh[b, t, i, j]) - half
                    py = (fty + sf * ov[b, t, i, j]) - half
                    fx = np.floor(px)
                    fy = np.floor(py)
                    al = px - fx
                    be = py - fy
                    xl = _corner(fx, Wp)
                    xr = min(xl + 1, Wp - 1)
                    yt = _corner(fy, Hp)
                    yb = min(yt + 1, Hp - 1)
                    kv = ker[b, t, i, j]
                    w_tl = (one - al) * (one - be)
                    w_tr = al * (one - be)
                    w_bl = (one - al) * be
                    w_br = al * be
                    gk = zero
                    ga = zero
                    gb = zero
                    for c in range(C):
                        g = gout[b, c, i, j]
                        v_tl = xp[b, c, yt, xl]
                        v_tr = xp[b, c, yt, xr]
                        v_bl = xp[b, c, yb, xl]
                        v_br = xp[b, c, yb, xr]
                        gk += g * (w_tl * v_tl + w_tr * v_tr + w_bl * v_bl + w_br * v_br)
                        ga += g * ((one - be) * (v_tr - v_tl) + be * (v_br - v_bl))
                        gb += g * ((one - al) * (v_bl - v_tl) + al * (v_br - v_tr))
                        if need_x:
                            gw = g * kv
                            gbuf[band, b, c, yt, xl] += gw * w_tl
                            gbuf[band, b, c, yt, xr] += gw * w_tr
                            gbuf[band, b, c, yb, xl] += gw * w_bl
                            gbuf[band, b, c, yb, xr] += gw * w_br
                    gker[b, t, i, j] = gk
                    goh[b, t, i, j] = sf * kv * ga
                    gov[b, t, i, j] = sf * kv * gb


def _scalars(dtype: torch.dtype, k: int, scale: int):
    """Tap positions 0..k-1, scale and 0.5 in the compute precision (keeps numba in it)."""
    f = np.float64 if dtype == torch.float64 else np.float32
    return np.arange(k, dtype=f), f(scale), f(0.5)


def _check(t: torch.Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"CPU kernels take float32/float64, got {t.dtype}")
    return t.detach().contiguous().numpy()


def forward(xp, kernels, offsets_h, offsets_v, cx, cy, scale: int) -> torch.Tensor:
    """Padded HR (B,C,Hp,Wp), kernels/offsets (B,k²,h,w), centres cx (w,), cy (h,) → (B,C,h,w)."""
    B, C = xp.shape[:2]
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    out = torch.empty(B, C, h, w, dtype=xp.dtype)
    taps, sf, half = _scalars(xp.dtype, k, scale)
    Hp, Wp = xp.shape[2:]
    _forward(
        _check(xp),
        _check(kernels),
        _check(offsets_h),
        _check(offsets_v),
        _check(cx),
        _check(cy),
        taps,
        sf,
        half,
        taps.dtype.type(Wp - 1),
        taps.dtype.type(Hp - 1),
        out.numpy(),
    )
    return out


def backward(xp, kernels, offsets_h, offsets_v, cx, cy, scale: int, grad_out, need_x: bool):
    """Gradients (padded-image grad (B,C,Hp,Wp) or None, d kernels, d offsets_h, d offsets_v)."""
    B, C, Hp, Wp = xp.shape
    kk, h = kernels.shape[1], kernels.shape[2]
    k = math.isqrt(kk)
    threads = numba.get_num_threads()
    bands = 1 if B >= threads else min(h, -(-threads // B))
    if need_x:
        gbuf = torch.zeros(bands, B, C, Hp, Wp, dtype=xp.dtype)
    else:
        gbuf = torch.zeros(1, 1, 1, 1, 1, dtype=xp.dtype)
    gk = torch.empty_like(kernels, memory_format=torch.contiguous_format)
    gh = torch.empty_like(gk)
    gv = torch.empty_like(gk)
    taps, sf, half = _scalars(xp.dtype, k, scale)
    _backward(
        _check(xp),
        _check(kernels),
        _check(offsets_h),
        _check(offsets_v),
        _check(cx),
        _check(cy),
        taps,
        sf,
        half,
        _check(grad_out),
        bool(need_x),
        gbuf.numpy(),
        gk.numpy(),
        gh.numpy(),
        gv.numpy(),
    )
    gx = (gbuf[0] if bands == 1 else gbuf.sum(0)) if need_x else None
    return gx, gk, gh, gv
