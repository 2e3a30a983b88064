"""A transcription of the SAIN authors' network and training step (yang-jin-hai/SAIN at commit
e361d7a0d34b31468f1e47b3e4f181b0e2ca7d46, "release the training codes and configs"), kept as close
to their code as runs here: the reference every SAIN in the suite is tested against (as
``irn_authors.py`` is for IRN). docs/sain.md describes it in the suite's words.

Transcribed files (``codes/models/...``):

* ``modules/inv_arch.py``: HaarDownsampling, EnhancedInvBlock, VanillaInvBlock, SAINet;
* ``modules/subnet_constructor.py``: DenseBlock (growth 32) and ``subnet`` with their init
  (``module_util.py``: Xavier-normal ×0.1 for conv1..4, Kaiming-normal ×0 = zero for conv5);
* ``modules/guassian_mixture.py``: GaussianMixture (their spelling of the file; parameter
  ``gmm_para`` = rows [π logits, μ, log σ²] × components);
* ``modules/quantization.py``: Quant / Quantization (clamp, 8-bit rounding, identity gradient);
* ``model.py``: ``optimize_parameters`` (the five losses, the divide-by-4, clipping) as
  :func:`authors_losses` / :func:`authors_training_step`; the Adam/MultiStepLR of ``__init__``
  as :func:`authors_optimizer`;
* ``compressor.py``: REALCOMP (Pillow JPEG at quality 75: the real-JPEG targets) as
  :class:`RealComp`;
* ``jpeg.py`` + ``jpeg_utils.py``: DiffJPEG (the differentiable JPEG their training step runs the
  LR through; Fourier-series rounding, float quantisation tables) as :class:`DiffJPEG`.

Left out: the Jacobian bookkeeping (``cal_jacobian``, never used by their training step), logging,
DataParallel. The state-dict keys are theirs (``haar_operations.0.haar_weights``,
``down_operations.0.E.conv1.weight``, ``comp_operations.0.H.conv5.bias``, ``gmm.gmm_para``), so a
checkpoint their ``save_network`` wrote loads with ``load_state_dict(strict=True)``.
"""

# ruff: noqa: UP008, PLR0402  (the authors' style is kept, so the two can be read side by side)
from __future__ import annotations

import itertools
import math
from io import BytesIO

import numpy as np
import torch
import torch.distributions as D
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

# --- modules/module_util.py (the two initialisers DenseBlock uses) ---------------------------


def initialize_weights(net_l, scale=1):
    if not isinstance(net_l, list):
        net_l = [net_l]
    for net in net_l:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode='fan_in')
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.zero_()


def initialize_weights_xavier(net_l, scale=1):
    if not isinstance(net_l, list):
        net_l = [net_l]
    for net in net_l:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.zero_()


# --- modules/subnet_constructor.py ------------------------------------------------------------


