"""The transcription of the SAIN authors' code (tests/sain_authors.py) checked on its own, before
any SAIN of the suite is tested against it: their block counts and parameter counts, their key
layout, exact invertibility on random weights (float32, non-square), the identity-coupling start of
their initialisation, the Gaussian mixture, the training step's five losses with their weights, and
their two JPEGs (the real one of the targets equals the suite's jpeg channel at 75)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sain_authors as sa

#: HR shapes: non-square, LR sides multiples of 16 at x2 and 8 at x4
SHAPES = {2: (2, 3, 48, 80), 4: (2, 3, 64, 96)}


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every convolution random (their init zeroes conv5, which hides the couplings), weights of
    std 0.5/sqrt(fan_in): each subnet moves its output by ~0.1, values stay O(1) through 16 blocks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad and p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 / math.sqrt(p.shape[1] * 9))
            elif p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return net


def _dense_block_params(cin: int, cout: int, gc: int) -> int:
    """Five 3×3 convolutions with biases: cin -> gc, cin+gc -> gc, ..., cin+4gc -> cout."""
    return sum(9 * (cin + i * gc) * gc + gc for i in range(4)) + 9 * (cin + 4 * gc) * cout + cout


def _expected_params(scale: int, e: int, v: int, gc: int = 32, components: int = 5) -> tuple[int, int]:
    """(trainable, all) by hand: split 3 | C-3 at C = 3·scale²; E, F: C-3 -> 3; G, H: 3 -> C-3;
    the mixture's 3×K; the fixed Haar filters (4·C_in per step, 2×2) count only in 'all'."""
    c = 3 * scale**2
    to_lr, to_z = _dense_block_params(c - 3, 3, gc), _dense_block_params(3, c - 3, gc)
    trainable = e * (2 * to_lr + 2 * to_z) + v * (to_lr + 2 * to_z) + 3 * components
    haar = sum(4 * 3 * 4**k * 4 for k in range(int(math.log2(scale))))
    return trainable, trainable + haar


@pytest.mark.parametrize(("scale", "blocks", "counts"), [(2, (5, 3), (2_015_437, 2_015_485)),
                                                          (4, (10, 6), (6_493_763, 6_494_003))])
def test_their_sizes_and_parameter_counts(scale, blocks, counts):
    """Their option files: x2 e_blocks 5 / v_blocks 3, x4 10 / 6, growth 32, 5 mixture components;
    2.02M and 6.49M parameters (their print_network counts the fixed Haar filters too)."""
    net = sa.define(scale)
    e, v = blocks
    assert (len(net.haar_operations), len(net.down_operations), len(net.comp_operations)) == (
        int(math.log2(scale)), e, v)
    assert net.gmm.gmm_para.shape == (3, 5)
    block = net.down_operations[0]
    assert (block.split_len1, block.split_len2) == (3, 3 * scale**2 - 3)
    assert block.E.conv1.in_channels == 3 * scale**2 - 3 and block.G.conv5.out_channels == 3 * scale**2 - 3
    assert block.E.conv1.out_channels == 32
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    everything = sum(p.numel() for p in net.parameters())
    assert (trainable, everything) == counts == _expected_params(scale, e, v)
    assert not any(p.requires_grad for p in net.haar_operations.parameters())


@pytest.mark.parametrize("scale", [2, 4])
def test_state_dict_keys_are_theirs_and_load_strictly(scale):
    net = sa.define(scale)
    sizes = sa.AUTHORS_NETWORK[scale]
    expected = sa.authors_state_dict_keys(scale, sizes["e_blocks"], sizes["v_blocks"])
    assert set(net.state_dict()) == expected
    assert {"haar_operations.0.haar_weights", "down_operations.0.E.conv1.weight",
            "down_operations.0.H.conv5.bias", "comp_operations.0.F.conv3.weight", "gmm.gmm_para"} <= expected
    assert not any(k.startswith("comp_operations.") and ".E." in k for k in expected)  # vanilla: F, G, H only
    saved = _randomised(sa.define(scale), seed=1).state_dict()
    fresh = sa.define(scale)
    fresh.load_state_dict(saved, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), saved.values()))
    fewer = sa.define(scale, v_blocks=sizes["v_blocks"] - 1)
    with pytest.raises(RuntimeError, match=rf"Unexpected key.*comp_operations\.{sizes['v_blocks'] - 1}\."):
        fewer.load_state_dict(saved, strict=True)


