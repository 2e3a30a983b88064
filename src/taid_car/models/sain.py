"""SAIN, the compression-aware invertible rescaler (Yang et al., "Self-Asymmetric Invertible
Network for Compression-Aware Image Rescaling", AAAI 2023; yang-jin-hai/SAIN).

The authors' network (``codes/models/modules/inv_arch.py``; docs/sain.md describes it, and
``tests/sain_authors.py`` transcribes it), with their module and parameter names, so a state dict
their ``save_network`` wrote loads strictly into :attr:`SAINDownscaler.net`
(:func:`~taid_car.models.checkpoints.load_authors_checkpoint`). It is built from the shared
invertible blocks of :mod:`taid_car.models.invertible` (Haar transform, IRN's coupling block =
SAIN's "vanilla" block, dense subnets) and two parts of its own, kept here:

* :class:`EnhancedInvBlock`: a coupling block that also yields an LR (subnets E, F, G, H);
* :class:`GaussianMixture`: the learned latent, one isotropic 1-D mixture of K normals.

:class:`SAINNet`: log2(s) Haar steps, then E enhanced and V vanilla blocks, all at H/s on 3·s²
channels. Forward HR (B,3,H,W) -> (out (B,3s²,H/s,W/s) = [compressed-LR estimate (3) | z],
clean LR (B,3,H/s,W/s), the last enhanced block's); ``rev=True`` maps [LR′ | z] -> (HR, the clean
LR the inverse recovers on its way back).

:class:`SAINDownscaler` (``model=sain``) sends the clean LR; its :meth:`~SAINDownscaler.inverse`,
:class:`SAINUpscaler`, is the tied upscaler (LR′ + z drawn from the mixture -> SR). Values: HR in
[0,1]; LRs are neither clamped nor rounded here (the LR channel rounds and codes them).
"""

from __future__ import annotations

import torch
from torch import nn

from taid_car.errors import ConfigError
from taid_car.models.downscaler import Downscaler
from taid_car.models.invertible import DenseBlock, HaarDownsampling, InvBlockExp, haar_stages, per_hr_value
from taid_car.ops.imresize import bicubic_downscale

#: per preset and scale: enhanced blocks, vanilla blocks, growth channels of the dense subnets.
#: ``paper``: the authors' option files (2,015,437 / 6,493,763 trained parameters at x2 / x4).
#: ``tiny``: their depth with narrow subnets, for the CPU, sized like IRN tiny (172,656 / 618,048):
#: 172,487 at x2 (growth 7, -0.1 %) and 652,583 at x4 (growth 5, +5.6 %; growth 4 would be 523,939,
#: -15 %). The depth is kept: it is what lets an invertible rescaler's inverse ignore the latent's
#: noise (IRN tiny: 2 blocks per stage left z's noise in the SR, models/irn.py).
SAIN_PRESETS: dict[str, dict[int, dict[str, int]]] = {
    "paper": {2: {"e_blocks": 5, "v_blocks": 3, "gc": 32}, 4: {"e_blocks": 10, "v_blocks": 6, "gc": 32}},
    "tiny": {2: {"e_blocks": 5, "v_blocks": 3, "gc": 7}, 4: {"e_blocks": 10, "v_blocks": 6, "gc": 5}},
}


class EnhancedInvBlock(nn.Module):
    """SAIN's enhanced coupling block on (x1: ``split`` channels | x2: the rest), exactly
    invertible. Forward: ``LR = x1 + E(x2)``, ``y1 = LR − F(x2)``, ``s = clamp·(2σ(H(y1)) − 1)``,
    ``y2 = x2·exp(s) + G(y1)``; returns ([y1 | y2], LR). Inverse: ``x2 = (y2 − G(y1))·exp(−s)``,
    ``LR = y1 + F(x2)``, ``x1 = LR − E(x2)``; returns ([x1 | x2], LR)."""

    def __init__(self, channels: int, split: int, gc: int = 32, clamp: float = 1.0) -> None:
        super().__init__()
        self.split_len1, self.split_len2 = split, channels - split
        self.clamp = clamp
        self.E = DenseBlock(self.split_len2, self.split_len1, gc)
        self.F = DenseBlock(self.split_len2, self.split_len1, gc)
        self.G = DenseBlock(self.split_len1, self.split_len2, gc)
        self.H = DenseBlock(self.split_len1, self.split_len2, gc)

    def _scale(self, y1: torch.Tensor) -> torch.Tensor:
        return self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.split_len1], x[:, self.split_len1 :]
        if not rev:
            lr = x1 + self.E(x2)
            y1 = lr - self.F(x2)
            y2 = x2 * torch.exp(self._scale(y1)) + self.G(y1)
            return torch.cat((y1, y2), 1), lr
        y2 = (x2 - self.G(x1)) / torch.exp(self._scale(x1))
        lr = x1 + self.F(y2)
        return torch.cat((lr - self.E(y2), y2), 1), lr