class DenseBlock(nn.Module):
    def __init__(self, channel_in, channel_out, init='xavier', gc=32, bias=True):
        super(DenseBlock, self).__init__()
        self.conv1 = nn.Conv2d(channel_in, gc, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(channel_in + gc, gc, 3, 1, 1, bias=bias)
        self.conv3 = nn.Conv2d(channel_in + 2 * gc, gc, 3, 1, 1, bias=bias)
        self.conv4 = nn.Conv2d(channel_in + 3 * gc, gc, 3, 1, 1, bias=bias)
        self.conv5 = nn.Conv2d(channel_in + 4 * gc, channel_out, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        if init == 'xavier':
            initialize_weights_xavier([self.conv1, self.conv2, self.conv3, self.conv4], 0.1)
        else:
            initialize_weights([self.conv1, self.conv2, self.conv3, self.conv4], 0.1)
        initialize_weights(self.conv5, 0)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5


def subnet(net_structure='DBNet', init='xavier', gc=32):
    """Theirs has no ``gc`` argument (DenseBlock's default 32 is always used); it is added here
    only so that smaller sizes can be built for the CPU. Their non-xavier branch calls
    DenseBlock(channel_in, channel_out), whose default init is 'xavier' too: kept."""
    def constructor(channel_in, channel_out):
        if net_structure == 'DBNet':
            if init == 'xavier':
                return DenseBlock(channel_in, channel_out, init, gc=gc)
            else:
                return DenseBlock(channel_in, channel_out, gc=gc)
        else:
            return None
    return constructor


# --- modules/guassian_mixture.py ----------------------------------------------------------------


class GaussianMixture(nn.Module):
    def __init__(self, gmm_components=5):
        super(GaussianMixture, self).__init__()
        self.gmm_para = nn.Parameter(0.0001 * torch.randn(3, gmm_components))

    def refresh(self):
        self.pis, self.mus, self.logvars = self.gmm_para

    def build(self):
        self.refresh()
        std = torch.exp(0.5 * torch.clamp(self.logvars, -20, 20))
        weights = self.pis.softmax(dim=0)
        mix = D.Categorical(weights)
        comp = D.Normal(self.mus, std)
        self.gmm = D.MixtureSameFamily(mix, comp)

    def sample(self, zshape):
        self.build()
        assert self.gmm.component_distribution.has_rsample
        weights = self.gmm.mixture_distribution._param.repeat(*zshape, 1)
        comp = nn.functional.gumbel_softmax(weights.log(), hard=True)
        samples = self.gmm.component_distribution.rsample(zshape)
        return (comp * samples).sum(dim=-1)


# --- modules/inv_arch.py -----------------------------------------------------------------------


class VanillaInvBlock(nn.Module):
    def __init__(self, subnet_constructor, channel_num, channel_split_num, clamp=1.):
        super(VanillaInvBlock, self).__init__()
        self.split_len1 = channel_split_num
        self.split_len2 = channel_num - channel_split_num
        self.clamp = clamp
        self.F = subnet_constructor(self.split_len2, self.split_len1)
        self.G = subnet_constructor(self.split_len1, self.split_len2)
        self.H = subnet_constructor(self.split_len1, self.split_len2)

    def forward(self, x, rev=False):
        x1, x2 = (x.narrow(1, 0, self.split_len1), x.narrow(1, self.split_len1, self.split_len2))
        if not rev:
            y1 = x1 + self.F(x2)
            self.s = self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)
            y2 = x2.mul(torch.exp(self.s)) + self.G(y1)
        else:
            self.s = self.clamp * (torch.sigmoid(self.H(x1)) * 2 - 1)
            y2 = (x2 - self.G(x1)).div(torch.exp(self.s))
            y1 = x1 - self.F(y2)
        return torch.cat((y1, y2), 1)


class EnhancedInvBlock(nn.Module):
    def __init__(self, subnet_constructor, channel_num, channel_split_num, clamp=1.):
        super(EnhancedInvBlock, self).__init__()
        self.split_len1 = channel_split_num
        self.split_len2 = channel_num - channel_split_num
        self.clamp = clamp
        self.E = subnet_constructor(self.split_len2, self.split_len1)
        self.F = subnet_constructor(self.split_len2, self.split_len1)
        self.G = subnet_constructor(self.split_len1, self.split_len2)
        self.H = subnet_constructor(self.split_len1, self.split_len2)

    def forward(self, x, rev=False):
        x1, x2 = (x.narrow(1, 0, self.split_len1), x.narrow(1, self.split_len1, self.split_len2))
        if not rev:
            self.LR = x1 + self.E(x2)
            y1 = self.LR - self.F(x2)
            self.s = self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)
            y2 = x2.mul(torch.exp(self.s)) + self.G(y1)
        else:
            self.s = self.clamp * (torch.sigmoid(self.H(x1)) * 2 - 1)
            y2 = (x2 - self.G(x1)).div(torch.exp(self.s))
            self.LR = x1 + self.F(y2)
            y1 = self.LR - self.E(y2)
        return torch.cat((y1, y2), 1)


