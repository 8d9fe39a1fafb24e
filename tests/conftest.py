from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    # One thread: tiny test tensors gain nothing from more, and OpenMP threads spinning against other
    # processes on a busy 2-core machine make them up to 100x slower.
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real data beside the checkout (../shared/data); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
