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


def test_canonical_wiring_runs_as_written() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _block("<!-- example: wiring -->")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "4"


def test_example_config_is_valid() -> None:
    from inference_runtime.config import load_config

    config = load_config(ROOT / "examples" / "fake.yaml")
    assert [d.name for d in config.deployments] == ["fake-chat"]


def test_readme_config_example_is_valid() -> None:
    import yaml

    from inference_runtime.config import RuntimeConfig

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Serving from a config", 1)[1].split("```yaml", 1)[1]
    config = RuntimeConfig.from_dict(yaml.safe_load(block.split("```", 1)[0]))
    assert config.deployments[0].budget is not None


def test_readme_remote_example_is_valid() -> None:
    import yaml

    from inference_runtime.config import RuntimeConfig
    from inference_runtime.remote.config import RemoteConfig

    readme = (ROOT / "README.md").read_text()
    block = readme.split("Remote providers (any OpenAI-compatible", 1)[1].split("```yaml", 1)[1]
    config = RuntimeConfig.from_dict(yaml.safe_load(block.split("```", 1)[0]))
    remote = RemoteConfig.of(config.deployments[0])
    assert remote.rate_limits is not None
    assert remote.retry.max_retries == 3


def test_readme_cluster_example_is_valid() -> None:
    import yaml

    from inference_runtime.config import RuntimeConfig

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Across machines on Ray", 1)[1].split("```yaml", 1)[1]
    config = RuntimeConfig.from_dict(yaml.safe_load(block.split("```", 1)[0]))
    assert config.cluster.backend == "ray"
    assert "--ray" in readme.split("## Across machines on Ray", 1)[1].split("```bash", 1)[1]
