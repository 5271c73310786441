"""``cluster.role``: typed and checked in the config, and ``serve --role`` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_runtime.cli.main import build_parser, main
from inference_runtime.config import RuntimeConfig

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fake.yaml"


def test_the_role_is_head_by_default_and_gateway_needs_ray() -> None:
    assert RuntimeConfig.from_dict({}).cluster.role == "head"
    config = RuntimeConfig.from_dict({"cluster": {"backend": "ray", "role": "gateway"}})
    assert config.cluster.role == "gateway"
    with pytest.raises(ValueError, match=r"cluster\.role: 'boss' is not one of head, gateway"):
        RuntimeConfig.from_dict({"cluster": {"backend": "ray", "role": "boss"}})
    with pytest.raises(ValueError, match=r"it needs cluster\.backend: ray"):
        RuntimeConfig.from_dict({"cluster": {"role": "gateway"}})
    with pytest.raises(ValueError, match="sync_interval_s must be > 0 and board_ttl_s > it"):
        RuntimeConfig.from_dict({"cluster": {"sync_interval_s": 1, "board_ttl_s": 0.5}})


def test_serve_takes_a_role(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).role is None
    assert parser.parse_args(["serve", "--ray", "h:6379", "--role", "gateway"]).role == "gateway"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--role", "boss"])
    assert main(["serve", "--role", "gateway", "--config", str(EXAMPLE), "--port", "0"]) == 2
    assert "needs cluster.backend: ray" in capsys.readouterr().err
