"""How small are IRN's gradients on the suite's loss scale, against Adam's eps? (cpu_study, IRN)

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cpu_study/irn_adam_scale.py --data ../shared/data

Adam divides each step by sqrt(v) + eps, where v is the running mean of the squared gradient: it
is blind to the loss's scale except through eps (and an L2 weight decay added to the gradient).
The suite's IRN loss is the authors' per-image sum divided by the 3·H·W HR values of a patch
(models/irn.py), so its gradients are 3·H·W times smaller than theirs and Adam's default 1e-8
weighs 3·H·W times more. This trains the independent loop (``irn_anchor.py``: the authors' network,
init and step, x2, 16 patches of 48 px) and prints, at a few steps, the fraction of parameters whose
sqrt(v-hat) would be below 1e-9 / 1e-8 / 1e-7 on the suite's scale, and its median: where it is
near 1e-8 the unscaled eps shrinks the step (by half at sqrt(v-hat) = eps).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import irn_anchor
import irn_authors
from taid_car.data.datamodule import split_holdout
from taid_car.data.io import list_images, read_image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rng = random.Random(0)
    train_files, _ = split_holdout(list_images(args.data / "T91"), 10)
    train = [read_image(p).tensor for p in train_files]
    net = irn_anchor.authors_init(irn_authors.InvRescaleNet(3, 3, irn_authors.subnet(8), [8], 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    hr_values = 3 * 48 * 48
    thresholds = (1e-9, 1e-8, 1e-7)
    print("| step | " + " | ".join(f"sqrt(v-hat) < {t:g}" for t in thresholds) + " | median |")
    print("|---:|" + "---:|" * (len(thresholds) + 1))
    for step in range(1, args.steps + 1):
        losses = irn_anchor.authors_step(net, irn_anchor.patches(train, 16, 48, rng), 2)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10)
        optimizer.step()
        if step in (1, 10, 50, 100, 200) or step == args.steps:
            v = torch.cat([optimizer.state[p]["exp_avg_sq"].flatten() if "exp_avg_sq" in optimizer.state[p]
                           else torch.zeros(p.numel()) for p in net.parameters()])
            rms = (v / (1 - 0.999**step)).sqrt() / hr_values  # on the suite's scale
            cells = " | ".join(f"{(rms < t).float().mean():.3f}" for t in thresholds)
            print(f"| {step} | {cells} | {rms.median():.2e} |", flush=True)


if __name__ == "__main__":
    main()