class GaussianMixture(nn.Module):
    """The latent's learned distribution: one 1-D mixture of ``components`` normals for every
    latent value. ``gmm_para`` (3, K) = rows [mixture logits π, means μ, log-variances],
    initialised at 1e-4·N(0, 1) (equal weights, ≈ N(0, 1))."""

    def __init__(self, components: int = 5) -> None:
        super().__init__()
        self.gmm_para = nn.Parameter(0.0001 * torch.randn(3, components))

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of ``shape``: per value, a component picked by a hard Gumbel-softmax of the
        mixture weights (temperature 1, straight-through to π) and that component's
        reparametrised normal draw μ_k + exp(½·clamp(logvar_k, −20, 20))·ε. The authors'
        ``sample`` draw for draw: the same random numbers in the same order, so under one seed
        of the global generator (``generator`` None) the two give the same z."""
        pis, mus, logvars = self.gmm_para
        std = torch.exp(0.5 * torch.clamp(logvars, -20, 20))
        weights = pis.softmax(dim=0)
        weights = weights / weights.sum(-1, keepdim=True)  # torch's Categorical normalises them so
        full = (*shape, self.gmm_para.shape[1])
        options = {"dtype": self.gmm_para.dtype, "device": self.gmm_para.device}
        gumbels = -torch.empty(full, **options).exponential_(generator=generator).log()
        soft = (weights.log() + gumbels).softmax(-1)
        hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
        choice = hard - soft.detach() + soft
        samples = mus + torch.empty(full, **options).normal_(generator=generator) * std
        return (choice * samples).sum(dim=-1)


class SAINNet(nn.Module):
    """SAIN's network at ×2^``stages`` with the authors' module names: ``haar_operations`` (one
    Haar step per ×2), ``down_operations`` (``e_blocks`` enhanced blocks), ``comp_operations``
    (``v_blocks`` vanilla blocks), ``gmm`` (the latent's mixture).

    Args:
        stages: log2 of the scale.
        e_blocks, v_blocks: enhanced and vanilla blocks (e_blocks >= 1: the clean LR is an
            enhanced block's).
        gc: growth channels of the dense subnets (the authors' 32).
        components: mixture components (the authors' 5).
        channels: image channels (3), also the LR part's.
    """

    def __init__(self, stages: int, e_blocks: int, v_blocks: int, gc: int = 32, components: int = 5,
                 channels: int = 3) -> None:
        super().__init__()
        if e_blocks < 1 or v_blocks < 0 or gc < 1 or components < 1:
            raise ConfigError(f"SAIN: e_blocks={e_blocks} (>= 1), v_blocks={v_blocks} (>= 0), gc={gc} (>= 1), "
                              f"components={components} (>= 1)")
        current = channels
        haar = []
        for _ in range(stages):
            haar.append(HaarDownsampling(current))
            current *= 4
        self.haar_operations = nn.ModuleList(haar)
        self.down_operations = nn.ModuleList(EnhancedInvBlock(current, channels, gc) for _ in range(e_blocks))
        self.comp_operations = nn.ModuleList(InvBlockExp(current, channels, gc) for _ in range(v_blocks))
        self.gmm = GaussianMixture(components)
        self.scale, self.channels = 2**stages, channels

    def forward(self, x: torch.Tensor, rev: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``rev=False``: HR -> ([compressed-LR estimate | z], clean LR); ``rev=True``:
        [LR′ | z] -> (HR, the clean LR recovered by the last enhanced block, the first undone)."""
        if not rev:
            for op in self.haar_operations:
                x = op(x)
            for block in self.down_operations:
                x, lr = block(x)
            for op in self.comp_operations:
                x = op(x)
            return x, lr
        for op in reversed(self.comp_operations):
            x = op(x, rev=True)
        x, lr = self.down_operations[-1](x, rev=True)
        for block in reversed(self.down_operations[:-1]):
            x, _ = block(x, rev=True)
        for op in reversed(self.haar_operations):
            x = op(x, rev=True)
        return x, lr


def _sizes(scale: int, preset: str, e_blocks: int | None, v_blocks: int | None, gc: int | None) -> dict[str, int]:
    """The preset's sizes at ``scale`` with the given overrides; a ConfigError naming what is unknown."""
    if preset not in SAIN_PRESETS:
        raise ConfigError(f"SAIN preset={preset!r}: one of {', '.join(SAIN_PRESETS)}")
    given = {k: int(v) for k, v in (("e_blocks", e_blocks), ("v_blocks", v_blocks), ("gc", gc)) if v is not None}
    sizes = {**SAIN_PRESETS[preset].get(scale, {}), **given}
    if len(sizes) < 3:
        raise ConfigError(f"scale={scale}: SAIN's presets are for x2 and x4 (the authors' sizes); at x{scale} give "
                          "model.downscaler.e_blocks, v_blocks and gc")
    return sizes


class SAINDownscaler(Downscaler):
    """SAIN's forward pass as a downscaler: HR (B,3,H,W) in [0,1] -> the clean LR (B,3,H/s,W/s)
    of :class:`SAINNet` (not rounded here: the LR channel rounds and codes it). Its
    :meth:`inverse` is the tied upscaler.

    Regularisers: the authors' four forward terms, each their per-image sum of squares (mean over
    the batch) divided by the 3·H·W HR values (:func:`~taid_car.models.invertible.per_hr_value`,
    the scale of the Rescaler's mean L1) and by 4 (their ``(fit1 + fit2 + reg + rel) / 4``), so
    their weight λ_fit_forw = scale² applies unchanged:

    * ``fit1``: the unrounded clean LR vs the 8-bit bicubic LR (their l_forw_fit1);
    * ``fit2``: the compressed-LR estimate vs the **real** codec's decode of the 8-bit bicubic
      LR (l_forw_fit2);
    * ``reg``: the rounded clean LR vs the clean LR the inverse recovers from the coded LR (l_reg);
    * ``rel``: the compressed-LR estimate vs the real codec's decode of the network's own rounded
      LR (l_rel).

    The real codec is the run's LR channel (:attr:`channel`, ``channel.code``: JPEG at the run's
    quality and chroma subsampling, no gradient); under ``png`` it is the 8-bit rounding.

    Args:
        scale: 2 or 4 (another power of two with e_blocks, v_blocks and gc given).
        preset: ``tiny`` (CPU) or ``paper`` (the authors' sizes): :data:`SAIN_PRESETS`.
        e_blocks, v_blocks, gc: override the preset's enhanced / vanilla blocks and growth.
        gaussian_scale: the latent the inverse gets is this times a mixture draw (the authors'
            ``gaussian_scale``, unset in their configs: 1; 0 gives z = 0).
        gmm_components: mixture components (the authors' 5).
    """

    regularizer_names = ("fit1", "fit2", "reg", "rel")

    def __init__(self, scale: int, preset: str = "tiny", e_blocks: int | None = None, v_blocks: int | None = None,
                 gc: int | None = None, gaussian_scale: float = 1.0, gmm_components: int = 5) -> None:
        super().__init__(scale)
        if not gaussian_scale >= 0:
            raise ConfigError(f"SAIN gaussian_scale={gaussian_scale!r}: the factor of the latent's draw, >= 0")
        self.gaussian_scale = float(gaussian_scale)
        stages = haar_stages(scale, "SAIN")
        self.net = SAINNet(stages, components=int(gmm_components), **_sizes(self.scale, preset, e_blocks, v_blocks, gc))
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._recovered: tuple[torch.Tensor, torch.Tensor] | None = None

    @Downscaler.channel.setter
    def channel(self, channel) -> None:
        """The run's channel; a JPEG quality range is refused: the real-JPEG targets need the
        batch's one quality."""
        if getattr(channel, "is_range", False):
            raise ConfigError(f"channel.quality={list(channel.quality)}: model=sain codes its real-JPEG targets at "
                              "the channel's one quality (the authors' 75); a range is drawn per batch inside "
                              "the channel. Give one quality, e.g. channel.quality=75")
        Downscaler.channel.fset(self, channel)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        height, width = hr.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"SAIN x{self.scale} needs HR sides that are multiples of {self.scale}, "
                             f"got shape {tuple(hr.shape)}")
        out, lr = self.net(hr)
        self._last = (lr, out[:, :3]) if torch.is_grad_enabled() else None
        self._recovered = None
        return lr

    def latent(self, lr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z for an LR (B,3,h,w): a mixture draw of shape (B,3s²−3,h,w), in the LR's dtype
        (``gaussian_scale`` not applied)."""
        b, c, h, w = lr.shape
        return self.net.gmm.sample((b, c * (self.scale**2 - 1), h, w), generator).to(lr.dtype)

    def recover(self, lr: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse of [LR′ | gaussian_scale·z] -> (SR, the clean LR it recovers); with
        gradients on, kept for :meth:`regularizers` (``reg``), tagged with ``lr``."""
        sr, clean = self.net(torch.cat([lr, self.gaussian_scale * z], 1), rev=True)
        if torch.is_grad_enabled():
            self._recovered = (lr, clean)
        return sr, clean

    def regularizers(self, hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``fit1``, ``fit2``, ``reg``, ``rel`` of the last training forward (see the class).
        ``lr``: the LR through the channel's training forward. The clean LR the inverse recovered
        from it is the tied upscaler's; with another upscaler the inverse is run here (z drawn)."""
        if self._last is None:
            raise RuntimeError("SAINDownscaler.regularizers needs a forward with gradients first")
        (raw, estimate), self._last = self._last, None
        kept, self._recovered = self._recovered, None
        recovered = kept[1] if kept is not None and kept[0] is lr else self.recover(lr, self.latent(lr))[1]
        with torch.no_grad():
            bicubic = torch.round(bicubic_downscale(hr, self.scale).clamp(0, 1) * 255) / 255  # their 8-bit LR files
            jpeg_of_bicubic = self.channel.code(bicubic).lr
            jpeg_of_own = self.channel.code(raw).lr  # the channel rounds it first, as their Quantization
        rounded = self.quantizer(raw)

        def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return per_hr_value(((a - b) ** 2).sum(dim=(1, 2, 3)), hr) / 4

        return {"fit1": term(raw, bicubic), "fit2": term(estimate, jpeg_of_bicubic),
                "reg": term(rounded, recovered), "rel": term(estimate, jpeg_of_own)}

    def inverse(self) -> SAINUpscaler:
        """The tied upscaler: this network run backwards (it shares every weight)."""
        return SAINUpscaler(self)


class SAINUpscaler(nn.Module):
    """SAIN's inverse pass: LR (B,3,h,w) (the coded LR) -> SR (B,3,h·s,w·s), with z drawn from the
    learned mixture (times ``gaussian_scale``) as the authors do, in training and test. Training
    draws from the global generator (a resumed run draws what the run left alone would);
    evaluation (``eval()``) from a generator seeded 0 for every call, so a score does not change
    between two runs of the same checkpoint (as IRN's inverse)."""

    def __init__(self, downscaler: SAINDownscaler) -> None:
        super().__init__()
        self.downscaler = downscaler  # a submodule: the same weights, not a copy
        self.scale = downscaler.scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        generator = None if self.training else torch.Generator(device=lr.device).manual_seed(0)
        return self.downscaler.recover(lr, self.downscaler.latent(lr, generator))[0]
