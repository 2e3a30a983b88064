"""Val/test sets by name (a list under ``data.root``) or by folder (a mapping), from Python and from
the composed Hydra configs, through to an evaluation run on a tiny generated ``data_root``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from PIL import Image

from taid_car.config import CONFIG_DIR
from taid_car.data import DATASETS, DatasetNotFoundError
from taid_car.data.datamodule import RescaleDataModule
from taid_car.data.sources import SetSpecError, open_test_sets, resolve_set_specs

pytestmark = pytest.mark.usefixtures("no_network")


def _images(folder: Path, count: int, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    """Smooth random RGB PNGs (bicubic scores them in a sensible range)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / 6.0
    for i in range(count):
        phase = rng.uniform(0, np.pi, 3)
        img = 127.5 + 90 * np.sin(x[..., None] * (i + 1) / 2 + phase) * np.cos(y[..., None] + phase)
        img += rng.normal(0, 4, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture
def root(tmp_path) -> Path:
    """A data root with two small sets, ``Tiny`` (2 images) and ``Set5`` (3 images)."""
    _images(tmp_path / "data" / "Tiny", 2, seed=0)
    _images(tmp_path / "data" / "Set5", 3, seed=1)
    (tmp_path / "data" / "notes.txt").write_text("not a set")
    return tmp_path / "data"


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    if name == "evaluate":
        with open_dict(cfg):
            cfg.progress = False
    return cfg


# --- resolve_set_specs ------------------------------------------------------------------------

def test_list_of_names_resolves_under_the_root(root):
    assert resolve_set_specs(["Tiny", "Set5"], root) == {"Tiny": str(root / "Tiny"), "Set5": str(root / "Set5")}
    assert resolve_set_specs("Tiny", str(root)) == {"Tiny": str(root / "Tiny")}  # one name: `data.test_sets=Tiny`
    assert resolve_set_specs(OmegaConf.create(["Set5"]), root) == {"Set5": str(root / "Set5")}  # a ListConfig
    assert resolve_set_specs([], root) == {} and resolve_set_specs(None, None) == {}


def test_known_names_without_a_folder_are_left_to_the_cache(root):
    """No folder under the root: a known set (aliases spelled as the set) is looked up when opened."""
    assert resolve_set_specs(["B100", "manga109", "general100"], root) == {
        "B100": str(root / "B100"), "Manga109": str(root / "Manga109"), "General100": str(root / "General100"),
    }
    assert resolve_set_specs(["bsd100"], root) == {"B100": str(root / "B100")}
    (root / "bsd100").mkdir()  # a folder of that name is used as it is
    assert resolve_set_specs(["bsd100"], root) == {"bsd100": str(root / "bsd100")}


def test_mapping_form_is_unchanged(root, tmp_path):
    specs = {"mine": str(tmp_path / "elsewhere"), "sample": "builtin:test", "Set5": str(root / "Set5")}
    assert resolve_set_specs(specs, root) == specs
    assert resolve_set_specs(OmegaConf.create(specs), None) == specs  # no root needed
    assert resolve_set_specs({"p": tmp_path}, None) == {"p": str(tmp_path)}  # a Path works too


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        (["Set5", 5], r"data\.test_sets\[1\]: expected a set name \(a string such as Set5\), got 5 \(int\)"),
        (["Set5", {"B100": "/x/B100"}], (r"data\.test_sets\[1\]: \{'B100': '/x/B100'\} is a mapping inside a "
                                         r"list.*'~data\.test_sets' '\+data\.test_sets=\{B100: /path/to/B100\}'")),
        (["/abs/B100"], r"data\.test_sets\[0\]: '/abs/B100' is not a set name"),
        (["builtin:test"], r"data\.test_sets\[0\]: 'builtin:test' is not a set name.*builtin:<split>"),
        ([""], r"data\.test_sets\[0\]: '' is not a set name"),
        (["Set5", "Tiny", "Set5"], r"data\.test_sets\[2\]: 'Set5' is listed twice"),
        (["B100", "bsd100"], r"data\.test_sets\[1\]: 'B100' is listed twice \(as 'bsd100'\)"),
        (42, r"data\.test_sets: expected a list of set names .* got 42 \(int\)"),
        ({"Set5": None}, r"data\.test_sets\.Set5: expected a folder or builtin:<split>, got None"),
    ],
)
def test_bad_entries_are_named(root, specs, match):
    with pytest.raises(SetSpecError, match=match):
        resolve_set_specs(specs, root)


def test_names_need_a_root():
    with pytest.raises(SetSpecError, match=r"data\.val_sets=\['Set5'\] lists set names.*data\.root is not set"):
        resolve_set_specs(["Set5"], None, "data.val_sets")


def test_unknown_name_without_folder_says_where_it_looked_and_what_is_known(root):
    with pytest.raises(DatasetNotFoundError) as e:
        resolve_set_specs(["Tiny", "Set55"], root, "data.val_sets")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert msg.startswith("data.val_sets[1]: no folder ") and str(root / "Set55") in msg
    assert "'Set55' is not a known dataset" in msg and all(n in msg for n in DATASETS)
    assert f"folders in {root}: Set5, Tiny" in msg  # what is there (files left out)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        resolve_set_specs(["Set55"], root / "nowhere")


