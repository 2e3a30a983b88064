"""Benchmark and training-patch datasets: layouts, cropping, validation, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from taid_car.data import (
    BenchmarkDataset,
    ImageError,
    InMemoryImage,
    MissingFolderError,
    TrainPatchDataset,
    benchmark_min_size,
    dihedral,
    resolve_hr_folder,
)

RNG = np.random.default_rng(7)


def _write(folder: Path, name: str, h: int, w: int, gray: bool = False) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    if gray:
        a = RNG.integers(0, 256, (h, w), dtype=np.uint8)
        Image.fromarray(a, mode="L").save(folder / name)
        return np.repeat(a[:, :, None], 3, 2)
    a = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(folder / name)
    return a


def _hwc(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture
def bench(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "MySet"
    imgs = {"b": _write(root, "b.png", 37, 50), "a": _write(root, "a.bmp", 64, 41, gray=True)}
    return root, imgs


# --------------------------------------------------------------------------- benchmark


def test_benchmark_items_and_modcrop(bench):
    root, imgs = bench
    ds = BenchmarkDataset(root, scale=4)
    assert len(ds) == 2 and ds.name == "MySet" and ds.names == ["a", "b"]
    a, b = ds[0], ds[1]
    assert set(a) == {"hr", "name", "is_gray"}
    assert a["name"] == "a" and a["is_gray"] is True and b["is_gray"] is False
    assert a["hr"].shape == (3, 64, 40) and b["hr"].shape == (3, 36, 48)
    assert a["hr"].dtype == torch.float32
    assert np.array_equal(_hwc(b["hr"]), imgs["b"][:36, :48])  # top-left kept
    assert ds[-1]["name"] == "b"


def test_benchmark_modcrop_multiple_and_name(bench):
    root, _ = bench
    ds = BenchmarkDataset(root, scale=2, modcrop_multiple=12, name="custom")
    assert ds.name == "custom" and ds.multiple == 12
    assert ds[0]["hr"].shape == (3, 60, 36) and ds[1]["hr"].shape == (3, 36, 48)
    with pytest.raises(ValueError, match="multiple of scale"):
        BenchmarkDataset(root, scale=4, modcrop_multiple=6)


def test_benchmark_cache_returns_independent_copies(bench):
    ds = BenchmarkDataset(bench[0], scale=4)
    x = ds[1]["hr"]
    x.zero_()
    assert ds[1]["hr"].max() > 0
    assert 1 in ds._cache
    nocache = BenchmarkDataset(bench[0], scale=4, cache=False)
    assert torch.equal(nocache[1]["hr"], ds[1]["hr"]) and not nocache._cache


def test_benchmark_cache_is_compact_and_off_keeps_nothing(bench):
    root, imgs = bench
    cached = BenchmarkDataset(root, scale=4)
    nocache = BenchmarkDataset(root, scale=4, cache=False)
    for i in range(len(cached)):
        a, b = cached[i], nocache[i]
        assert torch.equal(a["hr"], b["hr"]) and a["hr"].dtype == torch.float32
        assert (a["name"], a["is_gray"]) == (b["name"], b["is_gray"])
        assert torch.equal(cached[i]["hr"], a["hr"])  # from the cache: same values
    # kept at the stored depth, cropped, and not as a view of the uncropped decode
    kept = cached._cache[1].array
    assert kept.dtype == np.uint8 and kept.shape == (36, 48, 3) and kept.base is None
    assert np.array_equal(kept, imgs["b"][:36, :48])
    assert not nocache._cache  # a pass over the set keeps no image
    with pytest.raises(IndexError):
        nocache[2]


def test_benchmark_dataloader_batch_of_one(bench):
    batch = next(iter(DataLoader(BenchmarkDataset(bench[0], scale=4), batch_size=1)))
    assert batch["hr"].shape == (1, 3, 64, 40) and batch["name"] == ["a"]
    assert batch["is_gray"].tolist() == [True]


@pytest.mark.parametrize("layout", ["HR", "original", "GTmod12"])
def test_benchmark_set_layouts(tmp_path, layout):
    _write(tmp_path / "Set5" / layout, "baby.png", 40, 40)
    _write(tmp_path / "Set5" / "LRbicx4", "baby.png", 10, 10)  # LR folders are ignored
    assert resolve_hr_folder(tmp_path / "Set5") == tmp_path / "Set5" / layout
    ds = BenchmarkDataset(tmp_path / "Set5", scale=4)
    assert ds.name == "Set5" and len(ds) == 1 and ds[0]["hr"].shape == (3, 40, 40)
    assert BenchmarkDataset(tmp_path / "Set5" / layout, scale=4).name == "Set5"


def test_benchmark_div2k_layout_prefers_valid(tmp_path):
    _write(tmp_path / "DIV2K" / "DIV2K_train_HR", "0001.png", 30, 30)
    _write(tmp_path / "DIV2K" / "DIV2K_valid_HR", "0801.png", 30, 30)
    ds = BenchmarkDataset(tmp_path / "DIV2K", scale=2)
    assert ds.names == ["0801"] and ds.root.name == "DIV2K_valid_HR"


def test_benchmark_missing_and_empty_folders(tmp_path):
    with pytest.raises(MissingFolderError, match="does not exist"):
        BenchmarkDataset(tmp_path / "Set5", scale=4)
    (tmp_path / "Empty" / "HR").mkdir(parents=True)
    with pytest.raises(ImageError) as e:
        BenchmarkDataset(tmp_path / "Empty", scale=4)
    msg = str(e.value)
    assert str(tmp_path / "Empty") in msg and "no image files" in msg and "GTmod12/" in msg


def test_benchmark_tiny_image_rejected_at_construction(tmp_path):
    _write(tmp_path / "S", "ok.png", 64, 64)
    _write(tmp_path / "S", "tiny.png", 12, 30)
    with pytest.raises(ImageError) as e:
        BenchmarkDataset(tmp_path / "S", scale=4)
    msg = str(e.value)
    assert "tiny.png" in msg and "12x30" in msg and "scale 4" in msg
    need = benchmark_min_size(4, 4)
    assert need == 20 and f"{need}x{need}" in msg
    assert benchmark_min_size(2, 12) == 24 and benchmark_min_size(4, 8) == 24


def test_benchmark_corrupt_file_named(tmp_path):
    _write(tmp_path / "S", "ok.png", 64, 64)
    (tmp_path / "S" / "bad.png").write_text("not an image")
    with pytest.raises(ImageError, match=r"bad\.png.*not a readable image"):
        BenchmarkDataset(tmp_path / "S", scale=4)


# --------------------------------------------------------------------------- patches


@pytest.fixture
def train_dir(tmp_path) -> Path:
    for i, (h, w) in enumerate([(50, 60), (48, 48), (70, 33)]):
        _write(tmp_path / "train", f"im{i}.png", h, w, gray=(i == 1))
    return tmp_path / "train"


def test_patch_shapes_and_length(train_dir):
    ds = TrainPatchDataset(train_dir, patch_size=32, scale=4, repeats=5)
    assert len(ds) == 15 and ds.num_images == 3 and ds.names == ["im0", "im1", "im2"]
    for i in range(len(ds)):
        item = ds[i]
        assert item["hr"].shape == (3, 32, 32) and item["hr"].dtype == torch.float32
        assert item["name"] == f"im{i % 3}" and item["is_gray"] == (i % 3 == 1)
        assert 0 <= item["hr"].min() and item["hr"].max() <= 1
    with pytest.raises(IndexError):
        ds[15]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["hr"].shape == (4, 3, 32, 32)


def test_patch_size_must_be_multiple_of_scale(train_dir):
    with pytest.raises(ValueError, match="multiple of scale"):
        TrainPatchDataset(train_dir, patch_size=30, scale=4)


def test_patch_too_small_image_named_at_construction(train_dir):
    with pytest.raises(ImageError) as e:
        TrainPatchDataset(train_dir, patch_size=48, scale=4)
    msg = str(e.value)
    assert "im2.png" in msg and "70x33" in msg and "48x48 needed for patch 48 at scale 4" in msg


def test_patch_skip_small(train_dir):
    with pytest.warns(UserWarning, match=r"skipped 1 image.*im2\.png 70x33"):
        ds = TrainPatchDataset(train_dir, patch_size=48, scale=4, skip_small=True)
    assert ds.names == ["im0", "im1"]
    with pytest.raises(ValueError, match="every image"), pytest.warns(UserWarning):
        TrainPatchDataset(train_dir, patch_size=96, scale=4, skip_small=True)


def test_patch_without_augment_is_a_crop(tmp_path):
    a = _write(tmp_path / "t", "x.png", 40, 52)
    ds = TrainPatchDataset(tmp_path / "t", patch_size=16, scale=2, augment=False, repeats=20)
    ref = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    windows = ref.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, 25, 37, 16, 16)
    for i in range(len(ds)):
        p = ds[i]["hr"]
        hit = (windows == p[:, None, None]).flatten(3).all(-1).all(0)
        assert hit.any()


def test_augment_covers_all_eight_orientations(tmp_path):
    _write(tmp_path / "t", "x.png", 16, 16)  # patch == image: only the orientation varies
    ds = TrainPatchDataset(tmp_path / "t", patch_size=16, scale=4, repeats=200)
    img = ds._pixels[0].to_tensor()
    orients = {tuple(dihedral(img, k).flatten()[:32].tolist()): k for k in range(8)}
    assert len(orients) == 8
    seen = {orients[tuple(ds[i]["hr"].flatten()[:32].tolist())] for i in range(len(ds))}
    assert seen == set(range(8))


def test_dihedral_group():
    x = torch.arange(12.0).reshape(1, 3, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert torch.equal(outs[0], x)
    assert len({tuple(o.flatten().tolist()) + tuple(o.shape) for o in outs}) == 8


def test_patches_deterministic_under_torch_seed(train_dir):
    ds = TrainPatchDataset(train_dir, patch_size=16, scale=4, repeats=4)
    torch.manual_seed(3)
    a = torch.stack([ds[i]["hr"] for i in range(len(ds))])
    torch.manual_seed(3)
    b = torch.stack([ds[i]["hr"] for i in range(len(ds))])
    torch.manual_seed(4)
    c = torch.stack([ds[i]["hr"] for i in range(len(ds))])
    assert torch.equal(a, b) and not torch.equal(a, c)
    nocache = TrainPatchDataset(train_dir, patch_size=16, scale=4, repeats=4, cache=False)
    assert all(p is None for p in nocache._pixels)
    torch.manual_seed(3)
    d = torch.stack([nocache[i]["hr"] for i in range(len(nocache))])
    assert torch.equal(a, d)


def test_patches_deterministic_with_workers(train_dir):
    ds = TrainPatchDataset(train_dir, patch_size=16, scale=4, repeats=4)

    def run(seed):
        torch.manual_seed(seed)
        loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2)
        return torch.cat([b["hr"] for b in loader])

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_patches_from_memory_and_16bit(tmp_path):
    t = torch.rand(3, 20, 24)
    ds = TrainPatchDataset([InMemoryImage("mem", t, False)], patch_size=20, scale=2, augment=False)
    item = ds[0]
    assert item["name"] == "mem" and item["is_gray"] is False
    assert any(torch.equal(item["hr"], t[:, :, x : x + 20]) for x in range(5))
    with pytest.raises(ImageError, match="mem.*smaller"):
        TrainPatchDataset([InMemoryImage("mem", t, False)], patch_size=32, scale=2)

    g = (RNG.integers(0, 65536, (12, 12))).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    ds16 = TrainPatchDataset([tmp_path / "g16.png"], patch_size=12, scale=4, augment=False)
    p = ds16[0]
    assert p["is_gray"] and ds16._pixels[0].array.dtype == np.uint16  # cached compactly
    assert torch.allclose(p["hr"][0].double(), torch.from_numpy(g / 65535.0), atol=1e-7)


# --------------------------------------------------------------------------- real data (opt-in)


@pytest.mark.data
def test_real_set5(data_root):
    ds = BenchmarkDataset(data_root / "Set5", scale=4)
    assert len(ds) == 5 and ds.name == "Set5"
    assert ds.names == ["baby", "bird", "butterfly", "head", "woman"]
    for item in ds:
        h, w = item["hr"].shape[1:]
        assert item["hr"].shape[0] == 3 and h % 4 == 0 and w % 4 == 0 and not item["is_gray"]
    assert ds[0]["hr"].shape == (3, 512, 512)


@pytest.mark.data
def test_real_set14(data_root):
    ds = BenchmarkDataset(data_root / "Set14", scale=4)
    assert len(ds) == 14
    gray = {item["name"]: item["is_gray"] for item in ds}
    assert gray.pop("bridge") is True and not any(gray.values())
    for item in ds:
        assert item["hr"].shape[1] % 4 == 0 and item["hr"].shape[2] % 4 == 0
    assert ds[ds.names.index("baboon")]["hr"].shape == (3, 480, 500)
    ds3 = BenchmarkDataset(data_root / "Set14", scale=3)
    assert ds3[ds3.names.index("baboon")]["hr"].shape == (3, 480, 498)


@pytest.mark.data
def test_real_t91_patches(data_root):
    with pytest.warns(UserWarning, match="t20.bmp"):
        ds = TrainPatchDataset(data_root / "T91", patch_size=96, scale=4, skip_small=True)
    assert ds.num_images == 90
    assert ds[0]["hr"].shape == (3, 96, 96)
    full = TrainPatchDataset(data_root / "T91", patch_size=32, scale=4)
    assert full.num_images == 91


def _folder_with_bad_files(tmp_path: Path) -> Path:
    folder = tmp_path / "train"
    folder.mkdir()
    _write(folder, "good.png", 40, 48)
    (folder / "notes.png").write_text("not an image")
    _write(folder, "cut.png", 40, 48)
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:100])
    return folder


@pytest.mark.parametrize("cache", [True, False])
def test_training_images_that_cannot_be_read_raise_or_are_skipped(tmp_path, cache):
    """``on_error=skip``: every image checked once at set-up, the bad ones listed with reasons."""
    folder = _folder_with_bad_files(tmp_path)
    with pytest.raises(ImageError, match=r"cut\.png|notes\.png"):
        TrainPatchDataset(folder, 16, 2, cache=cache)
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 training image\(s\).*cut\.png \(.*notes\.png \("):
        ds = TrainPatchDataset(folder, 16, 2, cache=cache, on_error="skip")
    assert ds.names == ["good"] and ds[0]["hr"].shape == (3, 16, 16)
    (folder / "good.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no training image left: all 2 cannot be read"):
        TrainPatchDataset(folder, 16, 2, cache=cache, on_error="skip")
    with pytest.raises(ValueError, match="data.on_error=.ignore.: must be one of raise, skip"):
        TrainPatchDataset(folder, 16, 2, on_error="ignore")
