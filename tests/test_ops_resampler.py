"""The CAR resampler's CPU and pure-torch paths against the float64 reference; API and errors."""

from __future__ import annotations

import pytest
import torch

from taid_car.ops import ENV_BACKEND, AdaptiveResampler, adaptive_resample
from test_ops_reference import assert_all_close, grads_of, make_inputs, ref_resample

# (B, C, H, W, s, k): odd/non-square sizes, odd channel counts, batch 1 (numba row bands) and >1,
# H or W not a multiple of s (the mapping then uses the true ratio W/w), a non-default k.
CASES = [
    (2, 3, 20, 36, 2, None),
    (2, 1, 40, 24, 4, None),
    (3, 5, 21, 27, 3, None),
    (1, 2, 22, 17, 3, None),
    (2, 3, 14, 18, 2, 4),
]
IDS = ["x2-20x36", "x4-40x24-c1", "x3-21x27-c5", "x3-22x17-b1", "x2-k4"]


def _ref(inputs, s, grad_out=None):
    out, grads, g = grads_of(lambda *a: ref_resample(*a, s), inputs, grad_out)
    return (out, grads), g


@pytest.mark.parametrize("saturate", [False, True], ids=["random", "saturated"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_matches_reference_float64(backend, case, saturate):
    B, C, H, W, s, k = case
    inputs = make_inputs(B, C, H, W, s, k=k, saturate=saturate)
    want, g = _ref(inputs, s)
    out, grads, _ = grads_of(lambda *a: adaptive_resample(*a, s, backend=backend), inputs, g)
    assert out.shape == (B, C, H // s, W // s)
    assert_all_close((out, grads), want, atol=1e-10, what=backend)


@pytest.mark.parametrize("need_hr", [False, True])
def test_cpu_float32_close_to_reference(need_hr):
    inputs = make_inputs(2, 3, 40, 24, 4, saturate=True)
    want, g = _ref(inputs, 4)
    inputs32 = [t.float() for t in inputs]
    out, grads, _ = grads_of(
        lambda *a: adaptive_resample(*a, 4, backend="cpu"), inputs32, g.float(), need_hr=need_hr
    )
    assert out.dtype == torch.float32 and all(x is None or x.dtype == torch.float32 for x in grads)
    if not need_hr:
        want = (want[0], [None] + want[1][1:])
    assert_all_close((out, grads), want, atol=2e-5, rtol=1e-5, what="cpu fp32")


def test_cpu_gradcheck():
    """Full numerical Jacobian on a tiny case (each column is one forward call)."""
    inputs = [t.requires_grad_() for t in make_inputs(1, 2, 5, 6, 2, k=3, seed=3)]
    fn = lambda *a: adaptive_resample(*a, 2, backend="cpu")
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("case", [(2, 3, 12, 9, 3, 4), (1, 2, 16, 12, 4, None)])
def test_cpu_gradcheck_fast_mode(case):
    B, C, H, W, s, k = case
    inputs = [t.requires_grad_() for t in make_inputs(B, C, H, W, s, k=k, seed=4)]
    fn = lambda *a: adaptive_resample(*a, s, backend="cpu")
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_non_contiguous_inputs():
    hr, kernels, oh, ov = make_inputs(2, 3, 20, 36, 2)
    want = ref_resample(hr, kernels, oh, ov, 2)
    hr_nc = hr.transpose(2, 3).contiguous().transpose(2, 3)
    k_nc = kernels.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    oh_nc = torch.stack([oh, oh], -1)[..., 0]
    assert not (hr_nc.is_contiguous() or k_nc.is_contiguous() or oh_nc.is_contiguous())
    out = adaptive_resample(hr_nc, k_nc, oh_nc, ov, 2, backend="cpu")
    torch.testing.assert_close(out, want, atol=1e-10, rtol=0)


def test_half_inputs_on_cpu_are_computed_in_float32():
    hr, kernels, oh, ov = make_inputs(1, 3, 16, 16, 2, dtype=torch.float32)
    want = adaptive_resample(hr, kernels, oh, ov, 2)
    for dt in (torch.float16, torch.bfloat16):
        args = [t.to(dt).requires_grad_() for t in (hr, kernels, oh, ov)]
        out = adaptive_resample(*args, 2)
        assert out.dtype == dt
        out.float().sum().backward()
        assert all(a.grad is not None and a.grad.dtype == dt for a in args)
        torch.testing.assert_close(out.float(), want, atol=0.05, rtol=0.05)


def test_mixed_dtypes_promote():
    hr, kernels, oh, ov = make_inputs(1, 3, 16, 16, 2)
    out = adaptive_resample(hr.float(), kernels, oh, ov, 2)
    assert out.dtype == torch.float64


def test_module_matches_function_and_reprs():
    inputs = make_inputs(2, 3, 20, 36, 2)
    mod = AdaptiveResampler(2, backend="cpu")
    torch.testing.assert_close(mod(*inputs), adaptive_resample(*inputs, 2), atol=1e-12, rtol=0)
    assert "scale=2" in repr(mod) and "backend=cpu" in repr(mod)
    with pytest.raises(ValueError, match="scale"):
        AdaptiveResampler(0)
    with pytest.raises(ValueError, match="backend"):
        AdaptiveResampler(2, backend="cuda")


def test_env_var_forces_torch_reference(monkeypatch):
    import taid_car.ops.resampler as mod

    calls = []
    real = mod.adaptive_resample_torch
    monkeypatch.setattr(mod, "adaptive_resample_torch", lambda *a: calls.append(1) or real(*a))
    inputs = make_inputs(1, 1, 8, 8, 2)
    adaptive_resample(*inputs, 2)
    assert calls == []
    monkeypatch.setenv(ENV_BACKEND, "torch")
    adaptive_resample(*inputs, 2)
    assert calls == [1]
    adaptive_resample(*inputs, 2, backend="cpu")  # the argument wins over the variable
    assert calls == [1]
    monkeypatch.setenv(ENV_BACKEND, "nonsense")
    with pytest.raises(ValueError, match="backend"):
        adaptive_resample(*inputs, 2)


def test_backend_device_mismatch_errors():
    inputs = make_inputs(1, 1, 8, 8, 2)
    with pytest.raises(ValueError, match="backend"):
        adaptive_resample(*inputs, 2, backend="gpu")
    with pytest.raises(ValueError, match="'cpu' needs CPU"):
        adaptive_resample(*[t.to("meta") for t in inputs], 2, backend="cpu")


BAD = [
    (
        "kernels-not-square",
        lambda hr, k, oh, ov: (hr, k[:, :48], oh[:, :48], ov[:, :48], 2),
        r"kernels channel count must be a square.*\(2, 48, 10, 18\)",
    ),
    (
        "lr-size",
        lambda hr, k, oh, ov: (hr[..., :34], k, oh, ov, 2),
        r"spatial size \(10, 18\) must be hr size \(20,34\) // scale 2 = \(10, 17\)",
    ),
    ("wrong-scale", lambda hr, k, oh, ov: (hr, k, oh, ov, 4), r"// scale 4"),
    (
        "batch",
        lambda hr, k, oh, ov: (hr[:1], k, oh, ov, 2),
        r"batch mismatch: hr shape \(1, 3, 20, 36\) vs kernels shape \(2, 49, 10, 18\)",
    ),
    (
        "offsets-shape",
        lambda hr, k, oh, ov: (hr, k, oh[:, :, :5], ov, 2),
        r"offsets_h shape \(2, 49, 5, 18\) must equal kernels shape \(2, 49, 10, 18\)",
    ),
    (
        "int-hr",
        lambda hr, k, oh, ov: ((hr * 255).to(torch.uint8), k, oh, ov, 2),
        r"hr must have a floating dtype, got torch.uint8",
    ),
    (
        "int-offsets",
        lambda hr, k, oh, ov: (hr, k, oh, ov.long(), 2),
        r"offsets_v must have a floating dtype",
    ),
    (
        "ndim",
        lambda hr, k, oh, ov: (hr[0], k, oh, ov, 2),
        r"hr must be 4-D \(B,C,H,W\), got shape \(3, 20, 36\)",
    ),
    ("ndim-kernels", lambda hr, k, oh, ov: (hr, k[0], oh, ov, 2), r"kernels must be 4-D"),
    (
        "devices",
        lambda hr, k, oh, ov: (hr, k.to("meta"), oh, ov, 2),
        r"one device.*'hr': device\(type='cpu'\).*'kernels': device\(type='meta'\)",
    ),
    ("scale-type", lambda hr, k, oh, ov: (hr, k, oh, ov, 2.0), r"scale must be a positive int"),
    ("not-tensor", lambda hr, k, oh, ov: (hr.numpy(), k, oh, ov, 2), r"hr must be a torch.Tensor"),
]


@pytest.mark.parametrize("mutate,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_raises_value_error(mutate, match):
    args = mutate(*make_inputs(2, 3, 20, 36, 2))
    with pytest.raises(ValueError, match=match):
        adaptive_resample(*args)


def test_padding_larger_than_image_errors():
    hr, kernels, oh, ov = make_inputs(1, 1, 8, 8, 4)  # k = 13, p = 6 < 8: fine
    adaptive_resample(hr, kernels, oh, ov, 4)
    hr, kernels, oh, ov = make_inputs(1, 1, 8, 24, 8)  # k = 25, p = 12 ≥ 8
    with pytest.raises(ValueError, match=r"reflection padding k//2 = 12 .*\(1, 1, 8, 24\)"):
        adaptive_resample(hr, kernels, oh, ov, 8)


def test_nan_offsets_do_not_crash():
    hr, kernels, oh, ov = make_inputs(1, 2, 12, 12, 2)
    oh[0, 3, 1, 1] = float("nan")
    ov[0, 5, 2, 2] = float("inf")
    out = adaptive_resample(hr, kernels, oh, ov, 2, backend="cpu")
    assert out[0, :, 1, 1].isnan().all() and out.isfinite().sum() > 0


def test_cpu_backward_reuses_forward_padding_and_repeats():
    """The CPU backward takes the forward's padded copy; a second backward through the same
    graph (retain_graph) rebuilds it and must give the same, correct gradients."""
    inputs = make_inputs(2, 3, 20, 36, 2, saturate=True)
    want, g = _ref(inputs, 2)
    xs = [t.detach().clone().requires_grad_() for t in inputs]
    out = adaptive_resample(*xs, 2, backend="cpu")
    first = torch.autograd.grad(out, xs, g, retain_graph=True)
    second = torch.autograd.grad(out, xs, g)
    assert_all_close((out.detach(), list(first)), want, atol=1e-10, what="first backward")
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


THREADS_PROBE = """
import torch
from taid_car.ops import adaptive_resample
before = torch.get_num_threads()
hr = torch.rand(2, 3, 64, 64, requires_grad=True)
kernels = torch.full((2, 25, 32, 32), 1 / 25)
offsets = torch.zeros(2, 25, 32, 32)
adaptive_resample(hr, kernels, offsets, offsets, 2, backend="cpu").sum().backward()
print(before, torch.get_num_threads())
"""


def test_cpu_backend_leaves_torch_thread_count_alone():
    """numba's OpenMP pool shares the runtime with torch: a user's OMP_NUM_THREADS=1 (one job per
    core) must survive the first resampler call instead of becoming numba's all-core default."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NUMBA_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.split() == ["1", "1"]