@pytest.mark.parametrize("scale", [2, 4])
def test_forward_then_inverse_with_its_own_latent_gives_back_the_hr(scale):
    """Paper sizes, random weights, float32: HR -> [compressed-LR estimate | z] -> HR within 1e-5,
    and the clean LR met on the way back is the forward's own."""
    net = _randomised(sa.define(scale), seed=scale)
    shape = SHAPES[scale]
    hr = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, lr = net(hr)
        h, w = shape[2] // scale, shape[3] // scale
        assert out.shape == (shape[0], 3 * scale**2, h, w) and lr.shape == (shape[0], 3, h, w)
        assert (out[:, :3] - lr).abs().mean() > 1e-2  # the vanilla blocks move the LR: two different LRs
        features = hr
        for op in [*net.haar_operations, *net.down_operations[:-1]]:
            features = op(features)
        last = net.down_operations[-1]  # the clean LR: x1 + E(x2) of the last enhanced block
        torch.testing.assert_close(lr, features[:, :3] + last.E(features[:, 3:]), atol=1e-6, rtol=0)
        back, lr_back = net(out, rev=True)
    assert back.shape == hr.shape
    torch.testing.assert_close(back, hr, atol=1e-5, rtol=0)
    torch.testing.assert_close(lr_back, lr, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [2, 4])
def test_their_initialisation_starts_as_the_haar_transform(scale):
    """conv5 of every subnet starts at zero: each coupling is the identity, the clean LR and the
    compressed-LR estimate are both the s×s box mean of the HR, and the mixture is ~N(0, 1)."""
    torch.manual_seed(0)
    net = sa.define(scale)
    assert all(torch.count_nonzero(m.conv5.weight) == 0 for m in net.modules() if isinstance(m, sa.DenseBlock))
    assert all(m.conv1.weight.std() > 0 for m in net.modules() if isinstance(m, sa.DenseBlock))
    hr = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        out, lr = net(hr)
    torch.testing.assert_close(lr, F.avg_pool2d(hr, scale), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :3], lr, atol=1e-6, rtol=0)
    assert net.gmm.gmm_para.abs().max() < 1e-3
    z = net.gmm.sample((4, 3 * scale**2 - 3, 16, 16))
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03


def test_the_gaussian_mixture_draws_one_component_per_value_and_learns():
    """gmm_para rows: π logits, μ, log σ². Each value is one component's draw (hard Gumbel-softmax),
    chosen with softmax(π); gradients reach μ, log σ² (reparametrised) and π (straight-through)."""
    mixture = sa.GaussianMixture(2)
    with torch.no_grad():
        mixture.gmm_para.copy_(torch.tensor([[0.0, math.log(3.0)], [-5.0, 5.0], [-20.0, -20.0]]))
    torch.manual_seed(1)
    z = mixture.sample((4, 9, 16, 16))
    assert z.shape == (4, 9, 16, 16)
    near = ((z - 5).abs() < 1e-3) | ((z + 5).abs() < 1e-3)
    assert near.all()
    assert abs((z > 0).float().mean() - 0.75) < 0.02
    (z * torch.randn(z.shape)).sum().backward()
    grad = mixture.gmm_para.grad
    assert torch.isfinite(grad).all() and (grad[0] != 0).all() and (grad[1] != 0).all()


