"""``SequenceSink``: where an engine puts a sequence's output. Called directly, never through a
mailbox: actors carry control, sinks carry tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from inference_runtime.types import TokenChunk, Usage


class SequenceSink(Protocol):
    def on_chunk(self, chunk: TokenChunk) -> None:
        """New text for the sequence (the last chunk carries ``finish_reason``)."""

    def on_finish(self, index: int, usage: Usage) -> None:
        """Choice ``index`` finished normally; called right after its last chunk."""

    def on_error(self, index: int, error: BaseException, usage: Usage) -> None:
        """Choice ``index`` failed; ``usage`` counts what was produced before."""


def batch_emitter(sink: SequenceSink) -> Callable[[list[TokenChunk]], None]:
    """How to hand ``sink`` the chunks that arrived together (one network read of a remote
    engine): its optional ``on_chunks(chunks)`` when it has one, which takes them as one batch
    (one wake-up of the reader, one write), else ``on_chunk`` for each, in order."""
    on_chunks: Callable[[list[TokenChunk]], None] | None = getattr(sink, "on_chunks", None)
    if on_chunks is not None:
        return on_chunks
    on_chunk = sink.on_chunk

    def each(chunks: list[TokenChunk]) -> None:
        for chunk in chunks:
            on_chunk(chunk)

    return each
