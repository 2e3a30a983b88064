"""Helpers shared by test modules (imported as ``from helpers import ...``: pytest puts this
folder on ``sys.path``), so that no test module imports another and each runs on its own."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from taid_car.config import CONFIG_DIR
from taid_car.models.downscaler import Downscaler


def compose_run(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose ``config.yaml`` as the CLI would, with the Hydra runtime set for interpolations."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.output_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


def model_configs() -> list[str]:
    """Every method the suite ships: each file of ``conf/model/`` but the shared ``_base.yaml``
    (tests parametrised over it cover a method added later without an edit)."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml") if not p.stem.startswith("_"))


def model_scales(model: str) -> list[int]:
    """The scales a smoke test runs ``model=<model>`` at: the one its config fixes (colorization:
    1), else 2 and 4."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(Path(CONFIG_DIR) / "model" / f"{model}.yaml")
    return [int(node.scale)] if "scale" in node else [2, 4]


def compose_evaluate(overrides: list[str]) -> DictConfig:
    """Compose ``evaluate.yaml`` (progress bars off)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    with open_dict(cfg):
        cfg.progress = False
    return cfg


def authors_dsn_keys(n_res_blocks: int) -> set[str]:
    """The state-dict keys of the authors' DSN (sunwj/CAR modules.py), written out by hand."""
    names = ["sub_mean", "ds_1.1", "ds_2.downsample.1", "ds_4.downsample.1", "ds_8.downsample.1"]
    for i in range(n_res_blocks):
        names += [f"res_4.{i}.transform.1", f"res_4.{i}.transform.4"]
    for trunk in ("kernels_trunk", "offsets_trunk"):
        names += [f"{trunk}.{j}" for j in (1, 4, 7, 11)] + [f"{trunk}.9.upsample.0"]
    for head in ("kernels_weight", "offsets_h_generation", "offsets_v_generation"):
        names += [f"{head}.1", f"{head}.4"]
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def failed_job(root: Path, name: str, overrides: list[str]) -> Path:
    """A job directory as Hydra leaves it when the job dies before writing results."""
    hydra_dir = root / name / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text("scale: 2\n")
    (hydra_dir / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return root / name


def fake_run(
    root: Path,
    name: str,
    method: str,
    scale: int,
    sets: dict[str, tuple],
    params=(1000, 2_500_000),
    seconds=90.0,
    steps=100,
    curves: list[str] | None = None,
    pretrain_steps: int = 0,
    results: list[dict] | None = None,
) -> Path:
    """A finished run: ``sets`` maps set name -> (psnr_y, ssim_y, lr_psnr_y, bicubic_psnr_y), or
    ``results`` gives the results.json rows as they are."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    results = results if results is not None else [
        {
            "method": method,
            "set_name": s,
            "scale": scale,
            "images": 5,
            "psnr_y": p,
            "ssim_y": q,
            "psnr_rgb": p - 2,
            "lr_psnr_y": lr,
            "bicubic_psnr_y": b,
            "bicubic_ssim_y": 0.9,
            "per_image": [],
        }
        for s, (p, q, lr, b) in sets.items()
    ]
    (run / "results.json").write_text(json.dumps(results))
    (run / "run.json").write_text(
        json.dumps(
            {
                "method": method,
                "model": method.split(" ")[0],
                "upscaler": "edsr_tiny",
                "scale": scale,
                "params": {"downscaler": params[0], "upscaler": params[1]},
                "train_seconds": seconds,
                "global_step": steps,
                "pretrain_steps": pretrain_steps,
                "metrics": {},
            }
        )
    )
    if curves is not None:
        (run / "csv" / "version_0").mkdir(parents=True)
        (run / "csv" / "version_0" / "metrics.csv").write_text("\n".join(curves) + "\n")
    return run


class ToyInvertible(Downscaler):
    """A downscaler with an ``inverse()`` that shares its two parameters (a tied upscaler):
    LR = avgpool_s(HR)·gain + bias; SR = nearest_s((LR - bias) / gain)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__(scale)
        self.gain = torch.nn.Parameter(torch.tensor(1.0))
        self.bias = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(hr, self.scale) * self.gain + self.bias

    def inverse(self) -> torch.nn.Module:
        return _ToyInverse(self)


class _ToyInverse(torch.nn.Module):
    def __init__(self, down: ToyInvertible) -> None:
        super().__init__()
        self.down, self.scale = down, down.scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = (lr - self.down.bias) / self.down.gain
        return torch.nn.functional.interpolate(up, scale_factor=self.scale, mode="nearest")


def bicubic_checkpoint(folder: Path) -> Path:
    """Bicubic & Bicubic x2 saved in ``folder`` as ``taid_car.run`` saves checkpoints (no weights)."""
    from omegaconf import OmegaConf

    cfg = compose_run(["model=bicubic", "upscaler=bicubic", "scale=2"], folder)
    path = folder / "bicubic.ckpt"
    torch.save({"taid_car_config": OmegaConf.to_container(cfg, resolve=True), "state_dict": {}}, path)
    return path
