"""The one place a (downscaler, upscaler) pair is built from its config nodes.

``run`` (training), ``evaluate`` (fixed methods), checkpoints (:mod:`taid_car.models.trained`) and
the experiments all call :func:`build_pair`, so a pair is built the same way everywhere.

* ``model.downscaler``: a :class:`~taid_car.models.downscaler.Downscaler` target.
* ``upscaler.net``: an independent upscaler target; or ``upscaler.tied: true``, a *tied* upscaler:
  the downscaler's own inverse (``downscaler.inverse()``, part of the
  :class:`~taid_car.models.downscaler.Downscaler` contract: an ``nn.Module`` that shares its
  parameters, as an invertible network has, or None). Shared parameters are counted once
  (:func:`pair_parameter_counts`) and optimised once (the Rescaler's parameter groups).

A method whose downscaler has a tied inverse is paired with it (``conf/upscaler/inverse.yaml``)
unless the command line names another upscaler: :func:`pair_with_inverse`, so an experiment
preset's upscaler (``override /upscaler`` in ``conf/experiment/``) applies to the methods without
one and never replaces the inverse silently.

A model config also says what its fair baseline is (:mod:`taid_car.training.baseline`):
``model.baseline_model`` (bicubic unless it names another, e.g. ``gray``) with
``model.baseline_upscaler`` (the run's own upscaler unless it names an ``upscaler`` config; a
tied upscaler needs one, since bicubic has no inverse to tie to).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from torch import nn

from taid_car.errors import ConfigError
from taid_car.models.downscaler import Downscaler

#: the upscaler config of a tied inverse (``name: <model>_inverse``, ``tied: true``)
TIED_UPSCALER = "inverse"


def build_downscaler(model_cfg: Mapping) -> nn.Module:
    """``model_cfg.downscaler`` instantiated (Hydra), e.g. to ask it its crop multiple."""
    from hydra.utils import instantiate

    return instantiate(model_cfg["downscaler"])


def build_pair(model_cfg: Mapping, upscaler_cfg: Mapping) -> tuple[nn.Module, nn.Module]:
    """(downscaler, upscaler) from the ``model`` and ``upscaler`` config groups (dicts or
    DictConfigs). The downscaler is built first (so a seed gives the same weights as ever);
    ``upscaler_cfg.tied`` makes the upscaler ``downscaler.inverse()``."""
    from hydra.utils import instantiate

    downscaler = build_downscaler(model_cfg)
    if upscaler_cfg.get("tied"):
        inverse = downscaler.inverse() if isinstance(downscaler, Downscaler) else None
        if inverse is None:
            raise ConfigError(
                f"upscaler.tied=true: {type(downscaler).__name__} has no inverse() to tie the upscaler to; "
                "choose an upscaler with its own network (upscaler=edsr_tiny, ...)")
        return downscaler, inverse
    if not upscaler_cfg.get("net"):
        raise ConfigError("the upscaler config has neither a `net` to build nor `tied: true`")
    return downscaler, instantiate(upscaler_cfg["net"])


def has_tied_inverse(model_cfg: Mapping) -> bool:
    """Whether ``model_cfg``'s downscaler class has a tied inverse
    (:meth:`~taid_car.models.downscaler.Downscaler.has_inverse`), from its ``_target_``: nothing
    is built."""
    from hydra.utils import get_object

    target = get_object(str(model_cfg["downscaler"]["_target_"]))
    return isinstance(target, type) and issubclass(target, Downscaler) and target.has_inverse()


def pair_with_inverse(cfg, upscaler_named: bool) -> str | None:
    """The pairing rule of the method contract: a model whose downscaler has a tied inverse is
    paired with it, unless the command line named the upscaler (``upscaler_named``: e.g.
    ``model=irn upscaler=edsr_tiny``, IRN's encoder with EDSR-tiny). Another upscaler composed in
    by a preset (an experiment's ``override /upscaler``, which Hydra ranks above the model's own)
    is replaced in ``cfg`` (a run config, changed in place) by ``conf/upscaler/inverse.yaml``.
    Returns the name of the upscaler it replaced, or None when ``cfg`` is left as it was."""
    from omegaconf import OmegaConf, open_dict

    from taid_car.config import CONFIG_DIR

    if upscaler_named or cfg.upscaler.get("tied") or not has_tied_inverse(cfg.model):
        return None
    replaced = str(cfg.upscaler.get("name"))
    with open_dict(cfg):
        cfg.upscaler = OmegaConf.load(Path(CONFIG_DIR, "upscaler", f"{TIED_UPSCALER}.yaml"))
    return replaced


def pair_size(model_cfg: Mapping, upscaler_cfg: Mapping) -> int:
    """Parameters of the pair these config nodes build, each weight once (a tied upscaler adds
    none); built on the CPU with the global RNG left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        downscaler, upscaler = build_pair(model_cfg, upscaler_cfg)
    counts = pair_parameter_counts(downscaler, upscaler)
    return counts["downscaler"] + counts["upscaler"]


def edsr_width_of(model: str, scale: int) -> int:
    """The feature count of an EDSR of EDSR-tiny's shape as large as ``model=<model>``'s own pair
    at ×``scale`` (its downscaler as its config sets it, with the upscaler that config pairs it
    with: IRN's tied inverse), by :func:`~taid_car.models.edsr.size_matched_width`; the
    ``${edsr_width_of:<model>,<scale>}`` of ``conf/upscaler/edsr_size_of.yaml``."""
    from taid_car.config import compose_config
    from taid_car.models.edsr import size_matched_width

    cfg = compose_config([f"model={model}", f"scale={int(scale)}"])
    return size_matched_width(pair_size(cfg.model, cfg.upscaler), int(scale))


def shared_parameters(downscaler: nn.Module, upscaler: nn.Module) -> set[int]:
    """ids of the parameters both modules hold (a tied upscaler's are all the downscaler's)."""
    down = {id(p) for p in downscaler.parameters()}
    return {id(p) for p in upscaler.parameters() if id(p) in down}


def own_parameters(module: nn.Module, exclude: Iterable[int] = ()) -> list[nn.Parameter]:
    """``module``'s parameters that are not in ``exclude`` (ids), each once."""
    skip = set(exclude)
    return [p for p in module.parameters() if id(p) not in skip]


def pair_parameter_counts(downscaler: nn.Module, upscaler: nn.Module) -> dict[str, int]:
    """{"downscaler", "upscaler", "shared"}: parameter counts with each weight counted once; the
    upscaler's count leaves out what it shares with the downscaler (``shared``)."""
    shared = shared_parameters(downscaler, upscaler)
    return {
        "downscaler": sum(p.numel() for p in downscaler.parameters()),
        "upscaler": sum(p.numel() for p in own_parameters(upscaler, shared)),
        "shared": sum(p.numel() for p in upscaler.parameters() if id(p) in shared),
    }