def _loss_inputs(seed: int = 0):
    """A small x2 SAINet (their depth, growth 4), random weights; HR 32×64 (LR 16×32, the DiffJPEG's
    multiple of 16) and an 8-bit reference LR standing for their bicubic files."""
    net = _randomised(sa.define(2, gc=4), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    hr = torch.rand(2, 3, 32, 64, generator=gen)
    lr_ref = torch.round(F.avg_pool2d(hr, 2) * 255) / 255
    z = torch.randn(2, 9, 16, 32, generator=gen)
    return net, hr, lr_ref, z


def test_the_losses_are_theirs_with_their_weights():
    """loss = l_back_rec + (l_forw_fit1 + l_forw_fit2 + l_reg + l_rel) / 4, the four forward terms
    × lambda_fit_forw = scale² (4 at x2, 16 at x4), l_back_rec × 1; l2 = per-image sum of squares,
    l1 = per-image sum of sqrt(d² + 1e-6), both averaged over the batch; targets without gradient."""
    assert {s: sa.AUTHORS_TRAIN[s]["lambda_fit_forw"] for s in (2, 4)} == {2: 4.0, 4: 16.0}
    net, hr, lr_ref, z = _loss_inputs()
    diffcomp, realcomp = sa.DiffJPEG(quality=75), sa.RealComp(quality=75)
    terms = sa.authors_losses(net, hr, lr_ref, diffcomp, realcomp, 4.0, z=z)
    names = ("l_back_rec", "l_forw_fit1", "l_forw_fit2", "l_reg", "l_rel")
    assert all(torch.isfinite(terms[n]) and terms[n] > 0 for n in names)
    torch.testing.assert_close(terms["loss"], terms["l_back_rec"] + sum(terms[n] for n in names[1:]) / 4)

    sq = lambda a, b: ((a - b) ** 2).sum((1, 2, 3)).mean()
    with torch.no_grad():
        out, lr = net(hr)  # recomputed here from the network and the two codecs
        lr_q = torch.round(lr.clamp(0, 1) * 255) / 255
        compressed = diffcomp(lr_q)
        sr, lr_recon = net(torch.cat([compressed, z], 1), rev=True)
        jpeg_ref, jpeg_own = realcomp(lr_ref), realcomp(lr_q)
    assert torch.equal(terms["LR"], lr_q) and torch.equal(terms["LR_compressed"], compressed)
    torch.testing.assert_close(terms["l_forw_fit1"], 4 * sq(lr, lr_ref))
    torch.testing.assert_close(terms["l_forw_fit2"], 4 * sq(out[:, :3], jpeg_ref))
    torch.testing.assert_close(terms["l_reg"], 4 * sq(lr_q, lr_recon))
    torch.testing.assert_close(terms["l_rel"], 4 * sq(out[:, :3], jpeg_own))
    torch.testing.assert_close(terms["l_back_rec"], torch.sqrt((sr - hr) ** 2 + 1e-6).sum((1, 2, 3)).mean())
    torch.testing.assert_close(sa.ReconstructionLoss("l1")(hr, hr), torch.tensor(1e-3 * 3 * 32 * 64))  # sqrt(eps)
    assert not jpeg_ref.requires_grad and not realcomp(terms["LR"]).requires_grad
    assert not torch.equal(jpeg_own, lr_q)  # the real JPEG target is not the LR itself

    terms["loss"].backward()
    for name, p in net.named_parameters():
        if p.requires_grad and name != "gmm.gmm_para":
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert net.gmm.gmm_para.grad is None  # z was given: the mixture is not in this graph


def test_a_drawn_latent_trains_the_mixture_and_scales_with_gaussian_scale():
    net, hr, lr_ref, _ = _loss_inputs(seed=2)
    identity = lambda x: x  # a lossless channel: the test is about z
    torch.manual_seed(0)
    terms = sa.authors_losses(net, hr, lr_ref, identity, identity, 4.0)
    assert terms["z"].shape == (2, 9, 16, 32)
    terms["loss"].backward()
    assert torch.isfinite(net.gmm.gmm_para.grad).all() and (net.gmm.gmm_para.grad[1:] != 0).all()
    z = torch.ones(2, 9, 16, 32)
    half = sa.authors_losses(net, hr, lr_ref, identity, identity, 4.0, gaussian_scale=0.5, z=z)
    same = sa.authors_losses(net, hr, lr_ref, identity, identity, 4.0, z=0.5 * z)
    torch.testing.assert_close(half["sr"], same["sr"])


def test_training_steps_move_every_trained_weight_and_keep_the_haar_filters():
    net, hr, lr_ref, _ = _loss_inputs(seed=3)
    haar = net.haar_operations[0].haar_weights.clone()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer, scheduler = sa.authors_optimizer(net)
    assert optimizer.defaults["weight_decay"] == 1e-5 and optimizer.defaults["betas"] == (0.9, 0.999)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in net.parameters() if p.requires_grad)
    torch.manual_seed(0)
    for _ in range(2):
        terms = sa.authors_training_step(net, optimizer, scheduler, hr, lr_ref, sa.DiffJPEG(quality=75),
                                         sa.RealComp(quality=75), 4.0)
        assert torch.isfinite(terms["loss"])
    assert torch.equal(net.haar_operations[0].haar_weights, haar)
    moved = [k for k, v in net.state_dict().items() if not torch.equal(v, start[k])]
    assert len(moved) == len(start) - 1 and "gmm.gmm_para" in moved
    assert scheduler.get_last_lr() == [2e-4]


