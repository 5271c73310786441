"""The provider interface: how a request goes upstream and how its stream comes back.

A provider is a module-like object with ``build_request`` and a ``Stream`` class; the remote
core and ``upstream.call_upstream`` know nothing else of it.
"""

from __future__ import annotations

from typing import Protocol

from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.sse import SSEEvent
from inference_runtime.types import EngineRequest, Secret, TokenChunk, Usage


class ProviderStream(Protocol):
    """One upstream response's SSE events turned into our chunks."""

    usage: Usage | None
    """The provider's own count, once it sent it."""
    finished: dict[int, str]
    """Finish reason per choice index, as they end."""
    done: bool
    """The provider said the response is complete."""
    chunks_out: int
    """Chunks handed to the client so far (0: a retry is still invisible)."""

    def feed(self, event: SSEEvent) -> list[TokenChunk]: ...


class Provider(Protocol):
    name: str

    def build_request(
        self, group: tuple[EngineRequest, ...], *, config: RemoteConfig, key: Secret
    ) -> tuple[str, dict[str, str], bytes]:
        """URL, headers (the key among them) and body of the upstream call."""
        ...

    def new_stream(self, group: tuple[EngineRequest, ...]) -> ProviderStream: ...

    def validate(self, group: tuple[EngineRequest, ...], *, config: RemoteConfig) -> None:
        """Refuse (``UnsupportedParameter``, a 400) what the provider cannot do, at admission:
        before a breaker probe, a rate-limit charge or a queue slot is spent on it."""


class _OpenAI:
    name = "openai"

    def build_request(
        self, group: tuple[EngineRequest, ...], *, config: RemoteConfig, key: Secret
    ) -> tuple[str, dict[str, str], bytes]:
        from inference_runtime.remote import openai_api

        return openai_api.build_request(group, config=config, key=key)

    def new_stream(self, group: tuple[EngineRequest, ...]) -> ProviderStream:
        from inference_runtime.remote.openai_api import OpenAIStream

        return OpenAIStream(group)

    def validate(self, group: tuple[EngineRequest, ...], *, config: RemoteConfig) -> None:
        """Everything goes to an OpenAI-compatible upstream as it came."""


class _Anthropic:
    name = "anthropic"

    def build_request(
        self, group: tuple[EngineRequest, ...], *, config: RemoteConfig, key: Secret
    ) -> tuple[str, dict[str, str], bytes]:
        from inference_runtime.remote import anthropic_api

        return anthropic_api.build_request(group, config=config, key=key)

    def new_stream(self, group: tuple[EngineRequest, ...]) -> ProviderStream:
        from inference_runtime.remote.anthropic_api import AnthropicStream

        return AnthropicStream(group)

    def validate(self, group: tuple[EngineRequest, ...], *, config: RemoteConfig) -> None:
        self.build_request(group, config=config, key=Secret(""))  # it refuses what it cannot map


def provider_for(runtime: str) -> Provider:
    if runtime == "openai":
        return _OpenAI()
    if runtime == "anthropic":
        return _Anthropic()
    raise ValueError(f"runtime: no remote provider named {runtime!r}")
