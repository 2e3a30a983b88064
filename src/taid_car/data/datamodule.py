"""Lightning DataModule: random HR patches for training, whole benchmark images for val/test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from taid_car.errors import UsageError

from .datasets import BenchmarkDataset, TrainPatchDataset
from .io import list_images
from .sampling import PatchSampler
from .sources import open_test_sets, resolve_set_specs, resolve_train_source


def split_holdout(files: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files): ``count`` files evenly spaced in the given (name) order
    are held out, first and last included; ``data.holdout`` and the experiments use this split."""
    picked = {round(i * (len(files) - 1) / max(count - 1, 1)) for i in range(count)}
    return [f for i, f in enumerate(files) if i not in picked], [f for i, f in enumerate(files) if i in picked]


class RescaleDataModule(L.LightningDataModule):
    """Training patches plus one val/test dataloader per named benchmark set.

    Args:
        scale: downscaling factor (integer).
        train: ``builtin:train`` (embedded sample images), a folder of images (DIV2K, T91, ...)
            or a known dataset name resolved through the cache.
        val_sets / test_sets: a list of set names, each the folder ``<root>/<name>`` (or a known
            dataset from the cache), or a mapping name -> spec (``builtin:<split>`` or a folder
            of HR images); see :func:`~taid_car.data.sources.resolve_set_specs`.
        lr_patch_size: LR patch side in pixels; the HR patch is ``lr_patch_size * scale`` and
            must be a multiple of ``modcrop`` (the model's size multiple).
        batch_size, num_workers: training loader settings (val/test use batch size 1).
        repeats: patches drawn per training image per epoch.
        modcrop: benchmark HR images are cropped to a multiple of this; None (the default): the
            downscaler's need, set by :meth:`fit_downscaler` (lcm of scale and its size multiple).
        skip_small: leave out training images smaller than a patch (with a warning) instead of failing.
        on_error: ``raise`` (default) or ``skip`` training images that cannot be read, checked
            once at set-up and listed with their reasons (validation/test sets always raise).
        holdout: hold this many images of a training *folder* out of training (evenly spaced in
            file-name order) and validate on them as ``<folder>_holdout``, before ``val_sets``.
            The split is made over every file listed, readable or not, so a bad file never
            changes which images are held out; a held-out file that cannot be read raises as any
            validation file does, a training one follows ``on_error``.
        root: the folder that set names in ``val_sets`` / ``test_sets`` lists are looked up in
            (the configs pass ``${data_root}``).
        seed: seeds the order, crops and flips of the training patches
            (:class:`~taid_car.data.sampling.PatchSampler`; the configs pass the run's ``${seed}``;
            None: a random one, kept in checkpoints). A run resumed from a checkpoint continues
            with the batch after the ones it had consumed, so it trains on what the
            uninterrupted run would.
    """

    def __init__(
        self,
        scale: int,
        train: str | None = "builtin:train",
        val_sets: Mapping[str, str] | Sequence[str] | None = None,
        test_sets: Mapping[str, str] | Sequence[str] | None = None,
        lr_patch_size: int = 48,
        batch_size: int = 16,
        num_workers: int = 0,
        repeats: int = 1,
        modcrop: int | None = None,
        download: bool = False,
        skip_small: bool = False,
        augment: bool = True,
        cache: bool = True,
        holdout: int = 0,
        root: str | None = None,
        on_error: str = "raise",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
        patch_size = int(lr_patch_size) * int(scale)
        self.lr_patch_size = int(lr_patch_size)
        if train is None:
            raise UsageError("data.train is not set: data=folder needs data.train=/path/to/training/images")
        self.scale, self.train_spec = int(scale), str(train)
        self.root = root
        self.val_specs = resolve_set_specs(val_sets, root, "data.val_sets")
        self.test_specs = resolve_set_specs(test_sets, root, "data.test_sets")
        self.patch_size, self.batch_size, self.num_workers = patch_size, batch_size, num_workers
        self.repeats, self.modcrop, self.download = repeats, modcrop, download
        self.skip_small, self.augment, self.cache = skip_small, augment, cache
        self.holdout = int(holdout)
        self.on_error = on_error
        self.holdout_name = f"{Path(self.train_spec).name}_holdout" if self.holdout else None
        self.train_set: Dataset | None = None
        self.val_sets: dict[str, Dataset] = {}
        self.test_sets: dict[str, Dataset] = {}

    def fit_downscaler(self, downscaler) -> None:
        """Crop whole images to what ``downscaler`` needs (:func:`crop_multiple`, honouring an
        explicit ``modcrop``) and check that training patches fit its size multiple."""
        from taid_car.models.downscaler import crop_multiple

        self.modcrop = crop_multiple(downscaler, self.modcrop)
        need = downscaler.size_multiple
        if self.patch_size % need:
            raise ValueError(
                f"data.lr_patch_size={self.lr_patch_size} gives HR patches of {self.patch_size} px "
                f"at scale {self.scale}, not a multiple of {need} ({type(downscaler).__name__}'s "
                f"size multiple)"
            )

    def _train_and_holdout(self) -> tuple[object, list[Path]]:
        """Training source, and the files held out of it (empty without ``holdout``)."""
        source = resolve_train_source(self.train_spec, self.download)
        if not self.holdout:
            return source, []
        if not isinstance(source, Path):
            raise ValueError(f"data.holdout needs a folder of training images, got data.train={self.train_spec!r}")  # noqa: TRY004 (a config value)
        files = list_images(source)
        if not 0 < self.holdout < len(files):
            raise ValueError(f"data.holdout={self.holdout} must be between 1 and {len(files) - 1} "
                             f"({len(files)} images in {source})")
        return split_holdout(files, self.holdout)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            source, held = self._train_and_holdout()
            if held and not self.val_sets:  # first: its headers are checked before training images decode
                self.val_sets = {self.holdout_name: BenchmarkDataset.from_paths(
                    held, self.scale, self.modcrop, self.holdout_name, cache=self.cache)}
            if stage != "validate":
                self.train_set = TrainPatchDataset(
                    source, self.patch_size, self.scale, augment=self.augment, repeats=self.repeats,
                    cache=self.cache, skip_small=self.skip_small, on_error=self.on_error,
                )
        if stage in (None, "fit", "validate") and self.val_specs and not set(self.val_specs) <= set(self.val_sets):
            self.val_sets.update(self._open(self.val_specs, cache=self.cache))  # re-read every validation
        if stage in (None, "test") and not self.test_sets and self.test_specs:
            self.test_sets = self._open(self.test_specs, cache=False)  # read once

    def _open(self, specs: Mapping[str, str], cache: bool) -> dict[str, Dataset]:
        return open_test_sets(
            {"test_sets": specs, "modcrop": self.modcrop, "download": self.download}, self.scale, cache
        )

    @property
    def val_set_names(self) -> list[str]:
        """Names in dataloader order: the held-out set first (if any), then ``val_sets``."""
        return ([self.holdout_name] if self.holdout else []) + list(self.val_specs)

    @property
    def test_set_names(self) -> list[str]:
        return list(self.test_specs)

    def train_dataloader(self) -> DataLoader:
        """Patches in :class:`~taid_car.data.sampling.PatchSampler` order, starting after the
        ``global_step × accumulate_grad_batches`` batches a resumed run has already consumed."""
        sampler = PatchSampler(len(self.train_set), self.batch_size, self.seed)
        trainer = self.trainer
        if trainer is not None and trainer.global_step:
            sampler.resume(trainer.global_step * trainer.accumulate_grad_batches)
        return DataLoader(
            self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds: not from the global RNG
        )

    def state_dict(self) -> dict:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = int(state_dict.get("seed", self.seed))

    def _whole_images(self, sets: Mapping[str, Dataset]) -> list[DataLoader]:
        """Batch size 1 (sizes differ). Under DDP each image goes to exactly one rank (no
        padding duplicates, unlike Lightning's default sampler), so set means stay exact."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return [
            DataLoader(ds, batch_size=1, num_workers=0,
                       sampler=UnrepeatedDistributedSampler(ds, shuffle=False) if distributed else None)
            for ds in sets.values()
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._whole_images(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        return self._whole_images(self.test_sets)
