"""SAIN in the suite (models/sain.py, conf/model/sain.yaml) against the transcription of the
authors' code (tests/sain_authors.py, itself checked in test_sain_authors.py): their key layout
loading strictly, the same forward and inverse on random weights (float32, <= 1e-5, x2 and x4,
non-square), the same mixture draws, each loss term and the gradient of the whole step on their
scale, the presets' sizes, the config's training block, the pairing rule, a short run through
JPEG QF 75 with its baseline, and the independent anchor loop (experiments/jpeg_robustness)."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

import sain_authors as sa
from helpers import compose_run
from taid_car.channel.codecs import jpeg_roundtrip
from taid_car.channel.diff_jpeg import diff_jpeg
from taid_car.errors import ConfigError
from taid_car.models.checkpoints import CheckpointError, load_authors_checkpoint
from taid_car.models.sain import SAIN_PRESETS, SAINDownscaler, SAINNet
from taid_car.ops.imresize import bicubic_downscale

HERE = Path(__file__).resolve().parent
#: HR shapes: non-square, odd multiples of the LR grid
SHAPES = {2: (2, 3, 22, 38), 4: (1, 3, 36, 60)}


@pytest.fixture(autouse=True)
def _no_hydra_runtime_left():
    """compose_run sets Hydra's runtime config; none is left behind for the next module."""
    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every trained weight random (their init zeroes conv5, which hides the couplings): std
    0.5/sqrt(fan_in), so each subnet moves its output by ~0.1 and values stay O(1) over 16 blocks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad and p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 / math.sqrt(p.shape[1] * 9))
            elif p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return net