class HaarDownsampling(nn.Module):
    def __init__(self, channel_in):
        super(HaarDownsampling, self).__init__()
        self.channel_in = channel_in
        self.haar_weights = torch.ones(4, 1, 2, 2)
        self.haar_weights[1, 0, 0, 1] = -1
        self.haar_weights[1, 0, 1, 1] = -1
        self.haar_weights[2, 0, 1, 0] = -1
        self.haar_weights[2, 0, 1, 1] = -1
        self.haar_weights[3, 0, 1, 0] = -1
        self.haar_weights[3, 0, 0, 1] = -1
        self.haar_weights = torch.cat([self.haar_weights] * self.channel_in, 0)
        self.haar_weights = nn.Parameter(self.haar_weights)
        self.haar_weights.requires_grad = False

    def forward(self, x, rev=False):
        if not rev:
            out = F.conv2d(x, self.haar_weights, bias=None, stride=2, groups=self.channel_in) / 4.0
            out = out.reshape([x.shape[0], self.channel_in, 4, x.shape[2] // 2, x.shape[3] // 2])
            out = torch.transpose(out, 1, 2)
            out = out.reshape([x.shape[0], self.channel_in * 4, x.shape[2] // 2, x.shape[3] // 2])
            return out
        else:
            out = x.reshape([x.shape[0], 4, self.channel_in, x.shape[2], x.shape[3]])
            out = torch.transpose(out, 1, 2)
            out = out.reshape([x.shape[0], self.channel_in * 4, x.shape[2], x.shape[3]])
            return F.conv_transpose2d(out, self.haar_weights, bias=None, stride=2, groups=self.channel_in)


class SAINet(nn.Module):
    """Forward: x = HR (B,3,H,W) -> (out, LR): out (B,3s²,H/s,W/s) = [compressed-LR estimate (3) |
    z (3s²−3)], LR (B,3,H/s,W/s) = the clean LR of the last enhanced block. Reverse (rev=True):
    x = [LR' | z] -> (out, LR): out (B,3,H,W) = the HR, LR = the clean-LR reconstruction met on
    the way back (the last enhanced block's, i.e. the first one undone)."""

    def __init__(self, channel_in=3, channel_out=3, subnet_constructor=None, e_blocks=5, v_blocks=3, down_num=2,
                 gmm_components=5):
        super(SAINet, self).__init__()
        current_channel = channel_in

        operations = []
        for i in range(down_num):
            b = HaarDownsampling(current_channel)
            operations.append(b)
            current_channel *= 4
        self.haar_operations = nn.ModuleList(operations)

        operations = []
        for j in range(e_blocks):
            b = EnhancedInvBlock(subnet_constructor, current_channel, channel_out)
            operations.append(b)
        self.down_operations = nn.ModuleList(operations)

        operations = []
        for k in range(v_blocks):
            b = VanillaInvBlock(subnet_constructor, current_channel, channel_out)
            operations.append(b)
        self.comp_operations = nn.ModuleList(operations)

        self.gmm = GaussianMixture(gmm_components)

    def forward(self, x, rev=False):
        out = x
        if not rev:
            for op in self.haar_operations:
                out = op.forward(out, rev)
            for op in self.down_operations:
                out = op.forward(out, rev)
            for op in self.comp_operations:
                out = op.forward(out, rev)
        else:
            for op in reversed(self.comp_operations):
                out = op.forward(out, rev)
            for op in reversed(self.down_operations):
                out = op.forward(out, rev)
            for op in reversed(self.haar_operations):
                out = op.forward(out, rev)
        return out, self.down_operations[-1].LR


#: their option files (codes/options/train/train_SAIN_JPEG_g_5_e_{5_v3_x2,10_v6_x4}.yml):
#: network block counts and mixture size, and the train: block of the step.
AUTHORS_NETWORK = {2: {"e_blocks": 5, "v_blocks": 3, "gmm_components": 5},
                   4: {"e_blocks": 10, "v_blocks": 6, "gmm_components": 5}}
AUTHORS_TRAIN = {2: {"lambda_fit_forw": 4.0, "lambda_rec_back": 1.0},
                 4: {"lambda_fit_forw": 16.0, "lambda_rec_back": 1.0}}
AUTHORS_RECIPE = {"batch_size": 16, "GT_size": 128, "use_flip": True, "use_rot": True, "lr": 2e-4,
                  "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-5, "niter": 500_000,
                  "lr_steps": [100_000, 200_000, 300_000, 400_000], "lr_gamma": 0.5,
                  "pixel_criterion_forw": "l2", "pixel_criterion_back": "l1", "gradient_clipping": 10,
                  "comp_format": "JPEG", "comp_quality": 75, "manual_seed": 10}


def authors_state_dict_keys(scale, e_blocks, v_blocks):
    """The keys of their saved state dict, written out by hand from the names in inv_arch.py
    (not from this transcription): per Haar step ``haar_operations.i.haar_weights``; per enhanced
    block subnets E, F, G, H and per vanilla block F, G, H, each conv1..conv5 weight and bias; the
    mixture's ``gmm.gmm_para``."""
    convs = [f"conv{c}.{p}" for c in range(1, 6) for p in ("weight", "bias")]
    keys = {f"haar_operations.{i}.haar_weights" for i in range(int(math.log2(scale)))}
    keys |= {f"down_operations.{j}.{n}.{c}" for j in range(e_blocks) for n in "EFGH" for c in convs}
    keys |= {f"comp_operations.{k}.{n}.{c}" for k in range(v_blocks) for n in "FGH" for c in convs}
    return keys | {"gmm.gmm_para"}


def define(scale, e_blocks=None, v_blocks=None, gmm_components=None, gc=32):
    """networks.define: SAINet(3, 3, subnet('DBNet', 'xavier'), e, v, log2(scale), K) with the
    option file's numbers unless given."""
    sizes = AUTHORS_NETWORK.get(scale, {})
    return SAINet(3, 3, subnet('DBNet', 'xavier', gc=gc),
                  sizes["e_blocks"] if e_blocks is None else e_blocks,
                  sizes["v_blocks"] if v_blocks is None else v_blocks,
                  int(math.log2(scale)),
                  sizes["gmm_components"] if gmm_components is None else gmm_components)


# --- modules/quantization.py ---------------------------------------------------------------------


class Quant(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input):
        input = torch.clamp(input, 0, 1)
        output = (input * 255.).round() / 255.
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class Quantization(nn.Module):
    def forward(self, input):
        return Quant.apply(input)


# --- modules/loss.py -----------------------------------------------------------------------------


class ReconstructionLoss(nn.Module):
    """Per-image sums over C·H·W, mean over the batch: 'l2' squares, 'l1' sqrt(d² + 1e-6)."""

    def __init__(self, losstype='l2', eps=1e-6):
        super(ReconstructionLoss, self).__init__()
        self.losstype = losstype
        self.eps = eps

    def forward(self, x, target):
        if self.losstype == 'l2':
            return torch.mean(torch.sum((x - target)**2, (1, 2, 3)))
        elif self.losstype == 'l1':
            diff = x - target
            return torch.mean(torch.sum(torch.sqrt(diff * diff + self.eps), (1, 2, 3)))
        raise ValueError(f"reconstruction loss type {self.losstype!r}")


# --- compressor.py -------------------------------------------------------------------------------


class RealComp:
    """REALCOMP: each image clamped to [0,1], rounded to 8 bits, saved by Pillow (format JPEG,
    the given quality, Pillow's default 4:2:0 chroma subsampling) and decoded; no gradient.
    Theirs returns the batch on CUDA; here it comes back on the input's device and dtype."""

    def __init__(self, format='JPEG', quality=75):
        self.format = format
        self.quality = quality

    def __call__(self, tensors):
        results = []
        for tensor in tensors:
            img = tensor.squeeze().float().cpu().detach().clamp(0, 1)
            img = (img.numpy() * 255.0).round()
            img = Image.fromarray(np.transpose(img, (1, 2, 0)).astype(np.uint8))
            with BytesIO() as f:
                img.save(f, format=self.format, quality=self.quality)
                f.seek(0)
                img_jpg = Image.open(f)
                img_jpg.load()
            results.append(torch.from_numpy(np.asarray(img_jpg, dtype=np.float32) / 255.).permute(2, 0, 1))
        return torch.stack(results, 0).to(device=tensors.device, dtype=tensors.dtype)


# --- jpeg.py + jpeg_utils.py: DiffJPEG(differentiable=True, quality) ---------------------------------

y_table = torch.tensor(
    [[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
     [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
c_table = torch.full((8, 8), 99.0)
c_table[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]],
                               dtype=torch.float32)


def diff_round(input_tensor):
    """Their rounding, forward and backward: x − (1/π)·Σ_{n=1..9} (−1)^{n+1}/n · sin(2πnx)."""
    test = 0
    for n in range(1, 10):
        test += math.pow(-1, n + 1) / n * torch.sin(2 * math.pi * n * input_tensor)
    return input_tensor - 1 / math.pi * test


def quality_to_factor(quality):
    if quality < 50:
        quality = 5000. / quality
    else:
        quality = 200. - quality * 2
    return quality / 100.


def _dct_tensors():
    dct = np.zeros((8, 8, 8, 8), dtype=np.float32)
    idct = np.zeros((8, 8, 8, 8), dtype=np.float32)
    for x, y, u, v in itertools.product(range(8), repeat=4):
        dct[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos((2 * y + 1) * v * np.pi / 16)
        idct[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos((2 * v + 1) * y * np.pi / 16)
    alpha = np.array([1. / np.sqrt(2)] + [1] * 7)
    return (torch.from_numpy(dct), torch.from_numpy(np.outer(alpha, alpha) * 0.25).float(),
            torch.from_numpy(idct), torch.from_numpy(np.outer(alpha, alpha)).float())


def chroma_repeat(x, k=2):
    """chroma_upsampling's ``repeat`` (a nearest-neighbour ×2 of a (B,h,w) plane)."""
    height, width = x.shape[1:3]
    x = x.unsqueeze(-1)
    x = x.repeat(1, 1, k, k)
    return x.view(-1, height * k, width * k)


class DiffJPEG(nn.Module):
    """Their training-time JPEG: RGB in [0,1] (B,3,H,W), H and W multiples of 16 -> the decoded
    image in [0,1]. Float JFIF YCbCr, 2×2 average chroma subsampling, float 8×8 DCT, division by
    the IJG tables × quality_to_factor(quality) (not rounded to integers), their Fourier-series
    rounding (forward too), nearest-neighbour chroma upsampling, clamp to [0,255]. Their matrices
    and tables are nn.Parameters outside the optimised network; here they are constants."""

    def __init__(self, differentiable=True, quality=75):
        super(DiffJPEG, self).__init__()
        self.rounding = diff_round if differentiable else torch.round
        self.factor = quality_to_factor(quality)
        self.dct, self.dct_scale, self.idct, self.idct_alpha = _dct_tensors()
        self.rgb2ycc = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                                     [0.5, -0.418688, -0.081312]]).T
        self.ycc2rgb = torch.tensor([[1., 0., 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]]).T

    def _code(self, plane, table):
        """compress (block_splitting, dct_8x8, quantize) then decompress (dequantize, idct_8x8,
        block_merging) of one (B,h,w) plane."""
        b, h, w = plane.shape
        dev = plane.device
        blocks = plane.view(b, h // 8, 8, -1, 8).permute(0, 1, 3, 2, 4).contiguous().view(b, -1, 8, 8)
        coef = self.dct_scale.to(dev) * torch.tensordot(blocks - 128, self.dct.to(dev), dims=2)
        q = table.to(dev) * self.factor
        coef = self.rounding(coef.float() / q) * q
        pixels = 0.25 * torch.tensordot(coef * self.idct_alpha.to(dev), self.idct.to(dev), dims=2) + 128
        return pixels.view(b, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).contiguous().view(b, h, w)

    def forward(self, x):
        height, width = x.shape[2], x.shape[3]
        image = torch.tensordot((x * 255).permute(0, 2, 3, 1), self.rgb2ycc.to(x.device), dims=1)
        image = image + torch.tensor([0., 128., 128.], device=x.device)
        cb = F.avg_pool2d(image[..., 1].unsqueeze(1), 2).squeeze(1)
        cr = F.avg_pool2d(image[..., 2].unsqueeze(1), 2).squeeze(1)
        y = self._code(image[..., 0], y_table)
        cb = chroma_repeat(self._code(cb, c_table))
        cr = chroma_repeat(self._code(cr, c_table))
        ycc = torch.stack([y, cb, cr], 3) + torch.tensor([0, -128., -128.], device=x.device)
        rgb = torch.tensordot(ycc, self.ycc2rgb.to(x.device), dims=1).permute(0, 3, 1, 2)
        rgb = torch.min(255 * torch.ones_like(rgb), torch.max(torch.zeros_like(rgb), rgb))
        assert rgb.shape[-2:] == (height, width)
        return rgb / 255


# --- model.py: SAIN.optimize_parameters -------------------------------------------------------------


def authors_losses(net, hr, lr_ref, diffcomp, realcomp, lambda_fit_forw, lambda_rec_back=1.0,
                   gaussian_scale=1.0, z=None):
    """One training step's losses, as ``optimize_parameters`` computes them (before backward).

    hr (B,3,H,W) in [0,1]; lr_ref (B,3,H/s,W/s): their dataset's LQ, the bicubic LR (MATLAB
    imresize, 8-bit files); diffcomp: the differentiable JPEG the LR goes through (theirs:
    :class:`DiffJPEG` at quality 75); realcomp: the real JPEG of the targets (theirs:
    :class:`RealComp` at 75). z: the latent fed to the inverse (before ``gaussian_scale``); None
    draws it from ``net.gmm`` as they do. Returns every term and ``loss`` = l_back_rec +
    (l_forw_fit1 + l_forw_fit2 + l_reg + l_rel) / 4, plus the tensors the terms were made of."""
    forw = ReconstructionLoss('l2')  # pixel_criterion_forw
    back = ReconstructionLoss('l1')  # pixel_criterion_back
    quantization = Quantization()

    output, LR = net(x=hr)
    zshape = output[:, 3:, :, :].shape
    LR_ref = lr_ref.detach()
    l_forw_fit1 = lambda_fit_forw * forw(LR, LR_ref)

    LR = quantization(LR)
    LR_ = diffcomp(LR)
    if z is None:
        z = net.gmm.sample(tuple(zshape)).to(hr.device)
    y_ = torch.cat((LR_, gaussian_scale * z), dim=1)
    x_samples, LR_recon = net(y_, rev=True)
    x_samples_recon = x_samples[:, :3, :, :]
    l_back_rec = lambda_rec_back * back(x_samples_recon, hr)

    LR_ref = realcomp(lr_ref.detach())
    l_forw_fit2 = lambda_fit_forw * forw(output[:, :3, :, :], LR_ref)
    l_reg = lambda_fit_forw * forw(LR, LR_recon)
    l_rel = lambda_fit_forw * forw(output[:, :3, :, :], realcomp(quantization(LR)))

    loss = l_back_rec + (l_forw_fit1 + l_forw_fit2 + l_reg + l_rel) / 4
    return {"loss": loss, "l_back_rec": l_back_rec, "l_forw_fit1": l_forw_fit1, "l_forw_fit2": l_forw_fit2,
            "l_reg": l_reg, "l_rel": l_rel, "LR": LR, "LR_compressed": LR_, "z": z, "sr": x_samples_recon,
            "LR_recon": LR_recon, "LR_compressed_estimate": output[:, :3]}


def authors_optimizer(net, lr=2e-4, weight_decay=1e-5, betas=(0.9, 0.999),
                      lr_steps=(100_000, 200_000, 300_000, 400_000), lr_gamma=0.5):
    """Adam over the parameters that require gradients (every subnet and ``gmm.gmm_para``; not
    the Haar weights) and MultiStepLR_Restart without restarts (= torch's MultiStepLR),
    stepped once per iteration."""
    params = [v for v in net.parameters() if v.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, list(lr_steps), gamma=lr_gamma)


def authors_training_step(net, optimizer, scheduler, hr, lr_ref, diffcomp, realcomp, lambda_fit_forw,
                          gradient_clipping=10, **kwargs):
    """zero_grad, :func:`authors_losses`, backward, clip_grad_norm_(all parameters, 10), step,
    then the scheduler (train.py: update_learning_rate after each step). Returns the terms."""
    optimizer.zero_grad()
    terms = authors_losses(net, hr, lr_ref, diffcomp, realcomp, lambda_fit_forw, **kwargs)
    terms["loss"].backward()
    if gradient_clipping:
        nn.utils.clip_grad_norm_(net.parameters(), gradient_clipping)
    optimizer.step()
    scheduler.step()
    return terms
