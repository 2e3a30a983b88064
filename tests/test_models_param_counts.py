"""Parameter counts (trainable; the fixed mean shifts are buffers). Run with -s to print them.

The kernel-net and EDSR-paper counts equal those of the authors' own modules (sunwj/CAR
``modules.DSN`` and ``EDSR.edsr.EDSR(32, 256)``, counting only their trainable parameters).
The papers quote CAR+EDSR as 51.1M (x2) / 52.8M (x4); these nets give 51.38M / 52.99M.
"""

from __future__ import annotations

import pytest

from taid_car.models.car import KernelGenerationNet
from taid_car.models.edsr import build_edsr

KGN = {2: 10_645_651, 4: 9_896_443}
EDSR = {
    ("tiny", 2): 121_987,
    ("tiny", 4): 158_979,
    ("baseline", 2): 1_369_859,
    ("baseline", 4): 1_517_571,
    ("paper", 2): 40_729_603,
    ("paper", 4): 43_089_923,
}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("scale", [2, 4])
def test_parameter_counts(scale):
    kgn = count(KernelGenerationNet(scale))
    print(f"\nx{scale}: CAR kernel net (paper widths) {kgn:,}")
    assert kgn == KGN[scale]
    for preset in ("tiny", "baseline", "paper"):
        n = count(build_edsr(preset, scale))
        print(f"x{scale}: EDSR {preset} {n:,}; CAR + EDSR {preset} {kgn + n:,}")
        assert n == EDSR[(preset, scale)]