def _skimage(name: str, top: int, left: int, height: int, width: int) -> torch.Tensor:
    from skimage import data as skdata

    array = torch.from_numpy(getattr(skdata, name)().copy()).permute(2, 0, 1)
    return (array[:, top:top + height, left:left + width].float() / 255)[None]


def test_their_real_jpeg_is_the_suites_jpeg_channel_at_75():
    """REALCOMP (Pillow, quality 75, default 4:2:0) decodes to the suite's jpeg codec bit for bit."""
    from taid_car.channel.codecs import jpeg_roundtrip

    batch = torch.cat([_skimage("astronaut", 0, 0, 48, 80), _skimage("coffee", 100, 100, 48, 80)])
    torch.testing.assert_close(sa.RealComp(quality=75)(batch), jpeg_roundtrip(batch, 75)[0], atol=0, rtol=0)


def test_their_differentiable_jpeg_without_rounding_only_averages_the_chroma():
    """With the rounding taken out, their pipeline (JFIF YCbCr, 2×2 mean of Cb and Cr, DCT, IDCT,
    nearest ×2 chroma, back to RGB) leaves Y alone and replaces Cb, Cr by their 2×2 block means."""
    image = _skimage("astronaut", 100, 150, 32, 48)
    codec = sa.DiffJPEG(quality=75)
    codec.rounding = lambda x: x
    to_ycc = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, image)
    chroma = F.interpolate(F.avg_pool2d(ycc[:, 1:], 2), scale_factor=2, mode="nearest")
    expected = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_ycc), torch.cat([ycc[:, :1], chroma], 1))
    torch.testing.assert_close(codec(image), expected.clamp(0, 1), atol=2e-4, rtol=0)


def test_their_differentiable_jpeg_is_near_pillows_and_has_a_gradient():
    """Their DiffJPEG at 75 is 42-44 dB from Pillow's decode on photographs (not the codec: float
    tables, smooth rounding, nearest chroma upsampling), lossy, and differentiable."""
    from taid_car.channel.codecs import jpeg_roundtrip

    assert sa.quality_to_factor(75) == 0.5 and sa.quality_to_factor(25) == 2.0
    x = torch.tensor([-1.5, -0.25, 0.0, 0.25, 1.0, 2.0])
    torch.testing.assert_close(sa.diff_round(torch.round(x)), torch.round(x), atol=1e-5, rtol=0)
    assert (sa.diff_round(x[[1, 3]]) - torch.round(x[[1, 3]])).abs().min() > 0.01  # smooth between
    image = _skimage("chelsea", 0, 0, 128, 160).requires_grad_()
    coded = sa.DiffJPEG(quality=75)(image)
    real = jpeg_roundtrip(image.detach(), 75)[0]
    psnr = lambda a, b: -10 * math.log10(((a - b) ** 2).mean().item())
    assert 40 < psnr(coded.detach(), real) and psnr(coded.detach(), image.detach()) < 40
    coded.sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().mean() > 0.5
