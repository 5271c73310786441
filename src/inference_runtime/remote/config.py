"""``RemoteConfig``: a remote deployment's ``runtime_config``, typed and validated."""

from __future__ import annotations

import functools
import math
from typing import Any

import msgspec

from inference_runtime.remote.proxy import parse_proxy
from inference_runtime.remote.sendable import check_configurable_header
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


@functools.cache
def endpoint_url(base_url: str, path: str) -> str:
    """``path`` under ``base_url``, before its query: ``https://h/v1?api-version=2`` and
    ``/chat/completions`` give ``https://h/v1/chat/completions?api-version=2`` (Azure's base
    URLs carry one)."""
    root, mark, query = base_url.partition("?")
    return root.rstrip("/") + path + mark + query


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
    proxy: str | msgspec.UnsetType | None = msgspec.UNSET
    """The proxy this deployment's upstream is reached through (``http://[user:pass@]host:
    port``; https goes through a CONNECT tunnel), whatever the environment says; ``null``:
    never a proxy; unset: the environment's, as curl reads it (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, lower case first). Credentials in the URL go
    as ``Proxy-Authorization: Basic``, never into logs or errors."""
    ca_bundle: str | None = None
    """A PEM file of the authorities an https upstream's certificate is checked against,
    instead of the system's (a private CA, a TLS-inspecting corporate proxy's root)."""
    client_cert: str | None = None
    """A PEM file with the client certificate an https upstream asks for (mutual TLS), and its
    private key unless ``client_key`` names another file."""
    client_key: str | None = None
    """A PEM file with ``client_cert``'s private key."""
    keepalive_idle_s: float = 4.0
    """An idle pooled connection older than this is closed rather than reused: below the 5 s
    after which many servers close theirs (a request sent on a closing connection is lost)."""

    def __post_init__(self) -> None:
        if self.api_key_env and self.api_key_file:
            raise ValueError("runtime_config: set api_key_env or api_key_file, not both")
        if self.max_concurrent < 1:
            raise ValueError("runtime_config.max_concurrent: must be >= 1")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"runtime_config.base_url: {self.base_url!r} is not an http(s) URL")
        if isinstance(self.proxy, str):
            parse_proxy(self.proxy, field_name="runtime_config.proxy")
        if self.client_key and not self.client_cert:
            raise ValueError("runtime_config.client_key: set client_cert too")
        keepalive = self.keepalive_idle_s
        if not (isinstance(keepalive, int | float) and math.isfinite(keepalive) and keepalive > 0):
            raise ValueError("runtime_config.keepalive_idle_s: must be a finite number > 0")
        for name, value in self.headers.items():
            check_configurable_header("runtime_config.headers", name, value)

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
