"""The training loop's own cost: a Rescaler step through Lightning vs the same step in plain PyTorch.

    .venv/bin/python experiments/lightning_overhead/overhead.py [--model car] [--scale 4] [--steps 30] [--repeats 3]

Same model, same batch (a fixed HR batch served by a DataLoader in both loops), same losses
(`Rescaler.compute_losses`), same Adam. Per-step wall time is the interval between consecutive
batch starts (plain loop) or batch ends (Lightning, `taid_car.training.callbacks.StepTimer`), so it includes
data loading, logging, the optimiser step and the loop's bookkeeping.
Plain and Lightning blocks alternate back to back; medians over all steps after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import pairwise

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Dataset

from taid_car.config import CONFIG_DIR
from taid_car.run import build_rescaler
from taid_car.training.callbacks import StepTimer


class FixedBatches(Dataset):
    """``length`` copies of one HR patch set, so both loops see identical data."""

    def __init__(self, hr: torch.Tensor, length: int) -> None:
        self.hr, self.length = hr, length

    def __len__(self) -> int:
        return self.length * self.hr.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"hr": self.hr[index % self.hr.shape[0]], "name": "x", "is_gray": False}


def build(model: str, scale: int):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", f"scale={scale}", "output_dir=unused"])
    return build_rescaler(cfg), cfg


def plain_steps(rescaler, loader, steps: int) -> list[float]:
    optimizer = torch.optim.Adam(rescaler.parameters(), lr=1e-4)
    rescaler.train()
    starts = []
    for step, batch in enumerate(loader):
        if step == steps:
            break
        starts.append(time.perf_counter())
        loss = rescaler.compute_losses(batch["hr"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    starts.append(time.perf_counter())
    return [b - a for a, b in pairwise(starts)]


def lightning_steps(rescaler, loader, steps: int, log_every: int) -> list[float]:
    timer = StepTimer(warmup_steps=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, log_every_n_steps=log_every, callbacks=[timer])
    trainer.fit(rescaler, train_dataloaders=loader)
    return timer.last["step_times_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="car")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr-patch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    rescaler, _ = build(args.model, args.scale)
    hr = torch.rand(args.batch, 3, args.lr_patch * args.scale, args.lr_patch * args.scale)
    loader = DataLoader(FixedBatches(hr, args.steps + 1), batch_size=args.batch)
    warmup = 3
    plain, lit = [], []
    for _ in range(args.repeats):
        plain += plain_steps(rescaler, loader, args.steps)[warmup:]
        lit += lightning_steps(rescaler, loader, args.steps, args.log_every)[warmup:]
    p, q = statistics.median(plain), statistics.median(lit)
    print(f"{args.model} x{args.scale}, batch {args.batch}, HR patch {args.lr_patch * args.scale}, "
          f"{len(plain)} + {len(lit)} timed steps, torch {torch.__version__}")
    print("| loop | median step (ms) | min step (ms) |\n|---|---:|---:|")
    print(f"| plain PyTorch | {p * 1e3:.1f} | {min(plain) * 1e3:.1f} |")
    print(f"| Lightning (Rescaler.training_step) | {q * 1e3:.1f} | {min(lit) * 1e3:.1f} |")
    print(f"Lightning overhead: {100 * (q / p - 1):+.1f}% (medians), {100 * (min(lit) / min(plain) - 1):+.1f}% (minima)")


if __name__ == "__main__":
    main()
