"""Every test gets its own data folder, so state databases never leak between tests (or into
the user's home); subprocesses inherit it through the environment."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("INFERENCE_RUNTIME_DATA_DIR", str(folder))
    return folder
