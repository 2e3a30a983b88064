"""The one scoring pipeline and the one table writer every entry point uses."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from taid_car.models import BicubicDownscaler, BicubicUpscaler, TAIDDownscaler
from taid_car.scoring import tables
from taid_car.scoring.pipeline import bicubic_reference, rescale_and_score
from taid_car.scoring.tables import Column
from taid_car.scoring.tasks import RESIZE


def test_bicubic_through_the_pipeline_is_its_own_reference():
    hr = torch.rand(2, 3, 24, 20, dtype=torch.float64)
    out = rescale_and_score(BicubicDownscaler(2), BicubicUpscaler(2), hr, 2, [False, True])
    assert set(out.scores) == set(RESIZE.result_scores)
    assert all(v.shape == (2,) and v.dtype == torch.float64 for v in out.scores.values())
    assert torch.equal(out.scores["psnr_y"], out.scores["bicubic_psnr_y"])
    assert torch.isinf(out.scores["lr_psnr_y"]).all()
    lr, sr = bicubic_reference(hr, 2)
    assert torch.equal(out.lr, lr) and torch.equal(out.bicubic_sr, sr)
    assert torch.equal(out.lr * 255, (out.lr * 255).round())  # on the 8-bit grid


def test_without_reference_only_the_methods_scores():
    hr = torch.rand(1, 3, 16, 16)
    out = rescale_and_score(TAIDDownscaler(2), BicubicUpscaler(2), hr, 2, False, reference=False)
    assert set(out.scores) == set(RESIZE.scores) and out.bicubic_sr is None
    assert math.isfinite(float(out.scores["lr_psnr_y"]))


def test_scoring_and_evaluate_import_neither_lightning_nor_wandb():
    """Scoring needs no training stack: `python -m taid_car.evaluate` starts in about torch's import time."""
    code = ("import sys, taid_car.scoring.pipeline, taid_car.scoring.benchmark, taid_car.evaluate, taid_car.models.trained; "
            "print(sorted(m for m in ('lightning', 'wandb', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_table_writer_markdown_csv_and_missing_values(tmp_path):
    columns = [Column("name", "Name", text=True), Column("db", "PSNR (dB)", "{:.2f}"),
               Column("gain", "Gain", lambda r: f"{r['db'] - 30:+.1f}")]
    rows = [{"name": "a|b", "db": 31.234}, {"name": "c", "db": 29.0, "extra": 1}]
    text = tables.markdown_table(rows, columns, title="T", caption="a caption")
    assert text.splitlines()[:4] == ["**T**", "", "| Name | PSNR (dB) | Gain |", "|---|---:|---:|"]
    assert "| a\\|b | 31.23 | +1.2 |" in text and text.endswith("\na caption.\n")
    assert tables.cells([{"name": "x", "db": None}], columns[:2]) == [["x", tables.MISSING]]
    path = tables.write_csv(rows, ["name", "db"], tmp_path / "t.csv")
    assert path.read_text().splitlines() == ["name,db", "a|b,31.234", "c,29.0"]
    with pytest.raises(FileExistsError):
        tables.write_csv(rows, ["name"], path, overwrite=False)
