"""Triton kernels of the CAR resampler against the float64 reference.

The same tests run wherever Triton can run: in Triton's interpreter on CPU tensors (conftest.py
selects it when CUDA is absent, or when ``TRITON_INTERPRET=1`` is set), or compiled on CUDA
tensors through the autotuner (a GPU machine, interpreter not asked for). ``gpu``-marked tests
need the compiled path: large images, a batch past 2³¹ kernel elements, bf16 autocast, timing-free
autotuner checks. The compile check for GPUs that are not here is in test_ops_compile.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from taid_car.ops import adaptive_resample
from taid_car.ops.common import lr_centers
from test_ops_reference import grads_of, make_inputs, ref_resample

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
tk = pytest.importorskip("taid_car.ops.triton_kernels")

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
COMPILED = torch.cuda.is_available() and not INTERPRETED
DEVICE = "cuda" if COMPILED else "cpu"
needs_triton = pytest.mark.skipif(
    not (INTERPRETED or COMPILED), reason="needs CUDA, or TRITON_INTERPRET=1 for the interpreter"
)
pytestmark = needs_triton

# Small shapes: the interpreter runs one program per 128 LR pixels, all taps at once.
CASES = [
    (2, 3, 20, 36, 2, None, True),  # x2, odd LR width (18), saturated offsets
    (2, 1, 40, 24, 4, None, True),  # x4, k = 13, one channel (CP = 1)
    (1, 5, 21, 15, 3, None, False),  # x3, five channels: CP = 8, two channel blocks of 4
    (1, 2, 18, 20, 2, 17, True),  # k² = 289 > 256: two tap blocks
    (3, 3, 33, 27, 3, None, True),  # odd HR and LR sides, three batch items
]
IDS = ["x2-20x36", "x4-40x24-c1", "x3-21x15-c5", "x2-k17", "x3-33x27-b3"]


def _on(device, tensors, dtype=None):
    return [t.to(device, dtype or t.dtype) for t in tensors]


def _cpu(out, grads):
    return out.cpu(), [None if g is None else g.cpu() for g in grads]


def _assert_close(got, want, atol, rtol=0.0, what=""):
    """got/want: (out, [4 grads]); got may live on CUDA and in a narrower dtype."""
    out_g, grads_g = _cpu(*got)
    out_w, grads_w = want
    torch.testing.assert_close(out_g.double(), out_w, atol=atol, rtol=rtol, msg=f"{what} forward")
    for name, a, b in zip(("hr", "kernels", "offsets_h", "offsets_v"), grads_g, grads_w):
        if a is None and b is None:
            continue
        assert a is not None and b is not None, f"{what} d{name}: one side is None"
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(
            a.double(), b, atol=atol * scale, rtol=rtol, msg=f"{what} d{name}"
        )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_triton_matches_reference_fp64(case):
    """Forward and all four gradients, float64, against the literal reference."""
    B, C, H, W, s, k, sat = case
    inputs = make_inputs(B, C, H, W, s, k=k, saturate=sat)
    out, grads, g = grads_of(lambda *a: ref_resample(*a, s), inputs)
    got = grads_of(lambda *a: adaptive_resample(*a, s, backend="triton"), _on(DEVICE, inputs), g.to(DEVICE))
    _assert_close(got[:2], (out, grads), atol=1e-10, what="triton fp64")


def test_triton_gradcheck():
    """torch.autograd.gradcheck (fast mode) of the hand-written backward, all four inputs."""
    inputs = _on(DEVICE, make_inputs(1, 2, 10, 14, 2, saturate=False))
    xs = [t.detach().requires_grad_(True) for t in inputs]
    assert torch.autograd.gradcheck(
        lambda *a: adaptive_resample(*a, 2, backend="triton"), xs, fast_mode=True, atol=1e-8
    )


def test_triton_float32_without_hr_grad():
    inputs = make_inputs(2, 3, 20, 36, 2, saturate=True)
    out, grads, g = grads_of(lambda *a: ref_resample(*a, 2), inputs, need_hr=False)
    got = grads_of(
        lambda *a: adaptive_resample(*a, 2, backend="triton"),
        _on(DEVICE, inputs, torch.float32),
        g.to(DEVICE, torch.float32),
        need_hr=False,
    )
    assert got[0].dtype == torch.float32 and got[1][0] is None
    _assert_close(got[:2], (out, grads), atol=2e-5, rtol=1e-5, what="triton fp32")


def test_triton_reads_bf16_kernels_beside_fp32_image():
    """The autocast case: float32 HR, bfloat16 kernels/offsets, read as they are (no fp32
    copies): float32 output, each gradient in its input's dtype, float32 accumulation."""
    hr, k, oh, ov = make_inputs(2, 3, 24, 20, 2, saturate=True)
    hr = hr.float()
    k, oh, ov = (t.to(torch.bfloat16) for t in (k, oh, ov))
    exact = [t.double() for t in (hr, k, oh, ov)]  # the values the kernel reads, in float64
    out, grads, g = grads_of(lambda *a: ref_resample(*a, 2), exact)
    inputs = [hr, k, oh, ov]
    got_out, got_grads, _ = grads_of(
        lambda *a: adaptive_resample(*a, 2, backend="triton"), _on(DEVICE, inputs), g.to(DEVICE).float()
    )
    assert got_out.dtype == torch.float32
    assert [x.dtype for x in got_grads] == [torch.float32] + [torch.bfloat16] * 3
    torch.testing.assert_close(got_out.cpu().double(), out, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got_grads[0].cpu().double(), grads[0], atol=2e-5, rtol=1e-5)
    for a, b in zip(got_grads[1:], grads[1:]):  # rounded once to bf16: 2⁻⁸ relative
        torch.testing.assert_close(a.cpu().double(), b, atol=1e-2 * float(b.abs().max()), rtol=1e-2)


