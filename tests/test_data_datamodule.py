"""The DataModule: training patches, per-set val/test loaders, a held-out split of a training folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from taid_car.data.datamodule import RescaleDataModule


def _folder(tmp_path, count: int):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


def test_holdout_is_disjoint_from_training_and_validated_first(tmp_path):
    folder = _folder(tmp_path, 7)
    dm = RescaleDataModule(scale=2, train=str(folder), val_sets={"extra": str(folder)}, lr_patch_size=8,
                           batch_size=2, holdout=3)
    dm.setup("fit")
    assert dm.val_set_names == ["imgs_holdout", "extra"] == list(dm.val_sets)
    held = set(dm.val_sets["imgs_holdout"].names)
    trained = set(dm.train_set.names)
    assert held == {"im00", "im03", "im06"}  # evenly spaced in name order
    assert not held & trained and len(held | trained) == 7
    assert len(dm.val_dataloader()) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (2, 3, 16, 16)


def test_holdout_needs_a_folder_and_a_sensible_count(tmp_path):
    folder = _folder(tmp_path, 3)
    with pytest.raises(ValueError, match="between 1 and 2"):
        RescaleDataModule(scale=2, train=str(folder), lr_patch_size=8, holdout=3).setup("fit")
    with pytest.raises(ValueError, match="needs a folder"):
        RescaleDataModule(scale=2, train="builtin:train", lr_patch_size=8, holdout=1).setup("fit")


def test_crop_multiple_comes_from_the_downscaler():
    """No ``model.multiple`` key: the downscaler says what it needs (CAR: its kernel net's stride)."""
    from taid_car.models import BicubicDownscaler, CARDownscaler

    car = CARDownscaler(4, preset="small")
    assert car.size_multiple == 8 and CARDownscaler(3, preset="small").size_multiple == 12
    dm = RescaleDataModule(scale=4, lr_patch_size=16)
    dm.fit_downscaler(car)
    assert dm.modcrop == 8
    dm = RescaleDataModule(scale=4, lr_patch_size=16)
    dm.fit_downscaler(BicubicDownscaler(4))
    assert dm.modcrop == 4
    dm = RescaleDataModule(scale=4, lr_patch_size=16, modcrop=24)  # explicit: one crop for a study
    dm.fit_downscaler(car)
    assert dm.modcrop == 24


def test_patch_size_and_modcrop_must_fit_the_downscaler():
    from taid_car.models import CARDownscaler

    with pytest.raises(ValueError, match=r"HR patches of 10 px.*not a multiple of 8 \(CARDownscaler"):
        RescaleDataModule(scale=2, lr_patch_size=5).fit_downscaler(CARDownscaler(2, preset="small"))
    with pytest.raises(ValueError, match="data.modcrop=12 is not a multiple of 8"):
        RescaleDataModule(scale=4, lr_patch_size=16, modcrop=12).fit_downscaler(CARDownscaler(4, preset="small"))


def test_data_folder_without_a_training_folder_is_refused(tmp_path):
    """``train: ???`` would not override the inherited sample-set default: it is null, and refused."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from taid_car.config import CONFIG_DIR
    from taid_car.errors import UsageError

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=folder", f"data_root={tmp_path}"])
    assert cfg.data.train is None
    with pytest.raises(Exception) as info:  # Hydra wraps what the constructor raised
        instantiate(cfg.data)
    err = info.value if isinstance(info.value, UsageError) else info.value.__cause__
    assert isinstance(err, UsageError) and "data=folder needs data.train=" in str(err)
