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


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unetkit-cache")


@pytest.fixture(autouse=True)
def _cache_dir(_session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Exported graphs and the measured backend choice go to a per-session folder, never the user's cache
    # (one measurement per test session; tests of the cache itself point UNETKIT_CACHE_DIR elsewhere).
    monkeypatch.setenv("UNETKIT_CACHE_DIR", str(_session_cache))


@pytest.fixture
def shared_data() -> Path:
    """The real data beside the checkout (../shared/data); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
