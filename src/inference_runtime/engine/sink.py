"""``SequenceSink``: where an engine puts a sequence's output. Called directly, never through a
mailbox: actors carry control, sinks carry tokens."""

from __future__ import annotations

from typing import Protocol

from inference_runtime.types import TokenChunk, Usage


class SequenceSink(Protocol):
    def on_chunk(self, chunk: TokenChunk) -> None:
        """New text for the sequence (the last chunk carries ``finish_reason``)."""

    def on_finish(self, index: int, usage: Usage) -> None:
        """Choice ``index`` finished normally; called right after its last chunk."""

    def on_error(self, index: int, error: BaseException, usage: Usage) -> None:
        """Choice ``index`` failed; ``usage`` counts what was produced before."""
