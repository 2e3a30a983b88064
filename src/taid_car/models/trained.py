"""A trained pair rebuilt from a ``taid_car.run`` checkpoint: the one place that reads one.

The checkpoint records its run config (``taid_car_config``); the modules are instantiated
from it and get their weights. Used by ``evaluate``, ``rescale``, ``crops``, resuming and
``upscaler.init_from``. Imports no Lightning.

A checkpoint is untrusted: it is read with ``weights_only=True``
(:func:`~taid_car.models.checkpoints.read_checkpoint_file`), and its saved config may only name
the suite's own modules: every ``_target_`` in it is checked by :func:`check_targets` before
anything is imported from elsewhere or called. Weights holding NaN or ±inf are refused too,
for every reader alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from taid_car.channel import LOSSLESS, LRChannel
from taid_car.errors import ConfigError, one_line
from taid_car.models.checkpoints import CheckpointError, non_finite_entry, read_checkpoint_file
from taid_car.models.downscaler import Downscaler, crop_multiple


def method_name(config: Mapping) -> str:
    """Table label of a run config, e.g. ``car & edsr_tiny``; a pair trained through a lossy LR
    channel says which, e.g. ``car & edsr_tiny [jpeg q75 4:2:0]``."""
    label = pair_label(config)
    channel = channel_of(config)
    return label if channel.name == "png" else f"{label} [{channel.label}]"


def pair_label(config: Mapping) -> str:
    """``<model> & <upscaler>`` of a config (a fixed method's label: no training channel)."""
    return f"{config['model']['name']} & {config['upscaler']['name']}"


def channel_of(config: Mapping):
    """The :class:`~taid_car.channel.LRChannel` a run config trained through (its ``channel``
    group; png when it has none, as configs written before the channel existed)."""
    from omegaconf import DictConfig, OmegaConf

    from taid_car.channel import build_channel

    node = config.get("channel")
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return build_channel(dict(node) if node else None)


@dataclass
class TrainedPair:
    """A trained downscaler/upscaler, its scale, table label and run config, on ``device``, and
    the LR channel its LR is stored through (``channel``: the checkpoint's own, evaluated at one
    quality: :meth:`~taid_car.channel.LRChannel.evaluation`; :meth:`through` changes it)."""

    method: str
    scale: int
    downscaler: Downscaler
    upscaler: nn.Module
    config: dict = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channel: LRChannel = field(default_factory=lambda: LOSSLESS)

    @property
    def lr_channels(self) -> int:
        """Channels of its LR: 3, or 1 for a colorization's gray."""
        return self.downscaler.out_channels

    @property
    def crop(self) -> int:
        """HR sides are cropped to a multiple of this (lcm of scale and the downscaler's need)."""
        return crop_multiple(self.downscaler)

    def at_scale(self, scale: int) -> TrainedPair:
        """This pair applied recursively for ×``scale``, a power of its own scale (itself when
        equal): :func:`taid_car.models.recursive.recursive_pair`; the label says how."""
        from taid_car.models.recursive import recursion_label, recursion_levels, recursive_pair

        if scale == self.scale:
            return self
        levels = recursion_levels(int(scale), self.scale)
        down, up = recursive_pair(self.downscaler, self.upscaler, int(scale))
        label = recursion_label(self.method, self.scale, levels)
        return TrainedPair(label, int(scale), down, up, self.config, self.device, self.channel).to(self.device)

    def through(self, channel: LRChannel) -> TrainedPair:
        """The same pair with its LR stored through ``channel`` (evaluated at one quality)."""
        return replace(self, channel=channel.evaluation())

    @torch.inference_mode()
    def downscale(self, hr: torch.Tensor) -> torch.Tensor:
        """HR (1,3,H,W) in [0,1], H, W multiples of :attr:`crop` -> LR (1,C,H/s,W/s) as its
        channel stores it (8 bit, then png / jpeg / webp), on the CPU. A recursion's intermediate
        LRs are rounded to 8 bit only; the last one goes through the channel."""
        from taid_car.scoring.pipeline import downscale

        return downscale(self.downscaler, hr.to(self.device), self.channel).lr.cpu()

    @torch.inference_mode()
    def lr_files(self, hr: torch.Tensor) -> list[bytes]:
        """The files (bytes) the LRs of HR (B,3,H,W) are stored as through its channel: what
        :meth:`downscale` decodes; ``rescale downscale`` writes them."""
        return self.channel.encode(self.downscaler(hr.to(self.device)))

    @torch.inference_mode()
    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """LR (1,C,h,w) in [0,1] -> SR (1,3,h*s,w*s), float (not clamped; scoring/saving clamp), on the CPU."""
        return self.upscaler(lr.to(self.device)).float().cpu()

    def to(self, device: torch.device | str) -> TrainedPair:
        """Both modules in eval mode on ``device`` (in place); returns self."""
        self.device = torch.device(device)
        self.downscaler.eval().to(self.device)
        self.upscaler.eval().to(self.device)
        return self


def load_pair(ckpt_path: str | Path) -> TrainedPair:
    """The :class:`TrainedPair` of a ``taid_car.run`` checkpoint (eval mode, CPU)."""
    downscaler, upscaler, config = load_trained_pair(ckpt_path)
    try:
        channel = channel_of(config).evaluation()
    except ConfigError as err:  # a saved channel the suite refuses
        raise CheckpointError(f"{ckpt_path}: its saved config's channel is refused: {one_line(err)}") from err
    return TrainedPair(method_name(config), int(config["scale"]), downscaler, upscaler, config,
                       channel=channel).to("cpu")


def load_trained_pair(ckpt_path: str | Path) -> tuple[nn.Module, nn.Module, dict]:
    """(downscaler, upscaler, run config) rebuilt from a checkpoint written by ``taid_car.run``.

    The modules are instantiated from the config saved in the checkpoint and get its weights;
    a checkpoint without that config, or whose weights do not fit, is an error naming the file.
    """
    from hydra.errors import InstantiationException

    from taid_car.models.pair import build_pair

    path = Path(ckpt_path)
    checkpoint, config = read_run_checkpoint(path)
    groups = {}
    for group, node_key in (("model", "downscaler"), ("upscaler", "net")):
        section = config.get(group)
        node = section.get(node_key) if isinstance(section, dict) else None
        if group == "upscaler" and isinstance(section, dict) and section.get("tied"):
            node = {}  # the downscaler's own inverse: nothing of its own to build
        if not isinstance(node, dict):
            raise CheckpointError(f"{path}: its saved config has no {group}.{node_key} to rebuild the pair from")
        check_targets(node, f"{path}: saved config {group}.{node_key}")
        groups[group] = section
    try:
        downscaler, upscaler = build_pair(groups["model"], groups["upscaler"])
    except (InstantiationException, ConfigError) as err:  # a value in the file's config the module refuses
        raise CheckpointError(f"{path}: its saved config does not build the pair: {one_line(err)}") from err
    for prefix, module in (("downscaler.", downscaler), ("upscaler.", upscaler)):
        _load_part(module, checkpoint, prefix, path)
    return downscaler, upscaler, config


def read_run_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(checkpoint, its run config) of a ``taid_car.run`` checkpoint, read with
    ``weights_only=True``: resuming, ``ckpt_path=last``, ``evaluate``, ``rescale``, ``crops`` and
    ``upscaler.init_from`` all read through here. :class:`CheckpointError` naming the file for
    anything else (a missing file: :class:`~taid_car.models.checkpoints.CheckpointNotFound`), a
    ``state_dict`` with NaN or ±inf in any floating tensor included (naming its first such key)."""
    path = Path(path)
    checkpoint = read_checkpoint_file(path)
    config = checkpoint.get("taid_car_config") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or not config:
        raise CheckpointError(f"{path}: not a taid_car checkpoint (no 'taid_car_config' entry)")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a taid_car checkpoint (no 'state_dict' entry)")
    bad = non_finite_entry(checkpoint["state_dict"])
    if bad is not None:
        reason = f"non-finite weights ({bad})"
        error = CheckpointError(f"{path}: {reason}: the file holds NaN or infinite weights, as a diverged "
                                f"run leaves them; use an earlier checkpoint")
        error.reason = reason
        raise error
    return checkpoint, upgrade_saved_config(config)


#: EDSR presets of earlier versions, as they were, for the checkpoints whose saved config names
#: them: ``irn_size`` (EDSR-tiny's 4 blocks at IRN tiny's size) is today's ``upscaler=edsr_irn_size``,
#: whose width the size rule gives (models/edsr.py: size_matched_width)
RETIRED_EDSR_PRESETS = {"irn_size": {"preset": "tiny", "n_feats": {2: 38, 4: 63, 8: 107}}}


def upgrade_saved_config(config: dict) -> dict:
    """A run config saved by an earlier version of the suite in today's layout (a copy; the
    others are returned as they are): an ``upscaler.net`` naming a retired EDSR preset
    (:data:`RETIRED_EDSR_PRESETS`) names ``tiny`` with that preset's feature count at its scale."""
    net = (config.get("upscaler") or {}).get("net") if isinstance(config.get("upscaler"), dict) else None
    retired = RETIRED_EDSR_PRESETS.get(net.get("preset")) if isinstance(net, dict) else None
    if retired is None or net.get("_target_") != "taid_car.models.edsr.build_edsr" or net.get("scale") not in retired["n_feats"]:
        return config
    upgraded = {**net, "preset": retired["preset"], "n_feats": retired["n_feats"][net["scale"]]}
    return {**config, "upscaler": {**config["upscaler"], "net": upgraded}}


