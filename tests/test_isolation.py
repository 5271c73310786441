"""The suite never writes outside temporary folders: the session's environment points every
folder the runtime or transformers writes to into a temporary one (see ``isolation.py``), and
the session fails if anything changed under the real home's watched folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from inference_runtime.config import read_environment
from support import isolation


def _under(path: str | Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def test_the_runtime_folders_point_into_temporary_ones() -> None:
    env = read_environment()
    temporary = Path(tempfile.gettempdir())
    for folder in (env.data_dir, env.cache_dir, os.environ["HOME"], os.environ["HF_HOME"]):
        assert _under(folder, temporary), folder
        assert not _under(folder, isolation.REAL_HOME) or _under(isolation.REAL_HOME, temporary)


def test_defaults_under_the_home_land_in_the_session_home(monkeypatch: pytest.MonkeyPatch) -> None:
    # what `serve` resolves when no INFERENCE_RUNTIME_* variable is set: still not the real home
    for name in ("INFERENCE_RUNTIME_DATA_DIR", "INFERENCE_RUNTIME_CACHE_DIR"):
        monkeypatch.delenv(name)
    env = read_environment()
    assert _under(env.data_dir, isolation.SESSION_ROOT)
    assert _under(env.cache_dir, isolation.SESSION_ROOT)


def test_the_watch_sees_a_write_under_a_home(tmp_path: Path) -> None:
    before = isolation.snapshot(tmp_path)
    target = tmp_path / ".local" / "share" / "inference-runtime"
    target.mkdir(parents=True)
    (target / "state.db").write_bytes(b"x")
    after = isolation.snapshot(tmp_path)
    assert set(after) - set(before) >= {str(target / "state.db")}


def test_no_proxy_of_the_machine_reaches_the_tests() -> None:
    assert not [name for name in isolation.PROXY_VARIABLES if name in os.environ]
