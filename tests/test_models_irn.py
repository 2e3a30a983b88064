"""IRN's invertible network against a transcription of the authors' code (tests/irn_authors.py):
the same outputs forward and inverse on random weights (float32, <= 1e-5), their key layout
loading strictly, exact invertibility, and the published parameter counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

import irn_authors
from taid_car.errors import ConfigError
from taid_car.models.checkpoints import CheckpointError, load_authors_checkpoint
from taid_car.models.irn import IRN_PRESETS, InvRescaleNet, stages_of

CASES = [  # (stages, blocks per stage, gc, HR shape): odd multiples of the scale, non-square
    (1, [2], 8, (2, 3, 14, 22)),
    (2, [2, 3], 8, (1, 3, 20, 36)),
    (3, [1, 1, 2], 4, (1, 3, 24, 40)),
]


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every convolution random (the authors' init zeroes the last one, which hides the coupling)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if name.endswith("weight") else 0.02))
    return module


@pytest.mark.parametrize(("stages", "blocks", "gc", "shape"), CASES)
def test_forward_and_inverse_match_the_authors_network(stages, blocks, gc, shape, tmp_path):
    theirs = _randomised(irn_authors.InvRescaleNet(3, 3, irn_authors.subnet(gc), blocks, stages), seed=stages)
    path = tmp_path / "irn_authors.pth"
    torch.save({f"module.{k}": v for k, v in theirs.state_dict().items()}, path)  # as DataParallel saves
    ours = load_authors_checkpoint(InvRescaleNet(stages, blocks, gc), path)  # strict: every key, every shape
    hr = torch.rand(shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected, got = theirs(hr), ours(hr)
        s = 2**stages
        assert got.shape == (shape[0], 3 * s * s, shape[2] // s, shape[3] // s)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        y = torch.cat([expected[:, :3], torch.randn(expected[:, 3:].shape, generator=torch.Generator().manual_seed(1))], 1)
        torch.testing.assert_close(ours(y, rev=True), theirs(y, rev=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(got, rev=True), hr, atol=1e-5, rtol=0)  # exactly invertible


def test_a_checkpoint_of_another_size_is_refused_with_what_differs(tmp_path):
    theirs = irn_authors.InvRescaleNet(3, 3, irn_authors.subnet(8), [2], 1)
    path = tmp_path / "x2.pth"
    torch.save(theirs.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"missing keys.*operations\.3"):
        load_authors_checkpoint(InvRescaleNet(1, [3], 8), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_authors_checkpoint(InvRescaleNet(1, [2], 16), path)


def test_paper_preset_has_the_published_parameter_counts():
    """The paper's IRN has 1.66M (x2) and 4.35M (x4) parameters; x8 (3 stages) gives 11.1M."""
    paper = IRN_PRESETS["paper"]
    counts = {2**st: sum(p.numel() for p in InvRescaleNet(st, paper["blocks"], paper["gc"]).parameters())
              for st in (1, 2, 3)}
    assert counts == {2: 1_667_952, 4: 4_355_136, 8: 11_119_248}
    assert all(not b.requires_grad for b in InvRescaleNet(2).buffers())  # the Haar filters are fixed
    assert [stages_of(s) for s in (2, 4, 8)] == [1, 2, 3]
    with pytest.raises(ValueError, match="powers of two"):
        stages_of(3)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_the_baseline_upscaler_has_irn_tinys_size(scale, tmp_path):
    """model=irn's fair baseline is bicubic + an EDSR of IRN tiny's parameter count (within 2 %)."""
    from helpers import compose_run
    from taid_car.models.pair import build_pair
    from taid_car.training.baseline import baseline_upscaler

    cfg = compose_run(["model=irn", f"scale={scale}"], tmp_path)
    irn, _ = build_pair(cfg.model, cfg.upscaler)
    upscaler_cfg = baseline_upscaler(cfg)
    with open_dict(cfg):
        cfg.upscaler = upscaler_cfg  # resolved against the run's scale, as the baseline run does
    _, edsr = build_pair(cfg.model, cfg.upscaler)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert abs(n(edsr) / n(irn) - 1) < 0.02, (n(edsr), n(irn))


