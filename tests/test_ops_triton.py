"""Triton kernels of the CAR resampler against the float64 reference.

On this CPU machine they run in Triton's interpreter (``TRITON_INTERPRET=1``, set by
conftest.py) on small CPU tensors; ``gpu``-marked tests launch them for real on CUDA.
"""

from __future__ import annotations

import os

import pytest
import torch

from taid_car.ops import adaptive_resample
from test_ops_reference import assert_all_close, grads_of, make_inputs, ref_resample

pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
needs_interpreter = pytest.mark.skipif(not INTERPRETED, reason="needs TRITON_INTERPRET=1")

# Small shapes: the interpreter runs one program per 128 LR pixels, all taps at once.
CASES = [
    (2, 3, 20, 36, 2, None, True),  # x2, odd LR width (18), saturated offsets
    (2, 1, 40, 24, 4, None, True),  # x4, k = 13, one channel
    (1, 5, 21, 15, 3, None, False),  # x3, five channels: two channel blocks of 4
    (1, 2, 18, 20, 2, 17, True),  # k² = 289 > 256: two tap blocks
]
IDS = ["x2-20x36", "x4-40x24-c1", "x3-21x15-c5", "x2-k17"]


@needs_interpreter
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_triton_interpreted_matches_reference(case):
    B, C, H, W, s, k, sat = case
    inputs = make_inputs(B, C, H, W, s, k=k, saturate=sat)
    out, grads, g = grads_of(lambda *a: ref_resample(*a, s), inputs)
    got = grads_of(lambda *a: adaptive_resample(*a, s, backend="triton"), inputs, g)
    assert_all_close(got[:2], (out, grads), atol=1e-10, what="triton fp64")


@needs_interpreter
def test_triton_interpreted_float32_without_hr_grad():
    inputs = make_inputs(2, 3, 20, 36, 2, saturate=True)
    out, grads, g = grads_of(lambda *a: ref_resample(*a, 2), inputs, need_hr=False)
    got = grads_of(
        lambda *a: adaptive_resample(*a, 2, backend="triton"),
        [t.float() for t in inputs],
        g.float(),
        need_hr=False,
    )
    assert got[0].dtype == torch.float32 and got[1][0] is None
    assert_all_close(got[:2], (out, grads), atol=2e-5, rtol=1e-5, what="triton fp32")


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="triton"):
        adaptive_resample(*make_inputs(1, 1, 8, 8, 2), 2, backend="triton")


# ----------------------------------------------------------------------------- real GPU


GPU_CASES = [(4, 3, 96, 64, 2), (3, 3, 48, 40, 4), (2, 5, 33, 27, 3), (1, 1, 40, 24, 4)]
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", GPU_CASES)
def test_triton_gpu_matches_reference(case, dtype):
    B, C, H, W, s = case
    inputs = make_inputs(B, C, H, W, s, saturate=True)
    out, grads, g = grads_of(lambda *a: ref_resample(*a, s), inputs)
    cuda = [t.to("cuda", dtype) for t in inputs]
    got_out, got_grads, _ = grads_of(lambda *a: adaptive_resample(*a, s), cuda, g.to("cuda", dtype))
    assert got_out.dtype == dtype and all(x.dtype == dtype for x in got_grads)
    tol = TOL[dtype]
    scale = [1.0] + [float(x.abs().max()) for x in grads]
    torch.testing.assert_close(got_out.double().cpu(), out, atol=tol, rtol=tol)
    for name, a, b, m in zip(
        ("hr", "kernels", "offsets_h", "offsets_v"), got_grads, grads, scale[1:]
    ):
        torch.testing.assert_close(a.double().cpu(), b, atol=tol * m, rtol=tol, msg=name)


@pytest.mark.gpu
def test_triton_gpu_non_contiguous_and_stream():
    inputs = make_inputs(2, 3, 40, 24, 4, dtype=torch.float32)
    want = adaptive_resample(*inputs, 4, backend="cpu")
    hr, k, oh, ov = [t.cuda() for t in inputs]
    k_nc = k.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = adaptive_resample(hr.transpose(2, 3).contiguous().transpose(2, 3), k_nc, oh, ov, 4)
    stream.synchronize()
    torch.testing.assert_close(out.cpu(), want, atol=1e-5, rtol=1e-5)
