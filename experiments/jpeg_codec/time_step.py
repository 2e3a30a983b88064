"""Time one training step (``Rescaler.compute_losses`` + backward) through the differentiable JPEG
against the same step through ``png``, back to back, at the CPU study's batch and patch size.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/jpeg_codec/time_step.py --repeats 15

Builds the pair of ``experiment=cpu_study model=<model> scale=<scale>`` once per model and scale,
then alternates png and jpeg (QF 75, 4:2:0, ``train_rule=diff``) steps on the same random HR batch
(16 x 3 x 96 x 96 at x4, 48 x 48 at x2), and prints the median seconds of each and their ratio.
Also times the codec alone (forward + backward on the LR batch).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from taid_car.channel import build_channel
from taid_car.channel.diff_jpeg import diff_jpeg
from taid_car.config import CONFIG_DIR
from taid_car.run import build_rescaler


def build(model: str, scale: int):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=cpu_study", f"model={model}", f"scale={scale}"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for the ${hydra:...} interpolations
    with open_dict(cfg):
        del cfg["hydra"]
    return build_rescaler(cfg), cfg.data.lr_patch_size * scale, cfg.data.batch_size


def step_seconds(rescaler, hr: torch.Tensor) -> float:
    rescaler.zero_grad(set_to_none=True)
    start = time.perf_counter()
    rescaler.compute_losses(hr)["loss"].backward()
    return time.perf_counter() - start


def codec_seconds(lr: torch.Tensor) -> float:
    lr = lr.clone().requires_grad_()
    start = time.perf_counter()
    diff_jpeg(lr, 75, "4:2:0").sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["car", "taid", "bicubic", "irn"])
    parser.add_argument("--scales", nargs="+", type=int, default=[4, 2])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| model | scale | png step (s) | jpeg diff step (s) | ratio | codec fwd+bwd (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for model in args.models:
        for scale in args.scales:
            rescaler, hr_size, batch = build(model, scale)
            rescaler.train()
            png = build_channel({"name": "png"}, rescaler.quantizer)
            jpeg = build_channel({"name": "jpeg", "quality": 75, "subsampling": "4:2:0", "train_rule": "diff"},
                                 rescaler.quantizer)
            hr = torch.rand(batch, 3, hr_size, hr_size, generator=torch.Generator().manual_seed(0))
            lr = torch.round(torch.rand(batch, 3, hr_size // scale, hr_size // scale) * 255) / 255
            times = {"png": [], "jpeg": [], "codec": []}
            for repeat in range(args.repeats + 2):  # the first two are warm-up
                for name, channel in (("png", png), ("jpeg", jpeg)):
                    rescaler.channel = channel
                    seconds = step_seconds(rescaler, hr)
                    if repeat >= 2:
                        times[name].append(seconds)
                if repeat >= 2:
                    times["codec"].append(codec_seconds(lr))
            png_s, jpeg_s = statistics.median(times["png"]), statistics.median(times["jpeg"])
            print(f"| {model} | x{scale} | {png_s:.4f} | {jpeg_s:.4f} | {jpeg_s / png_s:.3f} | "
                  f"{statistics.median(times['codec']):.4f} |", flush=True)


if __name__ == "__main__":
    main()
