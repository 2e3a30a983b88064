"""The CLIs answer a user's mistake in one line on stderr with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taid_car.errors import UsageError, one_line, reported, user_error


def test_a_user_error_is_one_line_and_exit_2(capsys, monkeypatch):
    from taid_car.data.io import ImageError

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info, reported("prog"):
        raise ImageError("a.png", "truncated file")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error: ") and "a.png" in err


def test_wrapped_user_errors_are_found_and_bugs_are_not_hidden(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        try:
            raise UsageError("first line\nsecond line")
        except UsageError as inner:
            raise RuntimeError("Error in call to target ...") from inner  # as Hydra's instantiate wraps
    except RuntimeError as outer:
        assert one_line(user_error(outer)) == "first line second line"
    with pytest.raises(KeyError), reported("prog"):
        raise KeyError("a bug keeps its traceback")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UsageError), reported("prog"):
        raise UsageError("HYDRA_FULL_ERROR=1 shows the traceback")


def test_evaluate_with_a_missing_dataset_folder_says_it_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["TAID_CAR_CACHE"] = str(tmp_path / "cache")
    res = subprocess.run(
        [sys.executable, "-m", "taid_car.evaluate", "data=benchmark", f"data_root={tmp_path}/nowhere",
         "progress=false", f"hydra.run.dir={tmp_path}/run"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("taid_car.evaluate: error: ") and "Set5" in lines[-1]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("value", ["0", "abc", "1.5"])
@pytest.mark.slow
def test_a_bad_scale_is_named_in_one_line(tmp_path, value):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    res = subprocess.run(
        [sys.executable, "-m", "taid_car.run", f"scale={value}", "logger=none", f"hydra.run.dir={tmp_path}/r"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("taid_car.run: error: scale=") and value in last and "integer >= 2" in last
    assert "Traceback" not in res.stderr


def test_rescale_output_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    from taid_car.rescale import main

    existing = tmp_path / "out.txt"
    existing.write_text("x")
    code = main(["roundtrip", "--ckpt", str(tmp_path / "none.ckpt"), "--input", str(tmp_path),
                 "--output", str(existing)])
    assert code == 2 and "is a file: give a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_scale_the_model_does_not_support_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    res = subprocess.run(
        [sys.executable, "-m", "taid_car.run", "model=car", "scale=5", "logger=none", f"hydra.run.dir={tmp_path}/r"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "taid_car.run: error: CAR kernel net does not support scale 5" in res.stderr
