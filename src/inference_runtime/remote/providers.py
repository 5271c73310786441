"""The provider interface: how a request goes upstream and how its reply comes back.

A provider is a module-like object with ``build_request`` and a ``Stream`` class; the remote
core and ``upstream.call_upstream`` know nothing else of it. A provider whose streams can read a
whole (non-streamed) reply says so with ``whole_body``: a client that does not stream then gets
one non-streamed upstream call rather than a stream reassembled here.
"""

from __future__ import annotations

from typing import Protocol

from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.sse import SSEEvent, SSEParser
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
    """Chunks handed to the client so far (0: a retry is still invisible); for a whole reply,
    the tokens it stands for (counted when the upstream sends no usage)."""

    def feed(self, event: SSEEvent) -> list[TokenChunk]: ...

    def feed_read(self, parser: SSEParser, data: bytes) -> list[TokenChunk]:
        """The chunks of one network read (``data``, through ``parser``), as one batch."""
        ...

    def feed_body(self, body: bytes) -> list[TokenChunk]:
        """The chunks of a whole non-streamed reply (only where the provider's ``whole_body``);
        raises ``UpstreamError`` on a malformed body."""
        ...


class Provider(Protocol):
    name: str
    whole_body: bool
    """It can make a non-streamed upstream call (``build_request(stream=False)``)."""

    def build_request(
        self,
        group: tuple[EngineRequest, ...],
        *,
        config: RemoteConfig,
        key: Secret,
        stream: bool = True,
    ) -> tuple[str, dict[str, str], bytes]:
        """URL, headers (the key among them) and body of the upstream call."""
        ...

    def new_stream(self, group: tuple[EngineRequest, ...]) -> ProviderStream: ...

    def validate(self, group: tuple[EngineRequest, ...], *, config: RemoteConfig) -> None:
        """Refuse (``UnsupportedParameter``, a 400) what the provider cannot do, at admission:
        before a breaker probe, a rate-limit charge or a queue slot is spent on it."""


class _OpenAI:
    name = "openai"
    whole_body = True

    def __init__(self) -> None:
        from inference_runtime.remote import openai_api

        self._build = openai_api.build_request
        self._stream = openai_api.OpenAIStream

    def build_request(
        self,
        group: tuple[EngineRequest, ...],
        *,
        config: RemoteConfig,
        key: Secret,
        stream: bool = True,
    ) -> tuple[str, dict[str, str], bytes]:
        return self._build(group, config=config, key=key, stream=stream)

    def new_stream(self, group: tuple[EngineRequest, ...]) -> ProviderStream:
        return self._stream(group)

    def validate(self, group: tuple[EngineRequest, ...], *, config: RemoteConfig) -> None:
        """Everything goes to an OpenAI-compatible upstream as it came."""


class _Anthropic:
    name = "anthropic"
    whole_body = False

    def build_request(
        self,
        group: tuple[EngineRequest, ...],
        *,
        config: RemoteConfig,
        key: Secret,
        stream: bool = True,
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
