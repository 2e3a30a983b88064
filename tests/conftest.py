"""Shared test set-up.

Triton runs here only in its interpreter, which must be selected before ``import triton``;
tests that need real data opt in through ``TAID_CAR_DATA`` (a folder holding Set5/, Set14/, T91/).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Must be set before anything imports triton (the interpreter runs kernels on CPU tensors).
os.environ.setdefault("TRITON_INTERPRET", "1")
# Never talk to W&B servers from tests.
os.environ.setdefault("WANDB_MODE", "offline")

import torch

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
