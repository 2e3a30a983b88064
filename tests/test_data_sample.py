"""The embedded sample set: disjoint fixed splits, loads offline, benchmark-like items."""

from __future__ import annotations

import pytest
import torch

from taid_car.data import (
    SAMPLE_SPLITS,
    BenchmarkDataset,
    SampleDataset,
    TrainPatchDataset,
    sample_dir,
    sample_paths,
    sample_split,
)
from taid_car.data.sample import SAMPLE_FILES

pytestmark = pytest.mark.usefixtures("no_network")


def test_splits_disjoint_and_fixed():
    splits = {k: set(v) for k, v in SAMPLE_SPLITS.items()}
    assert set(splits) == {"train", "val", "test"}
    assert not (
        splits["train"] & splits["val"]
        or splits["train"] & splits["test"]
        or splits["val"] & splits["test"]
    )
    assert set().union(*splits.values()) == set(SAMPLE_FILES)
    assert SAMPLE_SPLITS["test"] == ("astronaut", "coffee", "chelsea", "camera")
    assert all(len(v) >= 2 for v in splits.values())


def test_files_ship_in_the_wheel():
    folder = sample_dir()
    for split in SAMPLE_SPLITS:
        for p in sample_paths(split):
            assert p.parent == folder and p.is_file()
    assert sample_paths("validation") == sample_paths("val")
    with pytest.raises(ValueError, match="unknown sample split"):
        sample_paths("holdout")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_sample_split_loads(split):
    images = sample_split(split)
    assert [im.name for im in images] == list(SAMPLE_SPLITS[split])
    for im in images:
        assert im.tensor.dtype == torch.float32 and im.tensor.shape[0] == 3
        assert 0 <= im.tensor.min() and im.tensor.max() <= 1
        assert min(im.tensor.shape[1:]) >= 256
        if im.is_gray:
            assert torch.equal(im.tensor[0], im.tensor[2])
    assert any(im.is_gray for im in images) and not all(im.is_gray for im in images)


def test_sample_dataset_items_like_benchmark():
    ds = SampleDataset("test", scale=3)
    assert isinstance(ds, BenchmarkDataset) and len(ds) == 4 and ds.name == "sample-test"
    assert ds.names == ["astronaut", "coffee", "chelsea", "camera"]
    chelsea = ds[2]
    assert set(chelsea) == {"hr", "name", "is_gray"} and chelsea["name"] == "chelsea"
    assert chelsea["hr"].shape == (3, 300, 450) and chelsea["is_gray"] is False
    assert ds[3]["is_gray"] is True
    assert SampleDataset("val", scale=4, modcrop_multiple=8)[0]["hr"].shape == (3, 424, 640)


def test_sample_train_split_feeds_patches():
    from_memory = TrainPatchDataset(sample_split("train"), patch_size=96, scale=4)
    from_files = TrainPatchDataset(sample_paths("train"), patch_size=96, scale=4)
    assert from_memory.num_images == from_files.num_images == len(SAMPLE_SPLITS["train"])
    torch.manual_seed(0)
    a = from_memory[1]["hr"]
    torch.manual_seed(0)
    b = from_files[1]["hr"]
    assert a.shape == (3, 96, 96) and torch.equal(a, b)
