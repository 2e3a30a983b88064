"""The one place a (downscaler, upscaler) pair is built from its config nodes.

``run`` (training), ``evaluate`` (fixed methods), checkpoints (:mod:`taid_car.models.trained`) and
the experiments all call :func:`build_pair`, so a pair is built the same way everywhere.

* ``model.downscaler``: a :class:`~taid_car.models.downscaler.Downscaler` target.
* ``upscaler.net``: an independent upscaler target; or ``upscaler.tied: true``, a *tied* upscaler:
  the downscaler's own inverse (``downscaler.inverse()``, an ``nn.Module`` that shares its
  parameters, as an invertible network has). Shared parameters are counted once
  (:func:`pair_parameter_counts`) and optimised once (the Rescaler's parameter groups).

A model config also says what its fair baseline is (:mod:`taid_car.training.baseline`):
``model.baseline_model`` (bicubic unless it names another, e.g. ``gray``) with
``model.baseline_upscaler`` (the run's own upscaler unless it names an ``upscaler`` config; a
tied upscaler needs one, since bicubic has no inverse to tie to).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from taid_car.errors import ConfigError


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
        inverse = getattr(downscaler, "inverse", None)
        if not callable(inverse):
            raise ConfigError(
                f"upscaler.tied=true: {type(downscaler).__name__} has no inverse() to tie the upscaler to; "
                "choose an upscaler with its own network (upscaler=edsr_tiny, ...)")
        return downscaler, inverse()
    if not upscaler_cfg.get("net"):
        raise ConfigError("the upscaler config has neither a `net` to build nor `tied: true`")
    return downscaler, instantiate(upscaler_cfg["net"])


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
