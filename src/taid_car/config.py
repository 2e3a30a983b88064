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


def register_resolvers() -> None:
    """``${lcm:a,b}``, ``${mul:a,b}`` for crop sizes, ``${sweep_group:}`` for W&B groups,
    ``${run_id:}`` for unique run directories."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)  # a sweep's jobs see the launcher's
    if not OmegaConf.has_resolver("sweep_group"):
        OmegaConf.register_new_resolver("sweep_group", sweep_group)
    if not OmegaConf.has_resolver("lcm"):
        OmegaConf.register_new_resolver("lcm", lambda *xs: math.lcm(*(int(x) for x in xs)))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(int(x) for x in xs))
    if not OmegaConf.has_resolver("per_hr_value"):
        # a bound on a per-image-sum loss (IRN's gradient clip) on the scale of a mean over the
        # 3·(patch·scale)² HR values of a training patch
        OmegaConf.register_new_resolver(
            "per_hr_value", lambda bound, lr_patch, scale: float(bound) / (3 * (int(lr_patch) * int(scale)) ** 2))


register_resolvers()