def test_irn_runs_as_a_tied_pair_through_the_suite(tmp_path):
    """model=irn: the upscaler is the downscaler's inverse (one set of weights, optimised and
    counted once), the losses are the authors' on the mean-L1 scale, evaluation draws the same z."""
    import torch.nn.functional as F

    from helpers import compose_run
    from taid_car.models.irn import IRNDownscaler
    from taid_car.models.pair import pair_parameter_counts
    from taid_car.ops.imresize import bicubic_downscale
    from taid_car.run import build_rescaler

    cfg = compose_run(["model=irn", "scale=2", "data.lr_patch_size=8"], tmp_path)
    assert cfg.upscaler.tied and cfg.model.baseline_upscaler == "size_matched"
    assert cfg.model.grad_clip_norm == pytest.approx(10 / (3 * 16**2))  # the authors' 10, per HR value
    model = build_rescaler(cfg)
    assert model.upscaler.downscaler is model.downscaler
    counts = pair_parameter_counts(model.downscaler, model.upscaler)
    assert counts["upscaler"] == 0 and counts["shared"] == counts["downscaler"] > 0
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    # the authors' Quantization: the clamp passes gradients too, and no out-of-range penalty
    x = torch.tensor([-0.3, 0.5, 1.4], requires_grad=True)
    model.quantizer(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0] and model.loss_weights["out_of_range"] == 0

    torch.manual_seed(0)
    down = _randomised(IRNDownscaler(2, blocks=1, gc=4), seed=3)
    hr = torch.rand(2, 3, 12, 18)
    lr = down(hr)
    terms = down.regularizers(hr, lr)
    out = down.net(hr)
    authors_fit = torch.mean(torch.sum((out[:, :3] - bicubic_downscale(hr, 2)) ** 2, (1, 2, 3)))
    authors_ce = torch.sum(out[:, 3:].reshape(2, -1) ** 2) / 2
    torch.testing.assert_close(terms["guidance"] * 3 * 12 * 18, authors_fit)
    torch.testing.assert_close(terms["z_distribution"] * 3 * 12 * 18, authors_ce)
    assert F.l1_loss(hr, hr) == 0  # (the Rescaler's l1 is the mean over the same 3·H·W values)
    up = down.inverse().eval()
    with torch.no_grad():
        assert torch.equal(up(lr), up(lr))  # z is drawn alike at every evaluation
        assert up(lr).shape == hr.shape
        up.gaussian_scale = 0.0  # the authors' gaussian_scale: z = 0
        zero = torch.zeros(2, 9, 6, 9)
        torch.testing.assert_close(up(lr), down.net(torch.cat([lr, zero], 1), rev=True)[:, :3])
        up.train()  # training draws its z with the same scale: 0 trains the inverse on z = 0
        torch.testing.assert_close(up(lr), down.net(torch.cat([lr, zero], 1), rev=True)[:, :3])
    with pytest.raises(ConfigError, match="gaussian_scale"):
        IRNDownscaler(2, gaussian_scale=-1)


