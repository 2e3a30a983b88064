"""The order of training patches as a pure function of (seed, epoch, position), so that a run
resumed from a checkpoint draws exactly the batches the uninterrupted run would.

:class:`PatchSampler` yields ``(item index, sample seed)`` keys; a dataset that accepts them
(:class:`~taid_car.data.datasets.TrainPatchDataset`) draws each patch's crop and augmentation
from a generator seeded with the key's seed, not from the global RNG. So neither the resume
point, the number of loader workers nor anything else drawing random numbers changes a batch.
Under DDP each rank takes every ``world_size``-th item of the epoch's permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

#: mixes seeds, epochs and positions into one 63-bit value (splitmix64 constants)
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-spread non-negative 63-bit seed from integers (splitmix64 over each in turn)."""
    state = 0
    for value in values:
        state = (state + _MIX[0] + (int(value) & _MASK)) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * _MIX[1]) & _MASK
        z = ((z ^ (z >> 27)) * _MIX[2]) & _MASK
        state = z ^ (z >> 31)
    return state >> 1


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class PatchSampler(Sampler):
    """Epoch ``e`` visits ``range(num_items)`` in the permutation seeded by ``(seed, e)``; item
    ``k`` of it comes with the sample seed ``mix_seed(seed, e, k)``.

    Args:
        num_items: dataset length (patches per epoch).
        batch_size: per-rank batch size; each rank's epoch is cut to whole batches (the loader
            uses ``drop_last``), so every epoch has the same number of batches.
        seed: the run's seed.

    Lightning calls :meth:`set_epoch` before each epoch; :meth:`resume` makes the next pass over
    an epoch start after the batches a checkpoint had already consumed.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int) -> None:
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"PatchSampler needs num_items >= 1 and batch_size >= 1, got {num_items}, {batch_size}")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def batches_per_epoch(self) -> int:
        """Whole batches each rank draws per epoch."""
        return self.num_items // _distributed()[1] // self.batch_size

    def resume(self, consumed_batches: int) -> None:
        """Continue after ``consumed_batches`` batches of the run (every epoch full): the epoch
        they end in, and within it, the batch after them."""
        per_epoch = self.batches_per_epoch
        if per_epoch < 1:
            raise ValueError(f"{self.num_items} patches make no batch of {self.batch_size} per rank")
        epoch, skip = divmod(int(consumed_batches), per_epoch)
        self._resume = (epoch, skip) if skip else None
        self.epoch = epoch

    def _keys(self) -> list[tuple[int, int]]:
        rank, world = _distributed()
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_items, generator=generator).tolist()
        usable = self.batches_per_epoch * self.batch_size
        return [(order[k], mix_seed(self.seed, self.epoch, k)) for k in range(rank, usable * world, world)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys = self._keys()
        if self._resume is not None and self._resume[0] == self.epoch:
            keys = keys[self._resume[1] * self.batch_size:]
        self._resume = None
        return iter(keys)

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size
