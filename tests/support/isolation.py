"""The test session's own home (imported by ``conftest.py`` before any test module): the
environment is redirected when this module is first imported, once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REAL_HOME = Path(os.path.expanduser("~")).resolve()
WATCHED = (
    ".local/share/inference-runtime",
    ".cache/inference-runtime",
    ".config/inference-runtime",
    ".cache/huggingface",
)
"""Folders under the real home that the runtime (its state database, converted models) or
transformers would write to when left to their defaults."""
SESSION_ROOT = Path(tempfile.mkdtemp(prefix="inference-runtime-tests-"))
MODEL_CACHE = Path(tempfile.gettempdir()) / "inference-runtime-tests-cache"
"""Converted models are kept between sessions, but under the temporary folder: converting the
built-in GGUF model costs seconds at every start otherwise."""


PROXY_VARIABLES = tuple(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    for name in (base, base.lower())
)
"""Upstream calls honour these (as curl does, with no automatic loopback bypass): a machine's
proxy would otherwise carry the tests' loopback calls. Tests of the proxy set their own."""


def _isolate() -> None:
    home = SESSION_ROOT / "home"
    home.mkdir()
    for name in PROXY_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(
        {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "HF_HOME": str(home / ".cache" / "huggingface"),
            "INFERENCE_RUNTIME_DATA_DIR": str(SESSION_ROOT / "data"),
            "INFERENCE_RUNTIME_CACHE_DIR": str(MODEL_CACHE),
            # hypothesis keeps its example database in the working folder otherwise
            "HYPOTHESIS_STORAGE_DIRECTORY": str(SESSION_ROOT / "hypothesis"),
        }
    )


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """Every file and folder under the watched folders of ``root``: size and mtime."""
    found: dict[str, tuple[int, float]] = {}
    for relative in WATCHED:
        top = root / relative
        if not top.exists():
            continue
        for folder, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                path = os.path.join(folder, name)
                try:
                    stat = os.lstat(path)
                except OSError:
                    continue
                found[path] = (stat.st_size, stat.st_mtime)
    return found


BEFORE = snapshot(REAL_HOME)
"""The real home's watched folders when the session started."""
_isolate()