# --- the DataModule and open_test_sets ------------------------------------------------------------

def test_datamodule_takes_lists_with_a_root(root):
    dm = RescaleDataModule(scale=2, val_sets=["Tiny"], test_sets=["Tiny", "Set5"], root=str(root), lr_patch_size=8)
    assert dm.val_specs == {"Tiny": str(root / "Tiny")}
    assert dm.test_set_names == ["Tiny", "Set5"] and dm.val_set_names == ["Tiny"]
    dm.setup("test")
    assert [len(ds) for ds in dm.test_sets.values()] == [2, 3]
    with pytest.raises(SetSpecError, match=r"data\.val_sets\[0\]"):
        RescaleDataModule(scale=2, val_sets=[3], root=str(root))
    with pytest.raises(DatasetNotFoundError, match=r"data\.test_sets\[0\]: no folder"):
        RescaleDataModule(scale=2, test_sets=["Nope"], root=str(root))


def test_open_test_sets_with_names_and_with_folders(root):
    sets = open_test_sets({"test_sets": ["Set5", "Tiny"], "root": str(root), "modcrop": None}, 2)
    assert list(sets) == ["Set5", "Tiny"] and [len(s) for s in sets.values()] == [3, 2]
    sets = open_test_sets({"test_sets": {"mine": str(root / "Tiny")}}, 2)  # no root, no download key
    assert list(sets) == ["mine"] and len(sets["mine"]) == 2
    with pytest.raises(ValueError, match="data.test_sets is empty"):
        open_test_sets({"test_sets": [], "root": str(root)}, 2)


def test_known_set_missing_everywhere_names_the_folder_and_the_cache(root, tmp_path, monkeypatch):
    monkeypatch.setenv("TAID_CAR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as e:
        open_test_sets({"test_sets": ["Manga109"], "root": str(root)}, 2)
    msg = str(e.value)
    assert f"Manga109: {root / 'Manga109'} does not exist" in msg
    assert str(tmp_path / "cache" / "Manga109") in msg and "manual placement only" in msg


# --- composed configs ---------------------------------------------------------------------------

def test_evaluate_config_with_a_list_of_names(root):
    cfg = _compose("evaluate", ["data=benchmark", f"data_root={root}", "data.test_sets=[Set5,Tiny]", "scales=[2,4]"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert data["root"] == str(root) and data["test_sets"] == ["Set5", "Tiny"]
    assert resolve_set_specs(data["test_sets"], data["root"]) == {"Set5": str(root / "Set5"), "Tiny": str(root / "Tiny")}
    default = OmegaConf.to_container(_compose("evaluate", ["data=benchmark", "data_root=/D"]).data, resolve=True)
    assert (default["test_sets"], default["val_sets"], default["root"]) == (["Set5", "Set14"], ["Set5"], "/D")


def test_mapping_override_replaces_the_list(root, tmp_path):
    cfg = _compose("evaluate", ["data=benchmark", "~data.test_sets", f"+data.test_sets={{mine: {root / 'Tiny'}}}"])
    assert OmegaConf.to_container(cfg.data.test_sets) == {"mine": str(root / "Tiny")}


def test_training_config_instantiates_the_datamodule_with_names(root):
    cfg = _compose("config", ["data=benchmark", f"data_root={root}", "data.test_sets=[Set5,Tiny]",
                              "data.val_sets=[Tiny]", "model=bicubic"])
    dm = instantiate(cfg.data)
    assert dm.test_specs == {"Set5": str(root / "Set5"), "Tiny": str(root / "Tiny")}
    assert dm.val_specs == {"Tiny": str(root / "Tiny")}
    t91 = instantiate(_compose("config", ["data=t91", f"data_root={root}", "data.val_sets=[Tiny]"]).data)
    assert t91.val_set_names == ["T91_holdout", "Tiny"]


def test_evaluate_end_to_end_on_sets_given_by_name(root):
    from taid_car.evaluate import run_evaluation

    cfg = _compose("evaluate", ["data=benchmark", f"data_root={root}", "data.test_sets=[Tiny,Set5]", "scales=[2,4]"])
    results = run_evaluation(cfg)
    assert [(r.set_name, r.scale, r.images) for r in results] == [
        ("Tiny", 2, 2), ("Set5", 2, 3), ("Tiny", 4, 2), ("Set5", 4, 3),
    ]
    for r in results:
        assert 15 < r.psnr_y < 60 and r.psnr_y == pytest.approx(r.bicubic_psnr_y)
        assert math.isinf(r.lr_psnr_y)  # bicubic & bicubic: the LR is the bicubic LR
    by = {(r.set_name, r.scale): r.psnr_y for r in results}
    assert by[("Tiny", 2)] > by[("Tiny", 4)]


def test_evaluate_with_an_unknown_name_fails_before_scoring(root):
    from taid_car.evaluate import run_evaluation

    cfg = _compose("evaluate", ["data=benchmark", f"data_root={root}", "data.test_sets=[Tiny,Tiny2]"])
    with pytest.raises(FileNotFoundError, match=r"data\.test_sets\[1\]: no folder .*Tiny2.*known: "):
        run_evaluation(cfg)
