"""A remote replica's unit of work: one admitted request (a chat/completion group, or an
embeddings call), queued by priority and then served by a slot task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from inference_runtime.engine.embedding_core import Embed, EmbeddingResult
from inference_runtime.engine.sink import SequenceSink, batch_emitter
from inference_runtime.remote.providers import ProviderStream
from inference_runtime.types import EngineRequest, TokenChunk, Usage


def _drop(chunks: list[TokenChunk]) -> None:
    """An embeddings job has no sink: nothing streams."""


@dataclass(eq=False, slots=True)
class Job:
    request_id: str
    group: tuple[EngineRequest, ...]
    sink: SequenceSink | None
    estimate: int
    """Prompt tokens guessed at admission (4 characters a token), until the provider counts."""
    order: tuple[int, int] = (0, 0)
    """(priority, arrival number): the queue's order."""
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    embed: Embed | None = None
    """Set for an embeddings request; its answer goes to ``result``."""
    result: asyncio.Future[EmbeddingResult] | None = field(default=None, repr=False)
    emit: Callable[[list[TokenChunk]], None] = field(default=_drop, repr=False)
    """Hands a batch of chunks to ``sink``."""
    stream: ProviderStream | None = field(default=None, repr=False)
    """The current attempt's stream: what a failure reports as produced."""

    def __post_init__(self) -> None:
        if self.sink is not None:
            self.emit = batch_emitter(self.sink)

    def __lt__(self, other: Job) -> bool:
        return self.order < other.order

    def fail(self, error: BaseException, usage: Usage) -> None:
        if self.result is not None:
            if not self.result.done():
                self.result.set_exception(error)
            return
        assert self.sink is not None
        for position, request in enumerate(self.group):
            self.sink.on_error(request.choice_index, error, usage if position == 0 else Usage())


class NoStream:
    """An embeddings call streams nothing: retries stay allowed until it answers."""

    usage: Usage | None = None
    finished: dict[int, str] = {}
    done = False
    chunks_out = 0

    def feed(self, event: object) -> list[TokenChunk]:
        return []

    def feed_read(self, parser: object, data: bytes) -> list[TokenChunk]:
        return []

    def feed_body(self, body: bytes) -> list[TokenChunk]:
        return []


NO_STREAM = NoStream()
