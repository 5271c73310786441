"""The runtime's configuration file (YAML): a gateway and a list of deployments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

from inference_runtime.types import Deployment


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP listener."""

    host: str = "127.0.0.1"
    """Address to bind (loopback by default)."""
    port: int = 8080
    """TCP port; 0 picks a free one (tests)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Larger request bodies get 413."""
    drain_timeout_s: float = 30.0
    """On shutdown, how long in-flight requests may take to finish."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"gateway.port: {self.port} is not a TCP port (0-65535)")
        if self.max_body_bytes < 1024:
            raise ValueError("gateway.max_body_bytes: must be >= 1024")
        if self.drain_timeout_s < 0:
            raise ValueError("gateway.drain_timeout_s: must be >= 0")


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole server: its gateway and the deployments it serves."""

    gateway: GatewayConfig = GatewayConfig()
    deployments: tuple[Deployment, ...] = ()

    def __post_init__(self) -> None:
        names = [d.name for d in self.deployments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"deployments: names must be unique; repeated: {duplicates}")
        known = set(names)
        for dep in self.deployments:
            missing = [f for f in dep.fallbacks if f not in known]
            if missing:
                raise ValueError(
                    f"deployments[{dep.name}].fallbacks: unknown deployment(s) {missing}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConfig:
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as error:
            raise ValueError(f"invalid config: {error}") from None


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and validate a YAML config file; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ValueError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping (gateway:, deployments:)")
    try:
        return RuntimeConfig.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
