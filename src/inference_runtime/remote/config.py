"""``RemoteConfig``: a remote deployment's ``runtime_config``, typed and validated."""

from __future__ import annotations

from typing import Any

import msgspec

from inference_runtime.remote.sendable import check_sendable
from inference_runtime.remote.settings import (
    CircuitBreakerConfig,
    RateLimits,
    RetryPolicy,
    Timeouts,
)
from inference_runtime.types import Deployment

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}


class RemoteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    base_url: str = ""
    """The provider's API root, e.g. ``http://127.0.0.1:8000/v1`` for a vLLM server."""
    api_key_env: str | None = None
    """Environment variable holding the key (read again on a 401 and on rebuild-session)."""
    api_key_file: str | None = None
    """File holding the key (e.g. a mounted secret), read like ``api_key_env``."""
    model: str = ""
    """The upstream model name; default: the deployment's ``model`` (or its name)."""
    max_concurrent: int = 64
    """Requests in flight to the upstream at once from this replica."""
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    rate_limits: RateLimits | None = None
    headers: dict[str, str] = {}
    """Extra headers for every upstream request (e.g. an organisation id)."""
    anthropic_version: str = "2023-06-01"
    """Sent as ``anthropic-version`` to Anthropic."""

    def __post_init__(self) -> None:
        if self.api_key_env and self.api_key_file:
            raise ValueError("runtime_config: set api_key_env or api_key_file, not both")
        if self.max_concurrent < 1:
            raise ValueError("runtime_config.max_concurrent: must be >= 1")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"runtime_config.base_url: {self.base_url!r} is not an http(s) URL")
        for name, value in self.headers.items():
            check_sendable("runtime_config.headers:", name, name=True)
            check_sendable(f"runtime_config.headers.{name}", value)

    @classmethod
    def of(cls, deployment: Deployment) -> RemoteConfig:
        data: dict[str, Any] = dict(deployment.runtime_config)
        try:
            config = msgspec.convert(data, cls)
        except msgspec.ValidationError as error:
            raise ValueError(f"runtime_config: {error}") from None
        changes: dict[str, Any] = {}
        if not config.base_url:
            changes["base_url"] = DEFAULT_BASE_URLS[deployment.runtime]
        if not config.model:
            changes["model"] = deployment.model_id
        return msgspec.structs.replace(config, **changes) if changes else config
