"""The Triton resampler compiles for real GPUs (sm_80, sm_90) with no GPU: every variant the
autotuner can pick, through the ptxas bundled in Triton's wheel, with no register spills.

Runs ``python -m taid_car.ops.compile_report`` in a subprocess, since the test session itself
uses Triton's interpreter on CPU (the report needs compiled Triton).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("triton")

from taid_car.ops import compile_report

REPORT = Path(__file__).resolve().parents[1] / "experiments" / "compile_report" / "report.json"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("compile") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out.parent / "cache")
    res = subprocess.run(
        [sys.executable, "-m", "taid_car.ops.compile_report", "--json", str(out),
         "--jobs", str(os.cpu_count() or 1)],
        check=False, env=env, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_variant_compiles_without_spills(report):
    rows = report["variants"]
    assert len(rows) == len(compile_report.variants()) == 144
    assert {r["arch"] for r in rows} == {80, 90}
    assert all(r["ok"] for r in rows), [r["error"] for r in rows if not r["ok"]]
    assert not compile_report.failures(rows)
    assert all(r["spill_store_bytes"] == r["spill_load_bytes"] == 0 for r in rows)
    assert all(0 < r["registers"] <= 255 for r in rows)


@pytest.mark.slow
def test_compiled_code_vectorises_and_uses_relaxed_atomics(report):
    """The channels-last image gives vector gathers; the image gradient's atomics are relaxed;
    the backward without image gradient has no atomics at all."""
    rows = report["variants"]
    assert all(r["vector_loads"] > 0 for r in rows)
    for r in rows:
        if r["kernel"] == "backward+image":
            assert r["atomics"] > 0 and r["relaxed_atomics"] == r["atomics"], r
        else:
            assert r["atomics"] == 0, r


def test_committed_report_is_current():
    """experiments/compile_report/report.json lists the variants the code offers today."""
    committed = json.loads(REPORT.read_text())["variants"]
    keys = lambda rows: sorted(
        (r["arch"], r["kernel"], r["dtypes"], r["block_p"], r["block_t"], r["num_warps"]) for r in rows
    )
    assert keys(committed) == keys(
        [asdict(v) for v in compile_report.variants()]
    ), "re-run: python -m taid_car.ops.compile_report --json experiments/compile_report/report.json"
    assert not compile_report.failures(committed)


def test_failures_flag_errors_and_spills():
    base = {"arch": 90, "kernel": "forward", "dtypes": "fp32", "block_p": 64, "block_t": 4,
            "num_warps": 4, "ok": True, "error": None, "registers": 80, "spill_store_bytes": 0,
            "spill_load_bytes": 0, "stack_bytes": 0, "shared_bytes": 0, "vector_loads": 4,
            "scalar_loads": 3, "atomics": 0, "relaxed_atomics": 0}
    spill = base | {"dtypes": "fp64", "spill_store_bytes": 8, "spill_load_bytes": 8}
    broken = base | {"ok": False, "error": "CompilationError: boom"}
    assert compile_report.failures([base]) == []
    bad = compile_report.failures([base, spill, broken])
    assert len(bad) == 2 and "spills 8 B" in bad[0] and "boom" in bad[1]
    table = compile_report.markdown([base, spill, broken])
    assert "3 variants, 2 compiled, 2 failing" in table and "**error**" in table


def test_report_refuses_the_interpreter(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        compile_report.main(["--arch", "90"])
    assert "TRITON_INTERPRET" in capsys.readouterr().err
