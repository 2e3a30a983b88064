"""Training throughput (HR pixels per second) of each model with the default CPU presets,
and parameter counts of CAR's kernel net and the EDSR presets at x2 / x4.

    .venv/bin/python experiments/throughput/throughput.py [--steps 12] [--batch 4] [--lr-patch 16]

One optimiser step = forward, all losses, backward, Adam update, on a batch of random HR patches
(the same work a `taid_car.run` training step does, without Lightning). Median over steps after
two warm-up steps; interleaved across models so machine load hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from taid_car.config import CONFIG_DIR
from taid_car.models.car import KernelGenerationNet
from taid_car.models.edsr import EDSR_PRESETS, build_edsr
from taid_car.models.rescaler import count_parameters
from taid_car.run import build_rescaler


def rescaler_for(model: str, scale: int):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", f"scale={scale}", "output_dir=unused"])
    return build_rescaler(cfg)


def step_seconds(rescaler, hr: torch.Tensor, optimizer) -> float:
    start = time.perf_counter()
    loss = rescaler.compute_losses(hr)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def throughput(models, scales, steps: int, batch: int, lr_patch: int) -> list[dict]:
    runs = {}
    for model in models:
        for scale in scales:
            rescaler = rescaler_for(model, scale).train()
            hr = torch.rand(batch, 3, lr_patch * scale, lr_patch * scale)
            optimizer = torch.optim.Adam(rescaler.parameters(), lr=1e-4)
            for _ in range(2):
                step_seconds(rescaler, hr, optimizer)
            runs[(model, scale)] = (rescaler, hr, optimizer, [])
    for _ in range(steps):  # interleaved
        for rescaler, hr, optimizer, times in runs.values():
            times.append(step_seconds(rescaler, hr, optimizer))
    rows = []
    for (model, scale), (rescaler, hr, _, times) in runs.items():
        median = statistics.median(times)
        rows.append({"model": model, "scale": scale, "hr_patch": hr.shape[-1], "batch": hr.shape[0],
                     "step_s": median, "hr_px_per_s": hr[:, 0].numel() / median,
                     "params": count_parameters(rescaler)})
    return rows


def parameter_counts() -> list[tuple[str, int, int]]:
    rows = [("CAR kernel net (paper widths)",
             *(count_parameters(KernelGenerationNet(s)) for s in (2, 4)))]
    for preset in EDSR_PRESETS:
        rows.append((f"EDSR {preset}", *(count_parameters(build_edsr(preset, s)) for s in (2, 4))))
    car2, car4 = rows[0][1:]
    paper2, paper4 = next(r for r in rows if r[0] == "EDSR paper")[1:]
    rows.append(("CAR + EDSR paper (papers: 51.1M / 52.8M)", car2 + paper2, car4 + paper4))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr-patch", type=int, default=16)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n| model | scale | HR patch | batch | step (s, median) | HR px/s | parameters |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in throughput(["car", "taid", "bicubic"], [2, 4], args.steps, args.batch, args.lr_patch):
        print(f"| {r['model']} | x{r['scale']} | {r['hr_patch']} | {r['batch']} | {r['step_s']:.3f} | "
              f"{r['hr_px_per_s']:,.0f} | {r['params']:,} |")
    print("\n| network | x2 | x4 |\n|---|---:|---:|")
    for name, x2, x4 in parameter_counts():
        print(f"| {name} | {x2:,} | {x4:,} |")


if __name__ == "__main__":
    main()
