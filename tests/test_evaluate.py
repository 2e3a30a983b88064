"""The evaluation command: config composition, the sample-data run, and the published table."""

from __future__ import annotations

import json
import math

import pytest

from helpers import compose_evaluate
from taid_car.evaluate import run_evaluation
from taid_car.scoring.report import markdown_table, read_json, write_results


def test_bicubic_on_embedded_sample_set(tmp_path):
    cfg = compose_evaluate(["scales=[2,4]"])
    results = run_evaluation(cfg)
    assert [(r.set_name, r.scale) for r in results] == [("sample", 2), ("sample", 4)]
    for r in results:
        assert r.images == 4 and len(r.per_image) == 4
        assert 20 < r.psnr_y < 45 and 0.5 < r.ssim_y < 1
        assert r.psnr_y == pytest.approx(r.bicubic_psnr_y)  # the method is the reference here
        assert math.isinf(r.lr_psnr_y)  # identical LR
    assert results[0].psnr_y > results[1].psnr_y  # x2 is easier than x4
    paths = write_results(results, tmp_path)
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    rows = json.loads(paths["json"].read_text(), parse_constant=refuse)  # strict JSON: no Infinity
    assert rows[0]["lr_psnr_y"] == "inf" and math.isinf(read_json(paths["json"])[0]["lr_psnr_y"])
    assert rows[1]["per_image"][3]["name"] == "camera" and rows[1]["per_image"][3]["is_gray"]
    assert "| bicubic & bicubic | sample | x4 |" in markdown_table(results)


def test_misspelt_key_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_evaluate(["scael=4"])
    with pytest.raises(ConfigCompositionException):
        compose_evaluate(["model=nosuchmodel"])


def test_missing_dataset_folder_is_named(tmp_path):
    cfg = compose_evaluate(["data=benchmark", f"data_root={tmp_path}/nowhere"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_evaluation(cfg)


PUBLISHED = {  # Bicubic & Bicubic, (PSNR-Y dB, SSIM-Y), from the CAR paper's table
    ("Set5", 2): (33.66, 0.9299),
    ("Set14", 2): (30.24, 0.8688),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 4): (26.00, 0.7027),
}


@pytest.mark.data
def test_reproduces_published_bicubic_table(data_root):
    cfg = compose_evaluate(["data=benchmark", f"data_root={data_root}", "scales=[2,4]"])
    results = {(r.set_name, r.scale): r for r in run_evaluation(cfg)}
    assert set(results) == set(PUBLISHED)
    for key, (psnr, ssim) in PUBLISHED.items():
        got = results[key]
        assert got.images == (5 if key[0] == "Set5" else 14)
        assert got.psnr_y == pytest.approx(psnr, abs=0.02), key
        assert got.ssim_y == pytest.approx(ssim, abs=0.002), key