@pytest.mark.parametrize(("preset", "scale"), [("irn_paper", 4), ("irn_paper_x2", 2)])
def test_irn_paper_preset_is_the_authors_recipe(preset, scale, tmp_path):
    """train_IRN_x{2,4}.yml: HR patches 144, batch 16, Adam 2e-4 (weight decay 1e-5) halved at
    100k..400k of 500k steps, clip 10, weights scale^2 (4 / 16) / 1 / 1, growth 32, float32."""
    from helpers import compose_run

    cfg = compose_run([f"experiment={preset}"], tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.scale == scale and cfg.data.lr_patch_size * scale == 144 and cfg.data.batch_size == 16
    assert IRN_PRESETS[cfg.model.downscaler.preset] == {"blocks": 8, "gc": 32}
    hr_values = 3 * 144**2  # the suite's IRN loss is the authors' per-image sum / 3·H·W: so are eps and decay
    assert cfg.optimizer.lr == 2e-4
    assert (cfg.optimizer.eps * hr_values, cfg.optimizer.weight_decay * hr_values) == pytest.approx((1e-8, 1e-5))
    assert list(cfg.scheduler.milestones) == [100_000, 200_000, 300_000, 400_000] and cfg.scheduler.gamma == 0.5
    assert cfg.trainer.max_steps == 500_000 and cfg.trainer.precision == "32-true"
    assert cfg.model.grad_clip_norm * 3 * 144**2 == pytest.approx(10)
    weights = cfg.model.loss_weights
    assert (weights.l1, weights.guidance, weights.z_distribution) == (1, scale**2, 1)  # lambda_fit_forw 4 / 16
    assert cfg.upscaler.tied


def test_irn_optimiser_steps_are_the_authors_on_their_loss_scale(tmp_path):
    """Adam on the suite's IRN loss (the authors' per-image sums / 3·H·W) with the config's eps,
    weight decay and clip takes the steps Adam takes on the authors' scale with their 1e-8, 1e-5
    and 10; with Adam's own eps and the unscaled decay it would not (the parameters would differ)."""
    import copy

    from helpers import compose_run
    from taid_car.run import build_rescaler

    cfg = compose_run(["experiment=irn_paper_x2", "model.downscaler.preset=tiny", "+model.downscaler.blocks=1",
                       "+model.downscaler.gc=4", "data.lr_patch_size=6"], tmp_path)
    hr_values = 3 * 12**2
    torch.manual_seed(0)
    suite = build_rescaler(cfg).train().double()  # float64: rounding would blur the comparison
    theirs, start = copy.deepcopy(suite), copy.deepcopy(suite)  # the authors' init: last convolutions zero
    suite_opt = suite.configure_optimizers()["optimizer"]  # (its schedule is constant for 100k steps)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=2e-4, eps=1e-8, weight_decay=1e-5)
    hr = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for step in range(6):
        for model, optimizer, scale, clip in ((suite, suite_opt, 1.0, suite.grad_clip_norm),
                                              (theirs, their_opt, hr_values, 10.0)):
            torch.manual_seed(step)  # the same z for both
            optimizer.zero_grad()
            (model.compute_losses(hr)["loss"] * scale).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
    for (name, ours), their, initial in zip(suite.named_parameters(), theirs.parameters(), start.parameters()):
        moved = (their - initial).abs().max()
        assert moved > 0 and (ours - their).abs().max() <= 1e-4 * moved, name  # unscaled: up to 1.7x their move


@pytest.fixture(scope="module")
def irn_run(tmp_path_factory):
    """A 2-step model=irn x2 run on the sample images (tested, so compare and crops can read it)."""
    from helpers import compose_run
    from taid_car.run import train

    out = tmp_path_factory.mktemp("irn_x2") / "irn_x2"
    cfg = compose_run(["model=irn", "scale=2", "logger=csv", "trainer.max_steps=2", "trainer.val_check_interval=2",
                       "baseline=false", "callbacks.panels=null", "trainer.enable_progress_bar=false"], out)
    train(cfg)
    return out


@pytest.mark.slow
def test_an_irn_checkpoint_works_in_evaluate_rescale_compare_crops_and_the_recursion(irn_run, tmp_path):
    from PIL import Image

    from helpers import compose_evaluate
    from taid_car.compare import compare
    from taid_car.crops import main as crops_main
    from taid_car.evaluate import run_evaluation
    from taid_car.rescale import main as rescale_main

    ckpt = irn_run / "checkpoints" / "last.ckpt"
    results = run_evaluation(compose_evaluate([f"ckpt_path={ckpt}", "levels=[1,2]"]))
    assert [(r.scale, r.method) for r in results][:1] == [(2, "irn & irn_inverse")]
    assert {r.scale for r in results} == {2, 4} and all(math.isfinite(r.psnr_y) for r in results)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8), "RGB").save(folder / "a.png")
    common = ["--device", "cpu", "--no-progress", "--ckpt", str(ckpt)]
    assert rescale_main(["roundtrip", "--scale", "4", "--input", str(folder), *common]) == 0  # x2 applied twice
    written = compare([irn_run], tmp_path / "report")
    assert "irn & irn_inverse" in written["md"].read_text()
    assert crops_main([str(irn_run), "--image", str(folder / "a.png"), "--box", "0", "0", "32",
                       "--output", str(tmp_path / "crops")]) == 0
    assert list((tmp_path / "crops").glob("crops_x2_*.png"))
