"""Evaluate a downscaler/upscaler pair on benchmark sets; print and save a results table.

    python -m taid_car.evaluate                                  # bicubic & bicubic, sample data
    python -m taid_car.evaluate data=benchmark data_root=../shared/data 'scales=[2,4]'
    python -m taid_car.evaluate ckpt_path=outputs/car_x4/<run>/checkpoints/last.ckpt data=benchmark

Results (results.md / .csv / .json with per-image scores) go to the Hydra run directory.
"""

from __future__ import annotations

import logging

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from taid_car.config import CONFIG_DIR, check_scale
from taid_car.data.sources import open_test_sets
from taid_car.errors import reported
from taid_car.models.downscaler import crop_multiple
from taid_car.models.trained import load_trained_pair, method_name
from taid_car.scoring.benchmark import evaluate_set
from taid_car.scoring.report import print_results, write_results
from taid_car.scoring.results import SetResult

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available")
    return torch.device(name)


def _at_scale(cfg: DictConfig, scale: int) -> DictConfig:
    """A copy of ``cfg`` with ``scale`` set, so every ``${scale}`` interpolation follows it."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    copy.scale = int(scale)
    return copy


def _sets_for(scaled: DictConfig, downscaler) -> dict:
    """The configured test sets, HR cropped to what ``downscaler`` needs (or ``data.modcrop``)."""
    data = OmegaConf.to_container(scaled.data, resolve=True)
    data["modcrop"] = crop_multiple(downscaler, data.get("modcrop"))
    return open_test_sets(data, int(scaled.scale))


def _evaluate_checkpoint(cfg: DictConfig, device: torch.device) -> list[SetResult]:
    """Evaluate a trained pair at its own scale; HR crop multiple from its downscaler."""
    downscaler, upscaler, run_cfg = load_trained_pair(cfg.ckpt_path)
    if list(cfg.scales) != [run_cfg["scale"]]:
        log.warning("%s was trained at x%d: evaluating at x%d (scales=%s applies to fixed methods only)",
                    cfg.ckpt_path, run_cfg["scale"], run_cfg["scale"], list(cfg.scales))
    scaled = _at_scale(cfg, run_cfg["scale"])
    scaled.model = run_cfg["model"]
    scaled.upscaler = run_cfg["upscaler"]
    return [
        evaluate_set(downscaler, upscaler, dataset, scaled.scale, set_name,
                     method_name(scaled), device, progress=cfg.progress)
        for set_name, dataset in _sets_for(scaled, downscaler).items()
    ]


def run_evaluation(cfg: DictConfig) -> list[SetResult]:
    """Evaluate ``ckpt_path`` if given, else the configured fixed method at every ``scales``."""
    for scale in cfg.scales:
        check_scale(scale, "scales")
    device = resolve_device(cfg.device)
    if cfg.get("ckpt_path"):
        return _evaluate_checkpoint(cfg, device)
    results = []
    for scale in cfg.scales:
        scaled = _at_scale(cfg, scale)
        downscaler = hydra.utils.instantiate(scaled.model.downscaler)
        upscaler = hydra.utils.instantiate(scaled.upscaler.net)
        for set_name, dataset in _sets_for(scaled, downscaler).items():
            results.append(
                evaluate_set(downscaler, upscaler, dataset, int(scale), set_name,
                             method_name(scaled), device, progress=cfg.progress)
            )
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the mean Y-PSNR over all rows (for sweeps)."""
    with reported("taid_car.evaluate"):
        results = run_evaluation(cfg)
    out_dir = HydraConfig.get().runtime.output_dir
    paths = write_results(results, out_dir)
    print_results(results, title=f"{results[0].method} (Y channel, border = scale)")
    log.info("results written to %s", paths["md"])
    return sum(r.psnr_y for r in results) / len(results)


if __name__ == "__main__":
    main()