#: factory functions a saved config may name besides the suite's ``nn.Module`` classes
TRUSTED_FACTORIES = ("taid_car.models.edsr.build_edsr",)


def check_targets(node, where: str) -> None:
    """Refuse (:class:`CheckpointError`) a config that would make ``hydra.utils.instantiate``
    call anything but the suite's own modules: every ``_target_`` at any depth must name a
    ``torch.nn.Module`` subclass defined in ``taid_car`` or one of :data:`TRUSTED_FACTORIES`.
    Only ``taid_car`` modules are imported to check; nothing is called."""
    if isinstance(node, dict):
        if "_target_" in node:
            _check_target(node["_target_"], where)
        for value in node.values():
            check_targets(value, where)
    elif isinstance(node, (list, tuple)):
        for value in node:
            check_targets(value, where)


def _check_target(target, where: str) -> None:
    from hydra.utils import get_object

    refused = CheckpointError(
        f"{where}: _target_ {target!r} is not one of the suite's modules (taid_car nn.Module classes "
        f"or {', '.join(TRUSTED_FACTORIES)}); refusing to build it from an untrusted file")
    if not isinstance(target, str) or not target.startswith("taid_car."):
        raise refused  # checked first: only taid_car modules are ever imported below
    try:
        obj = get_object(target)  # how instantiate will resolve it
    except Exception:  # noqa: BLE001 (whatever fails to resolve is refused)
        raise refused from None
    defined_in = getattr(obj, "__module__", None) or ""
    if isinstance(obj, type):
        trusted = issubclass(obj, nn.Module) and defined_in.startswith("taid_car.")
    else:
        trusted = callable(obj) and f"{defined_in}.{getattr(obj, '__qualname__', '')}" in TRUSTED_FACTORIES
    if not trusted:
        raise refused


def _load_part(module: nn.Module, checkpoint: dict, prefix: str, path: Path) -> None:
    state = checkpoint["state_dict"]
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the saved config's {prefix[:-1]}: {err}") from err


def init_upscaler_from(upscaler: nn.Module, ckpt_path: str | Path, upscaler_name: str, scale: int) -> dict:
    """Load the upscaler weights of another run's checkpoint (e.g. a ``model=bicubic`` run) into
    ``upscaler``; refuses a checkpoint trained with another upscaler or scale. Returns its config."""
    path = Path(ckpt_path)
    checkpoint, config = read_run_checkpoint(path)
    theirs = (config.get("upscaler", {}).get("name"), config.get("scale"))
    if theirs != (upscaler_name, int(scale)):
        raise CheckpointError(
            f"upscaler.init_from={path}: that checkpoint was trained with upscaler={theirs[0]} "
            f"scale={theirs[1]}; this run is upscaler={upscaler_name} scale={scale}"
        )
    _load_part(upscaler, checkpoint, "upscaler.", path)
    return config
