"""Shared test set-up.

Triton's interpreter (CPU tensors) is selected only when CUDA is absent, or when asked for with
``TRITON_INTERPRET=1``; on a GPU machine the Triton tests run compiled, through the autotuner.
It must be chosen before anything imports triton (``import torch`` does not).
Tests that need real data opt in through ``TAID_CAR_DATA`` (a folder holding Set5/, Set14/, T91/).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
# Never talk to W&B servers from tests.
os.environ.setdefault("WANDB_MODE", "offline")

DATA_ENV = "TAID_CAR_DATA"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-image root from ``$TAID_CAR_DATA``; skips the test when it is not set."""
    root = os.environ.get(DATA_ENV)
    if not root:
        pytest.skip(f"${DATA_ENV} is not set: real-image tests are opt-in (CI points it at ../shared/data)")
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f"${DATA_ENV}={root!r} is not a directory")
    return path


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when CUDA is absent, with the reason shown in the summary."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def no_network(monkeypatch) -> None:
    """Make any socket connection attempt fail (for code that could download)."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
