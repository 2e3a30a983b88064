"""CPU kernels of the CAR resampler (numba, multi-threaded, float32 and float64).

Compiled on first use (a few seconds per dtype) and cached on disk (``cache=True``, next to
this file or under ``$NUMBA_CACHE_DIR``). No B×C×k²×h×w intermediate is ever built.

Layout: the HR image is reflection-padded by the kernels themselves into a *channels-last*
copy (B, Hp, Wp, C), so the C values of one bilinear corner, and of its right-hand neighbour,
are contiguous: one (pixel, tap) touches two short contiguous runs of 2·C values instead of
4·C values scattered over C planes.

* forward: parallel over LR rows (b, i). For each tap a branch-free, SIMD-vectorisable pass
  over the row computes the geometry (corner offset, clamped steps, four K-weighted bilinear
  weights) once; a second pass gathers the corners for all C channels (C = 3 unrolled).
* backward: one fused pass, parallel over work items (b, band of LR rows), the same two-pass
  structure per (row, tap). The corner values are first reduced over channels with the output
  gradient, u_corner = Σ_c g_c·x_c(corner), after which the kernel and both offset gradients
  need four scalars (race-free stores per (b, t, i, j)); the image gradient K·w_corner·g_c is
  scattered in the same pass into a zero-initialised channels-last padded buffer. Items of
  different images write different planes, so with B ≥ threads there is one buffer and no
  race; with fewer images than threads each image is cut into ``bands`` row bands, each with
  its own buffer (bands×B×Hp×Wp×C). A last parallel pass sums the bands and folds the
  reflection padding back onto (B, C, H, W) (adjoint of the pad).

Arithmetic follows the authors' CUDA kernel in the input precision (``fastmath=False``):
``px = ((cx[j] + tx) + s·Δh) − 0.5`` with ``cx[j] = (j + 0.5)/w·W`` precomputed on the host.
Only the order of the channel sums in the backward differs from a per-channel loop.

Indices into the flattened planes are unsigned (uint32 stored, uint64 in the gather/scatter
loops): with signed indices numba emits a negative-index wrap-around select for every one of
the 12 loads (and 12 read-modify-writes) per (pixel, tap), which cost about half the time.

Threads: numba's OpenMP pool is a different libgomp from torch's. Tiny problems (gradcheck,
tests) run single-threaded (``_SERIAL_WORK``) to skip the parallel region's wake-up cost.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

# Below this many (pixel × tap × channel) products a call runs on one thread.
_SERIAL_WORK = 1 << 16


@njit(inline="always")
def _refl(v, n):
    """Reflect index v in [-(n-1), 2(n-1)] into [0, n-1] (torch 'reflect' padding)."""
    if v < 0:
        v = -v
    if v >= n:
        v = 2 * (n - 1) - v
    return v


@njit(parallel=True, cache=True, boundscheck=False)
def _pad_cl(x, p, xp):  # pragma: no cover - compiled
    """x (B,C,H,W) → xp (B,H+2p,W+2p,C), reflection padding, channels last."""
    B, C, H, W = x.shape
    Hp, Wp = xp.shape[1], xp.shape[2]
    for r in prange(B * Hp):
        b = r // Hp
        y = r - b * Hp
        sy = _refl(y - p, H)
        for xx in range(Wp):
            sx = _refl(xx - p, W)
            for c in range(C):
                xp[b, y, xx, c] = x[b, c, sy, sx]


@njit(parallel=True, cache=True, boundscheck=False)
def _fold_cl(gbuf, p, gx):  # pragma: no cover - compiled
    """gbuf (bands,B,Hp,Wp,C) → gx (B,C,H,W) zero-initialised: sum of bands, adjoint of the pad."""
    bands, B, Hp, Wp, C = gbuf.shape
    H, W = gx.shape[2], gx.shape[3]
    for b in prange(B):
        for q in range(bands):
            for y in range(Hp):
                sy = _refl(y - p, H)
                for xx in range(Wp):
                    sx = _refl(xx - p, W)
                    for c in range(C):
                        gx[b, c, sy, sx] += gbuf[q, b, y, xx, c]


@njit(inline="always")
def _row_geometry(cxr, fty, ftx, sf, half, ohr, ovr, wmax, hmax, Wp, C, idx, dxa, dya, ala, bea):
    """Vectorisable pass over one LR row for one tap: corner offset into the channels-last
    plane (idx), clamped steps to the right/bottom corner (dxa/dya, 0 at the border) and the
    unclamped fractions α, β (taken before clamping, as the authors do)."""
    zero = half - half
    cw = np.uint32(C)
    rw = np.uint32(Wp * C)
    for j in range(cxr.shape[0]):
        px = ((cxr[j] + ftx) + sf * ohr[j]) - half
        py = (fty + sf * ovr[j]) - half
        fx = np.floor(px)
        fy = np.floor(py)
        ala[j] = px - fx
        bea[j] = py - fy
        fx = max(fx, zero)  # NaN → 0
        fy = max(fy, zero)
        inx = fx < wmax
        iny = fy < hmax
        fx = fx if inx else wmax
        fy = fy if iny else hmax
        idx[j] = np.uint32((np.int32(fy) * np.int32(Wp) + np.int32(fx)) * np.int32(C))
        dxa[j] = cw if inx else np.uint32(0)
        dya[j] = rw if iny else np.uint32(0)


@njit(parallel=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")
def _forward(xp, ker, oh, ov, cx, cy, taps, sf, half, wmax, hmax, out):  # pragma: no cover
    """xp (B,Hp,Wp,C) channels last; ker/oh/ov (B,k²,h,w); cx (w,); cy (h,); taps (k,) =
    0..k-1; wmax, hmax = Wp-1, Hp-1 as floats → out (B,C,h,w)."""
    B, Hp, Wp, C = xp.shape
    kk, h, w = ker.shape[1], ker.shape[2], ker.shape[3]
    k = taps.shape[0]
    one = half + half
    u1 = np.uint64(1)
    u2 = np.uint64(2)
    for r in prange(B * h):
        b = r // h
        i = r - b * h
        xb = xp[b].reshape(Hp * Wp * C)
        acc = np.zeros(w * C, dtype=out.dtype)
        idx = np.empty(w, dtype=np.uint32)
        dxa = np.empty(w, dtype=np.uint32)
        dya = np.empty(w, dtype=np.uint32)
        ala = np.empty(w, dtype=out.dtype)
        bea = np.empty(w, dtype=out.dtype)
        wa = np.empty(w, dtype=out.dtype)
        wb = np.empty(w, dtype=out.dtype)
        wc = np.empty(w, dtype=out.dtype)
        wd = np.empty(w, dtype=out.dtype)
        for t in range(kk):
            ty = t // k
            kr = ker[b, t, i]
            _row_geometry(
                cx, cy[i] + taps[ty], taps[t - ty * k], sf, half, oh[b, t, i], ov[b, t, i],
                wmax, hmax, Wp, C, idx, dxa, dya, ala, bea,
            )
            for j in range(w):  # vectorised: K-weighted bilinear weights
                al = ala[j]
                be = bea[j]
                kv = kr[j]
                wa[j] = (one - al) * (one - be) * kv
                wb[j] = al * (one - be) * kv
                wc[j] = (one - al) * be * kv
                wd[j] = al * be * kv
            if C == 3:
                for j in range(w):
                    w00 = wa[j]
                    w01 = wb[j]
                    w10 = wc[j]
                    w11 = wd[j]
                    o0 = np.uint64(idx[j])
                    dx = np.uint64(dxa[j])
                    o1 = o0 + dx
                    o2 = o0 + np.uint64(dya[j])
                    o3 = o2 + dx
                    a = 3 * j
                    acc[a] += w00 * xb[o0] + w01 * xb[o1] + w10 * xb[o2] + w11 * xb[o3]
                    acc[a + 1] += (
                        w00 * xb[o0 + u1] + w01 * xb[o1 + u1] + w10 * xb[o2 + u1] + w11 * xb[o3 + u1]
                    )
                    acc[a + 2] += (
                        w00 * xb[o0 + u2] + w01 * xb[o1 + u2] + w10 * xb[o2 + u2] + w11 * xb[o3 + u2]
                    )
            else:
                for j in range(w):
                    w00 = wa[j]
                    w01 = wb[j]
                    w10 = wc[j]
                    w11 = wd[j]
                    o0 = np.uint64(idx[j])
                    dx = np.uint64(dxa[j])
                    o1 = o0 + dx
                    o2 = o0 + np.uint64(dya[j])
                    o3 = o2 + dx
                    a = C * j
                    for c in range(C):
                        uc = np.uint64(c)
                        acc[a + c] += (
                            w00 * xb[o0 + uc] + w01 * xb[o1 + uc] + w10 * xb[o2 + uc] + w11 * xb[o3 + uc]
                        )
        for c in range(C):
            for j in range(w):
                out[b, c, i, j] = acc[j * C + c]


@njit(parallel=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")
def _backward(
    xp, ker, oh, ov, cx, cy, taps, sf, half, wmax, hmax, gout, need_x, gbuf, gker, goh, gov
):  # pragma: no cover - compiled
    """Fused backward. xp (B,Hp,Wp,C); gout (B,C,h,w) → gker/goh/gov (B,k²,h,w) and, if
    ``need_x``, gbuf (bands,B,Hp,Wp,C) += scattered image gradient (band q: rows of band q)."""
    B, Hp, Wp, C = xp.shape
    kk, h, w = ker.shape[1], ker.shape[2], ker.shape[3]
    k = taps.shape[0]
    bands = gbuf.shape[0] if need_x else 1
    one = half + half
    u1 = np.uint64(1)
    u2 = np.uint64(2)
    for q in prange(B * bands):
        b = q // bands
        band = q - b * bands
        i0 = (band * h) // bands
        i1 = ((band + 1) * h) // bands
        xb = xp[b].reshape(Hp * Wp * C)
        gb = gbuf[band if need_x else 0, b if need_x else 0].reshape(-1)
        gl = np.empty(w * C, dtype=xp.dtype)
        idx = np.empty(w, dtype=np.uint32)
        dxa = np.empty(w, dtype=np.uint32)
        dya = np.empty(w, dtype=np.uint32)
        ala = np.empty(w, dtype=xp.dtype)
        bea = np.empty(w, dtype=xp.dtype)
        for i in range(i0, i1):
            for c in range(C):
                for j in range(w):
                    gl[j * C + c] = gout[b, c, i, j]
            for t in range(kk):
                ty = t // k
                kr = ker[b, t, i]
                gkr = gker[b, t, i]
                ghr = goh[b, t, i]
                gvr = gov[b, t, i]
                _row_geometry(
                    cx, cy[i] + taps[ty], taps[t - ty * k], sf, half, oh[b, t, i], ov[b, t, i],
                    wmax, hmax, Wp, C, idx, dxa, dya, ala, bea,
                )
                if C == 3:
                    for j in range(w):
                        al = ala[j]
                        be = bea[j]
                        kv = kr[j]
                        o0 = np.uint64(idx[j])
                        dx = np.uint64(dxa[j])
                        o1 = o0 + dx
                        o2 = o0 + np.uint64(dya[j])
                        o3 = o2 + dx
                        g0 = gl[3 * j]
                        g1 = gl[3 * j + 1]
                        g2 = gl[3 * j + 2]
                        u00 = g0 * xb[o0] + g1 * xb[o0 + u1] + g2 * xb[o0 + u2]
                        u01 = g0 * xb[o1] + g1 * xb[o1 + u1] + g2 * xb[o1 + u2]
                        u10 = g0 * xb[o2] + g1 * xb[o2 + u1] + g2 * xb[o2 + u2]
                        u11 = g0 * xb[o3] + g1 * xb[o3 + u1] + g2 * xb[o3 + u2]
                        oma = one - al
                        omb = one - be
                        w00 = oma * omb
                        w01 = al * omb
                        w10 = oma * be
                        w11 = al * be
                        gkr[j] = w00 * u00 + w01 * u01 + w10 * u10 + w11 * u11
                        skv = sf * kv
                        ghr[j] = skv * (omb * (u01 - u00) + be * (u11 - u10))
                        gvr[j] = skv * (oma * (u10 - u00) + al * (u11 - u01))
                        if need_x:
                            k00 = kv * w00
                            k01 = kv * w01
                            k10 = kv * w10
                            k11 = kv * w11
                            gb[o0] += k00 * g0
                            gb[o0 + u1] += k00 * g1
                            gb[o0 + u2] += k00 * g2
                            gb[o1] += k01 * g0
                            gb[o1 + u1] += k01 * g1
                            gb[o1 + u2] += k01 * g2
                            gb[o2] += k10 * g0
                            gb[o2 + u1] += k10 * g1
                            gb[o2 + u2] += k10 * g2
                            gb[o3] += k11 * g0
                            gb[o3 + u1] += k11 * g1
                            gb[o3 + u2] += k11 * g2
                else:
                    for j in range(w):
                        al = ala[j]
                        be = bea[j]
                        kv = kr[j]
                        o0 = np.uint64(idx[j])
                        dx = np.uint64(dxa[j])
                        o1 = o0 + dx
                        o2 = o0 + np.uint64(dya[j])
                        o3 = o2 + dx
                        a = C * j
                        u00 = half - half
                        u01 = u00
                        u10 = u00
                        u11 = u00
                        for c in range(C):
                            uc = np.uint64(c)
                            g = gl[a + c]
                            u00 += g * xb[o0 + uc]
                            u01 += g * xb[o1 + uc]
                            u10 += g * xb[o2 + uc]
                            u11 += g * xb[o3 + uc]
                        oma = one - al
                        omb = one - be
                        w00 = oma * omb
                        w01 = al * omb
                        w10 = oma * be
                        w11 = al * be
                        gkr[j] = w00 * u00 + w01 * u01 + w10 * u10 + w11 * u11
                        skv = sf * kv
                        ghr[j] = skv * (omb * (u01 - u00) + be * (u11 - u10))
                        gvr[j] = skv * (oma * (u10 - u00) + al * (u11 - u01))
                        if need_x:
                            k00 = kv * w00
                            k01 = kv * w01
                            k10 = kv * w10
                            k11 = kv * w11
                            for c in range(C):
                                uc = np.uint64(c)
                                g = gl[a + c]
                                gb[o0 + uc] += k00 * g
                                gb[o1 + uc] += k01 * g
                                gb[o2 + uc] += k10 * g
                                gb[o3 + uc] += k11 * g


def _scalars(dtype: torch.dtype, k: int, scale: int):
    """Tap positions 0..k-1, scale and 0.5 in the compute precision (keeps numba in it)."""
    f = np.float64 if dtype == torch.float64 else np.float32
    return np.arange(k, dtype=f), f(scale), f(0.5)


def _check(t: torch.Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"CPU kernels take float32/float64, got {t.dtype}")
    return t.detach().contiguous().numpy()


def _thread_count(work: int) -> int:
    """Threads for one call: 1 for tiny problems (no parallel wake-up), else torch's thread
    count (so ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` govern both), capped by numba's pool."""
    if work < _SERIAL_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


class _Threads:
    """Run one call on :func:`_thread_count` threads and leave numba's and torch's thread
    counts as found: numba's OpenMP layer shares the runtime with torch, and without the
    restore its first parallel call would raise torch's count to numba's (all cores)."""

    def __init__(self, work: int) -> None:
        self.threads = _thread_count(work)
        self.prev_numba = self.prev_torch = 0

    def __enter__(self) -> _Threads:  # noqa: PYI034
        self.prev_torch = torch.get_num_threads()  # first: starting numba's pool may change it
        self.prev_numba = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        numba.set_num_threads(self.prev_numba)
        if torch.get_num_threads() != self.prev_torch:
            torch.set_num_threads(self.prev_torch)


def pad_channels_last(hr: torch.Tensor, p: int) -> torch.Tensor:
    """hr (B,C,H,W) → reflection-padded channels-last copy (B,H+2p,W+2p,C)."""
    B, C, H, W = hr.shape
    xp = torch.empty(B, H + 2 * p, W + 2 * p, C, dtype=hr.dtype)
    with _Threads(xp.numel()):
        _pad_cl(_check(hr), p, xp.numpy())
    return xp


def forward(hr, kernels, offsets_h, offsets_v, cx, cy, scale: int, return_padded: bool = False):
    """HR (B,C,H,W) (unpadded), kernels/offsets (B,k²,h,w), centres cx (w,), cy (h,) →
    (B,C,h,w). Pads internally (reflection by k//2, channels last); with ``return_padded``
    returns (out, padded copy) so that the backward can reuse the copy."""
    B, C = hr.shape[:2]
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    xp = pad_channels_last(hr, k // 2)
    Hp, Wp = xp.shape[1:3]
    out = torch.empty(B, C, h, w, dtype=hr.dtype)
    taps, sf, half = _scalars(hr.dtype, k, scale)
    with _Threads(B * C * kk * h * w):
        _forward(
            xp.numpy(), _check(kernels), _check(offsets_h), _check(offsets_v),
            _check(cx), _check(cy), taps, sf, half,
            taps.dtype.type(Wp - 1), taps.dtype.type(Hp - 1), out.numpy(),
        )
    return (out, xp) if return_padded else out


def backward(
    hr, kernels, offsets_h, offsets_v, cx, cy, scale: int, grad_out, need_x: bool, xp=None
):
    """Gradients (d hr (B,C,H,W) or None, d kernels, d offsets_h, d offsets_v). ``xp``: the
    forward's padded channels-last copy of ``hr`` (rebuilt when None)."""
    B, C, H, W = hr.shape
    kk, h, w = kernels.shape[1:]
    k = math.isqrt(kk)
    p = k // 2
    if xp is None:
        xp = pad_channels_last(hr, p)
    Hp, Wp = xp.shape[1:3]
    work = B * C * kk * h * w
    threads = _thread_count(work)
    bands = 1 if B >= threads else min(h, -(-threads // B))
    if need_x:
        gbuf = torch.zeros(bands, B, Hp, Wp, C, dtype=hr.dtype)
    else:
        gbuf = torch.zeros(1, 1, 1, 1, 1, dtype=hr.dtype)
    gk = torch.empty(kernels.shape, dtype=hr.dtype)
    gh = torch.empty_like(gk)
    gv = torch.empty_like(gk)
    taps, sf, half = _scalars(hr.dtype, k, scale)
    with _Threads(work):
        _backward(
            xp.numpy(), _check(kernels), _check(offsets_h), _check(offsets_v),
            _check(cx), _check(cy), taps, sf, half,
            taps.dtype.type(Wp - 1), taps.dtype.type(Hp - 1),
            _check(grad_out), bool(need_x), gbuf.numpy(), gk.numpy(), gh.numpy(), gv.numpy(),
        )
        gx = None
        if need_x:
            gx = torch.zeros(B, C, H, W, dtype=hr.dtype)
            _fold_cl(gbuf.numpy(), p, gx.numpy())
    return gx, gk, gh, gv
