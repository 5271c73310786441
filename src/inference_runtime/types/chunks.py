"""What an engine produces: token chunks and the usage of a finished request."""

from __future__ import annotations

import msgspec


class TokenChunk(msgspec.Struct, frozen=True, gc=False):
    """New text of one choice of one request, produced by one engine step."""

    request_id: str
    index: int
    """The choice index (``n`` > 1 gives several choices per request)."""
    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None
    """``None`` while generating; ``"stop"`` or ``"length"`` on the last chunk of a choice."""
    logprobs: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...] | None = None
    """Per token: (token text, logprob, top alternatives as (text, logprob)); when asked for."""


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Tokens counted for one request, as OpenAI reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )
