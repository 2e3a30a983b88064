"""The pair contract: one build_pair for every entry point, tied upscalers, each weight once."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_run
from taid_car.errors import ConfigError
from taid_car.models.pair import build_pair, pair_parameter_counts
from taid_car.models.rescaler import Rescaler
from taid_car.run import build_rescaler
from taid_car.training.baseline import baseline_config

TIED = {"name": "tied", "tied": True, "init_from": None}
TOY = {"name": "toy", "downscaler": {"_target_": "helpers.ToyInvertible", "scale": 2}}


def test_build_pair_builds_the_downscaler_first_as_the_seed_always_did(tmp_path):
    cfg = compose_run(["model=taid", "scale=2", "upscaler=edsr_tiny"], tmp_path)
    torch.manual_seed(3)
    down, up = build_pair(cfg.model, cfg.upscaler)
    torch.manual_seed(3)
    from hydra.utils import instantiate

    down2, up2 = instantiate(cfg.model.downscaler), instantiate(cfg.upscaler.net)
    for a, b in ((down, down2), (up, up2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_tied_upscaler_is_the_downscalers_inverse_and_each_weight_is_optimised_and_counted_once():
    down, up = build_pair(TOY, TIED)
    assert up.down is down
    counts = pair_parameter_counts(down, up)
    assert counts == {"downscaler": 2, "upscaler": 0, "shared": 2}
    model = Rescaler(down, up, 2, optimizer=partial(torch.optim.SGD, lr=0.1))
    optimizer = model.configure_optimizers()  # torch raises if a parameter were in two groups
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
    hr = torch.rand(1, 3, 8, 6)
    model.compute_losses(hr)["loss"].backward()
    before = down.gain.detach().clone()
    optimizer.step()
    assert not torch.equal(down.gain, before)  # trained once, through both halves


def test_tying_needs_an_inverse(tmp_path):
    cfg = compose_run(["model=taid", "scale=2"], tmp_path)
    with pytest.raises(ConfigError, match="TAIDDownscaler has no inverse"):
        build_pair(cfg.model, TIED)
    with pytest.raises(ConfigError, match="neither a `net`"):
        build_pair(cfg.model, {"name": "nothing"})


def test_a_tied_model_names_its_baselines_upscaler(tmp_path):
    cfg = compose_run(["model=taid", "scale=2"], tmp_path)
    OmegaConf.set_struct(cfg, False)
    cfg.upscaler = TIED
    with pytest.raises(ConfigError, match="set model.baseline_upscaler"):
        baseline_config(cfg)
    cfg.model.baseline_upscaler = "edsr_tiny"
    base = baseline_config(cfg)
    assert base.model.name == "bicubic" and base.upscaler.name == "edsr_tiny" and not base.upscaler.get("tied")
    cfg.model.baseline_upscaler = "nonesuch"
    with pytest.raises(ConfigError, match="no conf/upscaler/nonesuch.yaml"):
        baseline_config(cfg)
    with pytest.raises(ConfigError, match="tied upscaler"):
        cfg.upscaler.init_from = "x.ckpt"
        build_rescaler(cfg)
