"""A remote (``runtime: openai``) deployment pointed at a MockUpstream, for integration tests."""

from __future__ import annotations

from typing import Any

from inference_runtime.testing.mock_upstream import MockUpstream

_TOP_LEVEL = ("idempotent", "replicas", "serving", "pricing")


def remote(upstream: MockUpstream, name: str = "gpt", **config: Any) -> dict[str, Any]:
    """``config``: runtime_config fields, or the deployment's own (``_TOP_LEVEL``). The key is
    read from ``MOCK_KEY``; retries back off 10 ms first."""
    top = {k: config.pop(k) for k in _TOP_LEVEL if k in config}
    return {
        "name": name,
        "runtime": "openai",
        "runtime_config": {
            "base_url": upstream.url,
            "api_key_env": "MOCK_KEY",
            "model": "upstream-model",
            "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 2},
            **config,
        },
        **top,
    }


def anthropic(upstream: MockUpstream, *, key_env: str, name: str = "claude") -> dict[str, Any]:
    """A ``runtime: anthropic`` deployment pointed at ``upstream``, its key read from
    ``key_env``; retries back off 10 ms first."""
    return {
        "name": name,
        "runtime": "anthropic",
        "runtime_config": {
            "base_url": upstream.url,
            "api_key_env": key_env,
            "model": "claude-upstream",
            "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.1},
        },
    }
