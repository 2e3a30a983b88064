"""Per-pixel adaptive resampler of CAR (Content Adaptive Resampler), GPU (Triton) and CPU.

``adaptive_resample(hr, kernels, offsets_h, offsets_v, scale)`` → LR (B,C,H/s,W/s) and its
``nn.Module`` form ``AdaptiveResampler(scale)``. See :mod:`.resampler` for backends.
"""

from .resampler import BACKENDS, ENV_BACKEND, AdaptiveResampler, adaptive_resample

__all__ = ["BACKENDS", "ENV_BACKEND", "AdaptiveResampler", "adaptive_resample"]
