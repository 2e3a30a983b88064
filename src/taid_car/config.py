"""Hydra/OmegaConf helpers shared by the entry points: config folder and custom resolvers."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def register_resolvers() -> None:
    """``${lcm:a,b}`` (least common multiple) and ``${mul:a,b}`` for crop sizes in configs."""
    if not OmegaConf.has_resolver("lcm"):
        OmegaConf.register_new_resolver("lcm", lambda *xs: math.lcm(*(int(x) for x in xs)))
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(int(x) for x in xs))


register_resolvers()