def test_triton_int64_indexing_matches(monkeypatch):
    """The 64-bit offset path (taken when one item holds ≥ 2³¹ elements), forced on a small case."""
    inputs = _on(DEVICE, make_inputs(2, 3, 20, 28, 2, saturate=True))
    want = grads_of(lambda *a: adaptive_resample(*a, 2, backend="triton"), inputs)
    monkeypatch.setattr(tk, "needs_int64", lambda *a: True)
    got = grads_of(lambda *a: adaptive_resample(*a, 2, backend="triton"), inputs, want[2])
    torch.testing.assert_close(got[0], want[0], atol=1e-12, rtol=0)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@triton.jit
def _centres_probe(cx_ptr, cy_ptr, HW, w, wf, Wf, hf, Hf, ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    p, mask, cx, cy = tk._lr_pixels(HW, w, wf, Wf, hf, Hf, ACC, BLOCK_P)
    tl.store(cx_ptr + p, cx, mask=mask)
    tl.store(cy_ptr + p, cy, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("h", "w", "s"), [(7, 37, 3), (25, 49, 4), (16, 9, 2)])
def test_triton_lr_centres_are_bitwise_the_host_ones(h, w, s, dtype):
    """Centres built in the kernel with IEEE division equal :func:`lr_centers` bit for bit."""
    H, W = h * s + 1, w * s + 2  # odd remainders, as HR sides that are not multiples of s
    cx = torch.empty(h * w, dtype=dtype, device=DEVICE)
    cy = torch.empty_like(cx)
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    _centres_probe[(triton.cdiv(h * w, 128),)](
        cx, cy, h * w, w, float(w), float(W), float(h), float(H), ACC=acc, BLOCK_P=128
    )
    want_x = lr_centers(w, W, dtype, torch.device("cpu")).repeat(h)
    want_y = lr_centers(h, H, dtype, torch.device("cpu")).repeat_interleave(w)
    assert torch.equal(cx.cpu(), want_x) and torch.equal(cy.cpu(), want_y)


# ----------------------------------------------------------------------------- launcher logic


def test_autotune_key_is_bucketed_not_the_image_size():
    """Validation images of many sizes share a few tunings: the key is a power-of-two bucket."""
    assert tk._fwd_kernel.keys == ["SIZE_BUCKET", "C", "KK"]
    assert tk._bwd_kernel.keys == ["SIZE_BUCKET", "C", "KK"]
    assert tk.size_bucket(1) == tk.size_bucket(1024) == 1024
    assert tk.size_bucket(1025) == tk.size_bucket(2048) == 2048
    sizes = [16 * 48 * 48] + [(h // 4) * (w // 4) for h, w in ((512, 512), (480, 500), (500, 333))]
    assert len({tk.size_bucket(n) for n in sizes}) < len(sizes)


def test_int64_threshold():
    kk = 169
    hw = (2**31 - 1) // kk
    assert not tk.needs_int64(3, 100, 100, kk, hw)
    assert tk.needs_int64(3, 100, 100, kk, hw + 1)
    assert tk.needs_int64(3, 2**14, 2**15, kk, 64)  # the padded image itself: 2¹⁴·2¹⁵·4 = 2³¹


def test_configs_are_pruned_per_dtype():
    fp32 = tk._prune(tk._all_configs(), {}, ACC=tl.float32)
    fp64 = tk._prune(tk._all_configs(), {}, ACC=tl.float64)
    assert fp32 and fp64
    if not INTERPRETED:
        tiles = lambda cs: {(c.kwargs["BLOCK_P"], c.kwargs["BLOCK_T"], c.num_warps) for c in cs}
        assert tiles(fp32) == set(tk.TILES) and tiles(fp64) == set(tk.TILES_FP64)


def test_channels_last_padding_layout():
    hr = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    xp = tk.pad_channels_last(hr, 2)
    assert xp.shape == (2, 9, 11, 4) and xp.is_contiguous()
    want = torch.nn.functional.pad(hr, (2, 2, 2, 2), mode="reflect").permute(0, 2, 3, 1)
    assert torch.equal(xp[..., :3], want) and not xp[..., 3].any()


def test_batch_beyond_the_grid_limit_is_refused():
    """CUDA's grid axis 1 holds at most 65535 batch items: a clear refusal, before any work."""
    n = tk.MAX_BATCH + 1
    hr = torch.zeros(1, 1, 1, 1, device=DEVICE).expand(n, 3, 8, 8)
    k = torch.zeros(1, 1, 1, 1, device=DEVICE).expand(n, 49, 4, 4)
    with pytest.raises(ValueError, match="at most 65535 images"):
        adaptive_resample(hr, k, k, k, 2, backend="triton")


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="triton"):
        adaptive_resample(*make_inputs(1, 1, 8, 8, 2), 2, backend="triton")


# ----------------------------------------------------------------------------- compiled (GPU)

gpu = pytest.mark.skipif(not COMPILED, reason="needs a CUDA device and compiled Triton")
GPU_CASES = [(4, 3, 96, 64, 2), (3, 3, 48, 40, 4), (2, 5, 33, 27, 3), (1, 1, 41, 23, 4)]
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", GPU_CASES)
def test_triton_gpu_matches_reference(case, dtype):
    """Compiled, through the autotuner: forward and all four gradients per dtype."""
    B, C, H, W, s = case
    inputs = make_inputs(B, C, H, W, s, saturate=True)
    exact = [t.to(dtype).double() for t in inputs]  # what the kernel sees
    out, grads, g = grads_of(lambda *a: ref_resample(*a, s), exact)
    got = grads_of(lambda *a: adaptive_resample(*a, s), _on("cuda", inputs, dtype), g.to("cuda", dtype))
    assert got[0].dtype == dtype and all(x.dtype == dtype for x in got[1])
    _assert_close(got[:2], (out, grads), atol=TOL[dtype], rtol=TOL[dtype], what=str(dtype))


@pytest.mark.gpu
@gpu
def test_triton_gpu_autotuning_resets_the_image_gradient():
    """The first call of a new key benchmarks every config; ``reset_to_zero`` must clear the
    atomic image-gradient buffer between trials, or dHR would be a multiple of the truth."""
    tk._bwd_kernel.cache.clear()
    inputs = make_inputs(2, 3, 52, 44, 4, saturate=True)
    out, grads, g = grads_of(lambda *a: ref_resample(*a, 4), inputs)
    got = grads_of(lambda *a: adaptive_resample(*a, 4), _on("cuda", inputs, torch.float32), g.to("cuda").float())
    _assert_close(got[:2], (out, grads), atol=1e-4, rtol=1e-4, what="first (tuning) call")


@pytest.mark.gpu
@gpu
def test_triton_gpu_bf16_autocast_car():
    """A CAR kernel net under bf16 autocast feeds the resampler bf16 kernels/offsets beside a
    float32 image; forward and gradients match the float64 reference on those same values."""
    from taid_car.models.car import CARDownscaler

    model = CARDownscaler(4, preset="small").cuda()
    hr = torch.rand(2, 3, 64, 56, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        kernels, oh, ov = model.kernel_net(hr)
    kernels, oh, ov = (t.detach() for t in (kernels, oh, ov))
    exact = [hr.double().cpu()] + [t.double().cpu() for t in (kernels, oh, ov)]
    out, grads, g = grads_of(lambda *a: ref_resample(*a, 4), exact, need_hr=False)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = grads_of(
            lambda *a: adaptive_resample(*a, 4), [hr, kernels, oh, ov], g.cuda().float(), need_hr=False
        )
    assert got[0].dtype == torch.promote_types(hr.dtype, kernels.dtype)
    torch.testing.assert_close(got[0].cpu().double(), out, atol=1e-4, rtol=1e-4)
    for a, b in zip(got[1][1:], grads[1:]):
        torch.testing.assert_close(a.cpu().double(), b, atol=2e-2 * float(b.abs().max()), rtol=2e-2)


@pytest.mark.gpu
@gpu
def test_triton_gpu_large_image():
    """LR side > 1024 (HR 4100×2052 at ×4): compiled Triton equals the numba CPU kernels."""
    inputs = [t.float() for t in make_inputs(1, 3, 4100, 2052, 4, dtype=torch.float32)]
    want = grads_of(lambda *a: adaptive_resample(*a, 4, backend="cpu"), inputs, need_hr=False)
    got = grads_of(lambda *a: adaptive_resample(*a, 4), _on("cuda", inputs), want[2].cuda(), need_hr=False)
    torch.testing.assert_close(got[0].cpu(), want[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(got[1][1:], want[1][1:]):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4 * float(b.abs().max()), rtol=1e-4)


@pytest.mark.gpu
@gpu
def test_triton_gpu_batch_past_2_31_kernel_elements():
    """B·k²·h·w > 2³¹ (16 × 169 × 1024 × 776 ≈ 2.15e9): batch offsets are int64. The last item
    equals the same item resampled alone (whose offsets are all small)."""
    B, s, H, W = 16, 4, 4096, 3104
    kk, h, w = 169, H // s, W // s
    assert B * kk * h * w > 2**31
    need = (3 * B * kk * h * w * 2 + B * 3 * H * W * 4 * 3) * 1.2  # bf16 taps, fp32 images
    if torch.cuda.mem_get_info()[0] < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    hr = torch.rand(B, 3, H, W, device="cuda", generator=g)
    kernels = torch.rand(B, kk, h, w, device="cuda", generator=g, dtype=torch.bfloat16)
    oh = torch.rand(B, kk, h, w, device="cuda", generator=g, dtype=torch.bfloat16) * 2 - 1
    ov = torch.rand(B, kk, h, w, device="cuda", generator=g, dtype=torch.bfloat16) * 2 - 1
    with torch.no_grad():
        out = adaptive_resample(hr, kernels, oh, ov, s)
        last = adaptive_resample(hr[-1:], kernels[-1:], oh[-1:], ov[-1:], s)
    torch.testing.assert_close(out[-1:], last, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(out).all()
