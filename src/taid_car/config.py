"""Hydra/OmegaConf helpers shared by the entry points: config folder and custom resolvers."""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def sweep_group() -> str | None:
    """Name shared by all jobs of one Hydra multirun (its sweep folder); None for single runs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"sweep-{Path(hydra_cfg.sweep.dir).name}"


def upscaler_named_on_command_line() -> bool:
    """Whether this Hydra job's command line chose the ``upscaler`` group (``upscaler=...``, a
    sweep's value for this job included; ``upscaler.<key>=...`` sets a key, not the choice).
    Outside a Hydra job (a config composed in Python) there is no command line: True, the config
    is taken as given."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return True
    for override in HydraConfig.get().overrides.task:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key.split("@", 1)[0] == "upscaler":
            return True
    return False


def compose_config(overrides: list[str]):
    """``config.yaml`` composed by Hydra as the command line would compose ``overrides`` (defaults
    lists included, e.g. ``conf/model/_base.yaml`` under every model), without its ``hydra`` node
    and unresolved. Inside a Hydra app its search path is used; elsewhere the suite's ``conf/``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def group_config(group: str, name: str):
    """The ``<group>`` node of ``<group>=<name>`` as the command line composes it (e.g. a model
    config with the shared keys of ``_base.yaml``); its interpolations (``${scale}``, ...) resolve
    against whichever run config it is put into."""
    return compose_config([f"{group}={name}"])[group]


_RUN_ID: list[str] = []


def run_id() -> str:
    """A short id fixed for this process (PID and 2 random bytes, hex): two runs started in the
    same second, on one host or on two sharing an output folder, get different run directories."""
    if not _RUN_ID:
        _RUN_ID.append(f"{os.getpid():x}{secrets.token_hex(2)}")
    return _RUN_ID[0]


def check_scale(value, key: str = "scale", minimum: int = 2) -> int:
    """``scale`` as an int ≥ ``minimum`` (2; 1 for colorization), or a UsageError naming the key
    (``scale=0``, ``scale=abc``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        from taid_car.errors import UsageError

        raise UsageError(
            f"{key}={value!r}: the downscaling factor must be an integer >= {minimum} (e.g. {key}=4)"
        )
    return value


def _edsr_width_of(model: str, scale: int) -> int:
    from taid_car.models.pair import edsr_width_of

    return edsr_width_of(model, scale)


def register_resolvers() -> None:
    """``${lcm:a,b}``, ``${mul:a,b}`` for crop sizes, ``${sweep_group:}`` for W&B groups,
    ``${run_id:}`` for unique run directories, ``${per_hr_value:bound,lr_patch,scale}``,
    ``${edsr_width_of:model,scale}`` for an EDSR of a method's size."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)  # a sweep's jobs see the launcher's
    if not OmegaConf.has_resolver("sweep_group"):
        OmegaConf.register_new_resolver("sweep_group", sweep_group)
    if not OmegaConf.has_resolver("lcm"):
        OmegaConf.register_new_resolver("lcm", lambda *xs: math.lcm(*(int(x) for x in xs)))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(int(x) for x in xs))
    if not OmegaConf.has_resolver("edsr_width_of"):
        # the width of an EDSR-tiny-shaped upscaler as large as model=<name>'s own pair at a scale
        OmegaConf.register_new_resolver(
            "edsr_width_of", lambda model, scale: _edsr_width_of(str(model), int(scale)), use_cache=True)
    if not OmegaConf.has_resolver("per_hr_value"):
        # a bound on a per-image-sum loss (IRN's gradient clip) on the scale of a mean over the
        # 3·(patch·scale)² HR values of a training patch
        OmegaConf.register_new_resolver(
            "per_hr_value", lambda bound, lr_patch, scale: float(bound) / (3 * (int(lr_patch) * int(scale)) ** 2))


register_resolvers()
