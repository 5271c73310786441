"""The request an engine core receives: chat messages or a prompt, and sampling parameters.

Plain data, never part of a reference cycle: the Structs are not tracked by the garbage
collector (``gc=False``), which keeps the cyclic collector's work per request down."""

from __future__ import annotations

from typing import Any

import msgspec


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (text parts of a multi-part content joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How to pick tokens. Defaults follow OpenAI's."""

    max_tokens: int | None = None
    """Most tokens to generate per choice; ``None``: up to the context window."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class EngineRequest(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One choice of one client request, as handed to an engine core.

    Like the messages and sampling parameters it holds, not tracked by the garbage collector
    (``gc=False``): request data (a decoded JSON body) holds no reference cycles."""

    request_id: str
    deployment: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    sampling: SamplingParams = SamplingParams()
    choice_index: int = 0
    session_id: str | None = None
    priority: int = 0
    """Lower goes first where a queue orders by priority (remote engines): the client's
    ``X-Priority`` header."""
    passthrough: dict[str, Any] | None = None
    """The client's whole request body, for remote engines that forward it (tools,
    response_format, vendor fields: untouched). Local engines never read it."""
    stream: bool = True
    """Whether the client reads the reply as it is generated. ``False`` (the whole reply at
    the end) lets a remote engine make one non-streamed upstream call instead of a stream."""

    @property
    def sequence_id(self) -> str:
        """Unique per choice: the engine schedules each choice as its own sequence."""
        return f"{self.request_id}/{self.choice_index}"
