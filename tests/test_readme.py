"""The README's examples run as printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _block(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    assert marker in readme, marker
    return readme.split(marker, 1)[1].split("```python", 1)[1].split("```", 1)[0]


def test_kernel_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _block("<!-- example: kernel -->")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["/user/sup/counter", "2", "1", "counter stopped: /user/sup/counter"]
    assert lines[4].startswith("SystemStatistics(")
