"""What an engine produces: token chunks and the usage of a finished request."""

from __future__ import annotations

from typing import Any

import msgspec


class WordRun(msgspec.Struct, frozen=True, gc=False):
    """Consecutive streamed words of one choice, each still the JSON string the upstream
    encoded (quotes included) beside its decoded text: a gateway re-emits the run by putting
    its own bytes around each string, with no object per word."""

    encoded: list[bytes]
    texts: list[str]

    @property
    def count(self) -> int:
        return len(self.texts)


class TokenChunk(msgspec.Struct, frozen=True, gc=False):
    """New text of one choice of one request, produced by one engine step.

    Not tracked by the garbage collector (``gc=False``): there is one per token, and a chunk
    never takes part in a reference cycle (it holds only text, numbers and the provider's
    decoded fields), so tracking it would only make collections more frequent and longer."""

    request_id: str
    index: int
    """The choice index (``n`` > 1 gives several choices per request)."""
    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None
    """``None`` while generating; ``"stop"`` or ``"length"`` on the last chunk of a choice."""
    logprobs: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...] | None = None
    """Per token: (token text, logprob, top alternatives as (text, logprob)); when asked for."""
    extra: dict[str, Any] | None = None
    """Delta fields besides the text that a remote provider sent (``tool_calls``, ``refusal``,
    ...), passed on to the client as they came."""
    words: WordRun | None = None
    """Several words of a remote stream still encoded (``text`` is then empty); see
    ``expanded``."""

    @property
    def num_tokens(self) -> int:
        """Tokens this chunk stands for: its ids, its words, or (a remote delta, which has
        none) one."""
        if self.token_ids:
            return len(self.token_ids)
        if self.words is not None:
            return self.words.count
        return 1 if (self.text or self.extra) else 0

    def expanded(self) -> list[TokenChunk]:
        """This chunk as one chunk per word (itself, unless it is a ``WordRun``)."""
        if self.words is None:
            return [self]
        return [TokenChunk(self.request_id, self.index, text) for text in self.words.texts]


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
