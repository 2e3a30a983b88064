"""Loading the CAR authors' checkpoints: DataParallel key layout, strictness, clear errors."""

from __future__ import annotations

import pytest
import torch

from taid_car.models.car import CAR_PRESETS, CARDownscaler, KernelGenerationNet
from taid_car.models.checkpoints import (
    CheckpointError,
    load_authors_checkpoint,
    strip_prefix,
    to_authors_state_dict,
)
from taid_car.models.edsr import build_edsr

SMALL = CAR_PRESETS["small"]


def _save_like_authors(module, path):
    """What the authors did: torch.save(nn.DataParallel(net).state_dict(), path)."""
    state = torch.nn.DataParallel(module).state_dict()
    assert all(k.startswith("module.") for k in state)
    torch.save(state, path)
    return path


def test_kgn_round_trip(tmp_path):
    src = KernelGenerationNet(4, **SMALL)
    path = _save_like_authors(src, tmp_path / "kgn.pth")
    car = CARDownscaler(4, "small")
    assert load_authors_checkpoint(car.kernel_net, path) is car.kernel_net
    hr = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        for a, b in zip(src(hr), car.kernel_net(hr)):
            assert torch.equal(a, b)


def test_usn_round_trip_from_mapping():
    src = build_edsr("tiny", 2)
    dst = build_edsr("tiny", 2)
    load_authors_checkpoint(dst, to_authors_state_dict(src))
    lr = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(src(lr), dst(lr))
    load_authors_checkpoint(dst, src.state_dict())  # an unprefixed dict loads too


def test_wrong_shape_names_file_and_key(tmp_path):
    path = _save_like_authors(KernelGenerationNet(4, **SMALL), tmp_path / "kgn_x4.pth")
    net = KernelGenerationNet(2, **SMALL)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_authors_checkpoint(net, path)
    msg = str(err.value)
    assert "kgn_x4.pth" in msg and "KernelGenerationNet" in msg and "shape mismatches" in msg
    assert "kernels_weight.4.weight: model (49, 32, 3, 3) vs checkpoint (169, 32, 3, 3)" in msg
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing loaded


def test_missing_and_unexpected_keys(tmp_path):
    state = to_authors_state_dict(build_edsr("tiny", 2, n_blocks=2))
    del state["module.tail.1.weight"]
    state["module.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "usn.pth")
    with pytest.raises(CheckpointError, match=r"usn\.pth") as err:
        load_authors_checkpoint(build_edsr("tiny", 2, n_blocks=2), tmp_path / "usn.pth")
    assert "missing keys (1): tail.1.weight" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)


def test_rgb_range_mismatch_is_refused():
    state = to_authors_state_dict(build_edsr("tiny", 2, rgb_range=255))
    with pytest.raises(CheckpointError, match="rgb_range=255"):
        load_authors_checkpoint(build_edsr("tiny", 2), state)
    load_authors_checkpoint(build_edsr("tiny", 2, rgb_range=255), state)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_authors_checkpoint(build_edsr("tiny", 2), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_authors_checkpoint(build_edsr("tiny", 2), bad)


def test_strip_prefix():
    assert strip_prefix({"module.a": 1, "b": 2}) == {"a": 1, "b": 2}