# ----------------------------------------------------------------------------- the network
@pytest.mark.parametrize("scale", [2, 4])
def test_forward_and_inverse_match_the_authors_network(scale, tmp_path):
    """Paper sizes, their random weights saved as DataParallel saves them, loaded strictly into the
    suite's net: the same compressed-LR estimate, z and clean LR forward, the same HR and recovered
    LR backward (an LR that is not the estimate, a random z), and exact invertibility."""
    theirs = _randomised(sa.define(scale), seed=scale)
    path = tmp_path / "sain_authors.pth"
    torch.save({f"module.{k}": v for k, v in theirs.state_dict().items()}, path)
    down = SAINDownscaler(scale, preset="paper")
    load_authors_checkpoint(down.net, path)
    hr = torch.rand(SHAPES[scale], generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        (expected, expected_lr), (got, got_lr) = theirs(hr), down.net(hr)
        b, _, height, width = hr.shape
        assert got.shape == (b, 3 * scale**2, height // scale, width // scale) and got_lr.shape == (b, 3, *got.shape[2:])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_lr, expected_lr, atol=1e-5, rtol=0)
        assert torch.equal(down(hr), got_lr)  # the downscaler sends the clean LR
        coded = torch.cat([torch.rand(got_lr.shape, generator=gen), torch.randn(got[:, 3:].shape, generator=gen)], 1)
        for mine, their in zip(down.net(coded, rev=True), theirs(coded, rev=True)):
            torch.testing.assert_close(mine, their, atol=1e-5, rtol=0)
        back, lr_back = down.net(got, rev=True)
    torch.testing.assert_close(back, hr, atol=1e-5, rtol=0)
    torch.testing.assert_close(lr_back, got_lr, atol=1e-5, rtol=0)


def test_a_checkpoint_of_another_size_is_refused_with_what_differs(tmp_path):
    path = tmp_path / "x2.pth"
    torch.save(sa.define(2, gc=4).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*down_operations\.4"):
        load_authors_checkpoint(SAINNet(1, e_blocks=4, v_blocks=3, gc=4), path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_authors_checkpoint(SAINNet(1, e_blocks=5, v_blocks=3, gc=8), path)


@pytest.mark.parametrize(("preset", "scale", "count"), [("paper", 2, 2_015_437), ("paper", 4, 6_493_763),
                                                        ("tiny", 2, 172_487), ("tiny", 4, 652_583)])
def test_the_presets_sizes_and_key_layout(preset, scale, count):
    """paper: the authors' option files (5 / 3 blocks at x2, 10 / 6 at x4, growth 32; their print adds
    the fixed Haar filters, here a buffer); tiny: their depth, growth 7 / 5, IRN tiny's size
    (172,656 / 618,048) within -0.1 % / +5.6 %. The keys are theirs under ``net.``."""
    down = SAINDownscaler(scale, preset=preset)
    sizes = SAIN_PRESETS[preset][scale]
    assert sum(p.numel() for p in down.parameters()) == count
    assert all(p.requires_grad for p in down.parameters()) and not any(b.requires_grad for b in down.buffers())
    keys = sa.authors_state_dict_keys(scale, sizes["e_blocks"], sizes["v_blocks"])
    assert set(down.state_dict()) == {f"net.{k}" for k in keys}
    assert (len(down.net.down_operations), len(down.net.comp_operations)) == (sizes["e_blocks"], sizes["v_blocks"])
    assert down.net.down_operations[0].E.conv1.out_channels == sizes["gc"]
    if preset == "tiny":
        irn_tiny = {2: 172_656, 4: 618_048}[scale]
        assert abs(count / irn_tiny - 1) < 0.06


def test_their_initialisation_starts_as_the_box_mean_and_a_standard_normal():
    """Every subnet's conv5 zero: both LRs are the 2x2 / 4x4 box mean of the HR at step 0; the mixture
    ~N(0, 1) with equal weights, as theirs."""
    torch.manual_seed(0)
    down = SAINDownscaler(4)
    hr = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        out, lr = down.net(hr)
    torch.testing.assert_close(lr, F.avg_pool2d(hr, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :3], lr, atol=1e-6, rtol=0)
    assert down.net.gmm.gmm_para.abs().max() < 1e-3
    z = down.net.gmm.sample((4, 45, 16, 16))
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03


def test_the_same_seed_draws_the_authors_latent_and_the_same_latent_gives_the_same_inverse():
    """The mixture draws theirs number for number under one seed (a trained-looking mixture: two
    components apart); the tied upscaler in training draws that z and returns their inverse's HR; in
    evaluation it draws the same z at every call (a generator seeded 0); gaussian_scale scales z."""
    theirs = _randomised(sa.define(2, gc=4), seed=5)
    down = SAINDownscaler(2, gc=4)
    down.net.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        for net in (theirs, down.net):
            net.gmm.gmm_para.copy_(torch.tensor([[0.0, 1.0, -1.0, 0.5, 0.0], [-2.0, 0.5, 1.0, 2.0, 0.0],
                                                 [-1.0, 0.0, -3.0, 0.2, 1.0]]))
    shape = (2, 9, 6, 10)
    torch.manual_seed(11)
    z_theirs = theirs.gmm.sample(shape)
    torch.manual_seed(11)
    z_ours = down.net.gmm.sample(shape)
    assert torch.equal(z_ours, z_theirs) and z_ours.std() > 0.5
    lr = torch.rand(2, 3, 6, 10, generator=torch.Generator().manual_seed(2))
    up = down.inverse()
    with torch.no_grad():
        torch.manual_seed(11)
        sr = up(lr)
        expected, _ = theirs(torch.cat([lr, z_theirs], 1), rev=True)
        torch.testing.assert_close(sr, expected, atol=1e-5, rtol=0)
        up.eval()
        assert torch.equal(up(lr), up(lr))
        seeded = down.net.gmm.sample(shape, torch.Generator().manual_seed(0))
        torch.testing.assert_close(up(lr), theirs(torch.cat([lr, seeded], 1), rev=True)[0], atol=1e-5, rtol=0)
        down.gaussian_scale = 0.0
        torch.testing.assert_close(up(lr), theirs(torch.cat([lr, torch.zeros(shape)], 1), rev=True)[0],
                                   atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the training step
def _sain(tmp_path: Path, scale: int, *overrides: str):
    """The Rescaler of model=sain at ``scale`` (their depth, growth 4, random weights)."""
    from taid_car.run import build_rescaler

    model = build_rescaler(compose_run(["model=sain", f"scale={scale}", "+model.downscaler.gc=4", *overrides],
                                       tmp_path))
    _randomised(model.downscaler.net, seed=scale)
    return model


def _suite_and_theirs(scale: int, tmp_path: Path):
    """model=sain through channel=jpeg QF 75 and the transcription with the same weights."""
    model = _sain(tmp_path, scale, "channel=jpeg", "channel.quality=75")
    theirs = sa.define(scale, gc=4)
    theirs.load_state_dict(model.downscaler.net.state_dict(), strict=True)
    return model, theirs


@pytest.mark.parametrize("scale", [2, 4])
def test_each_loss_term_and_the_steps_gradient_are_the_authors(scale, tmp_path):
    """One training step of model=sain and their optimize_parameters on the same HR, weights, z
    (one seed: the same draw) and JPEGs (the suite's diff JPEG for the LR, Pillow at QF 75 for the
    targets, passed to the transcription): each forward term x its weight x 3·H·W is theirs (their
    sums with lambda_fit_forw = scale² and the divide-by-4), the l1 is the mean |SR − HR| of their
    SR (their Charbonnier sum is within sqrt(1e-6) per value of it), and the whole loss's gradient,
    with their Charbonnier replaced by that L1, is theirs for every weight, the mixture's included."""
    model, theirs = _suite_and_theirs(scale, tmp_path)
    weights = model.loss_weights
    assert weights == {"l1": 1.0, "out_of_range": 0.0, "fit1": scale**2, "fit2": scale**2, "reg": scale**2,
                       "rel": scale**2}
    hr = torch.rand(2, 3, 16 * scale, 24 * scale, generator=torch.Generator().manual_seed(3))
    values = 3 * hr.shape[2] * hr.shape[3]
    lr_ref = torch.round(bicubic_downscale(hr, scale).clamp(0, 1) * 255) / 255  # their 8-bit LR files
    torch.manual_seed(4)
    ours = model.compute_losses(hr)
    torch.manual_seed(4)
    terms = sa.authors_losses(theirs, hr, lr_ref, lambda x: diff_jpeg(x, 75, "4:2:0"),
                              lambda x: jpeg_roundtrip(x.detach(), 75)[0], float(scale**2))
    for name, their_name in (("fit1", "l_forw_fit1"), ("fit2", "l_forw_fit2"), ("reg", "l_reg"), ("rel", "l_rel")):
        assert terms[their_name] > 0
        torch.testing.assert_close(weights[name] * ours[name] * values, terms[their_name] / 4, rtol=1e-5, atol=1e-6)
    l1_sum = (terms["sr"] - hr).abs().sum((1, 2, 3)).mean()
    torch.testing.assert_close(ours["l1"] * values, l1_sum, rtol=1e-5, atol=1e-5)
    slack = 1e-6 * l1_sum  # float32 sums of ~1e4 values
    assert -slack <= terms["l_back_rec"] - l1_sum <= 1e-3 * values + slack
    their_loss = terms["loss"] - terms["l_back_rec"] + l1_sum
    torch.testing.assert_close(ours["loss"] * values, their_loss, rtol=1e-5, atol=1e-5)
    (ours["loss"] * values).backward()
    their_loss.backward()
    mine = dict(model.downscaler.net.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            torch.testing.assert_close(mine[name].grad, p.grad, rtol=1e-4, atol=1e-6 * p.grad.abs().max().item())


def test_the_real_codec_is_the_runs_channel_and_png_makes_it_the_rounding(tmp_path):
    """fit2 and rel's targets come from the run's channel: at QF 30 they differ from QF 75's; under png
    (the default channel) they are the 8-bit LRs themselves."""
    hr = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    rel = {}
    for channel in (["channel=jpeg", "channel.quality=75"], ["channel=jpeg", "channel.quality=30"], []):
        model = _sain(tmp_path, 2, *channel)
        assert model.downscaler.channel is model.channel
        torch.manual_seed(0)
        rel[model.channel.label] = model.compute_losses(hr)["rel"]
    down = model.downscaler
    with torch.no_grad():
        out, lr = down.net(hr)
        rounded = torch.round(lr.clamp(0, 1) * 255) / 255
    torch.testing.assert_close(rel["png"], ((out[:, :3] - rounded) ** 2).sum() / (3 * 32 * 48) / 4)
    assert rel["jpeg q30 4:2:0"] > rel["jpeg q75 4:2:0"] > rel["png"] > 0


def test_another_upscaler_still_gets_the_reg_term_from_the_inverse(tmp_path):
    """model=sain upscaler=edsr_tiny: SAIN's encoder with EDSR-tiny; reg's recovered LR comes from
    SAIN's inverse run on the coded LR in the regularisers (a mixture draw), so every term trains."""
    model = _sain(tmp_path, 2, "upscaler=edsr_tiny")
    assert type(model.upscaler).__name__ == "EDSR"
    hr = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    terms = model.compute_losses(hr)
    assert all(torch.isfinite(terms[n]) and terms[n] > 0 for n in ("fit1", "fit2", "reg", "rel"))
    terms["loss"].backward()
    assert model.downscaler.net.gmm.gmm_para.grad.abs().sum() > 0  # only reg draws from the mixture here
    with pytest.raises(RuntimeError, match="needs a forward with gradients first"):
        model.downscaler.regularizers(hr, hr[:, :, ::2, ::2])


# ----------------------------------------------------------------------------- config and settings
def test_the_config_is_the_authors_training_block(tmp_path):
    """Tied to its inverse, their quantiser (straight through the clamp), no out-of-range term,
    clip 10 and Adam's eps on their per-image-sum scale, the baseline an EDSR of its size, and the
    run's channel (png unless the command line names one)."""
    from taid_car.models.edsr import edsr_parameter_count
    from taid_car.run import build_rescaler
    from taid_car.training.baseline import baseline_upscaler

    cfg = compose_run(["model=sain", "scale=4", "data.lr_patch_size=8"], tmp_path)
    assert cfg.upscaler.tied and cfg.upscaler.name == "sain_inverse" and cfg.channel.name == "png"
    hr_values = 3 * 32**2
    assert cfg.model.grad_clip_norm * hr_values == pytest.approx(10) and cfg.optimizer.eps * hr_values == pytest.approx(1e-8)
    model = build_rescaler(cfg)
    assert model.quantizer.through_clamp and model.upscaler.downscaler is model.downscaler
    assert model.loss_weights == {"l1": 1.0, "out_of_range": 0.0, "fit1": 16.0, "fit2": 16.0, "reg": 16.0, "rel": 16.0}
    width = baseline_upscaler(cfg).net.n_feats
    sain = sum(p.numel() for p in model.downscaler.parameters())
    assert abs(edsr_parameter_count(4, width, 4) / sain - 1) < 0.01


@pytest.mark.parametrize(("overrides", "message"), [
    (["scale=3"], r"^scale=3: SAIN works at powers of two"),
    (["scale=8"], r"^scale=8: SAIN's presets are for x2 and x4 .* model.downscaler.e_blocks"),
    (["model.downscaler.preset=huge"], r"^SAIN preset='huge': one of paper, tiny"),
    (["model.downscaler.gaussian_scale=-1"], r"^SAIN gaussian_scale=-1"),
    (["channel=jpeg", "channel.quality=[50,90]"], r"^channel.quality=\[50, 90\]: model=sain codes its real-JPEG"),
])
def test_bad_settings_are_named(overrides, message, tmp_path):
    """One line naming the key, the error the CLI prints (taid_car.errors.user_error unwraps Hydra's)."""
    from taid_car.errors import user_error
    from taid_car.run import build_rescaler

    with pytest.raises(Exception) as caught:
        build_rescaler(compose_run(["model=sain", "scale=2", *overrides], tmp_path))
    found = user_error(caught.value)
    assert isinstance(found, ConfigError) and re.match(message, str(found)), caught.value


def test_other_powers_of_two_with_sizes_given():
    down = SAINDownscaler(8, e_blocks=1, v_blocks=1, gc=2)
    assert down(torch.rand(1, 3, 16, 24)).shape == (1, 3, 2, 3) and len(down.net.haar_operations) == 3


def test_the_sweep_of_the_issue_pairs_sain_and_irn_with_their_inverses():
    """``-m experiment=cpu_small model=car,taid,irn,sain,bicubic``, job by job as the sweeper composes
    them: IRN and SAIN with their own inverses, the others with the preset's EDSR-tiny."""
    from taid_car.run import pair_tied_method

    paired = []
    for method in ("car", "taid", "irn", "sain", "bicubic"):
        cfg = compose_run(["experiment=cpu_small", f"model={method}"])
        pair_tied_method(cfg)
        paired.append(str(cfg.upscaler.name))
    assert paired == ["edsr_tiny", "edsr_tiny", "irn_inverse", "sain_inverse", "edsr_tiny"]


# ----------------------------------------------------------------------------- runs (slow)
@pytest.mark.slow
def test_sain_and_its_baseline_train_through_jpeg_75(tmp_path):
    """A few steps of model=sain through JPEG QF 75 (the authors' setting), then bicubic + an EDSR of
    SAIN's size through the same channel; every term logged and finite, rows at QF 75; evaluate on
    its checkpoint gives the run's own row (the inverse's z is drawn alike at every evaluation)."""
    import json

    from helpers import compose_evaluate
    from taid_car.evaluate import run_evaluation
    from taid_car.run import train

    outcome = train(compose_run(["model=sain", "scale=2", "channel=jpeg", "channel.quality=75", "baseline=true",
                                 "logger=csv", "trainer.max_steps=3", "trainer.val_check_interval=3",
                                 "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
                                 "callbacks.panels=null"], tmp_path))
    for name in ("loss", "l1", "fit1", "fit2", "reg", "rel"):
        assert math.isfinite(outcome["metrics"][f"train/{name}"]), name
    for rows in (outcome["results"], outcome["baseline"]):
        assert [(r.channel, r.quality) for r in rows] == [("jpeg", 75)] and math.isfinite(rows[0].psnr_y)
    assert outcome["results"][0].method.startswith("sain & sain_inverse")
    assert outcome["baseline"][0].method.startswith("bicubic & edsr_")
    assert json.loads((tmp_path / "run.json").read_text())["channel"]["quality"] == 75
    best = outcome["trainer"].checkpoint_callback.best_model_path  # evaluate rebuilds the pair and its z: the same row
    evaluated = run_evaluation(compose_evaluate([f"ckpt_path={best}"]))
    assert [(r.method, r.quality, r.psnr_y, r.bpp) for r in evaluated] == \
        [(r.method, r.quality, r.psnr_y, r.bpp) for r in outcome["results"]]


def _t91(folder: Path, count: int = 12) -> Path:
    """A stand-in T91 of ``count`` small photograph crops (skimage), for the anchor's smoke run."""
    from PIL import Image
    from skimage import data as skdata

    t91 = folder / "T91"
    t91.mkdir(parents=True)
    sources = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()]
    for i in range(count):
        image = sources[i % 3][20 * i: 20 * i + 56, 30 * i: 30 * i + 72]
        Image.fromarray(image).save(t91 / f"t{i:02d}.png")
    return folder


@pytest.mark.slow
def test_the_anchor_loop_runs_and_writes_its_hold_out_curve(tmp_path):
    """experiments/jpeg_robustness/sain_anchor.py, 2 steps at x2 on a stand-in T91: the CSV holds the
    step, the hold-out PSNR-Y at QF 75 and the authors' five losses, all finite."""
    out = tmp_path / "anchor.csv"
    done = subprocess.run([sys.executable, str(HERE.parent / "experiments" / "jpeg_robustness" / "sain_anchor.py"),
                           "--data", str(_t91(tmp_path / "data")), "--scale", "2", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert [r["step"] for r in rows] == ["2"]
    values = {k: float(v) for k, v in rows[0].items()}
    assert 5 < values["holdout_psnr_y"] < 60  # at step 2 the inverse still adds z ~ N(0, 1) to the Haar details
    assert all(math.isfinite(values[k]) and values[k] > 0 for k in ("l_back_rec", "l_forw_fit1", "l_forw_fit2",
                                                                       "l_reg", "l_rel"))
