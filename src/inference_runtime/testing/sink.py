"""``RecordingSink``: a SequenceSink that records an engine's output, for tests."""

from __future__ import annotations

import asyncio
from typing import Any

from inference_runtime.types import TokenChunk, Usage


class RecordingSink:
    """Records chunks, finishes and errors per choice; ``await sink.done`` waits for all."""

    def __init__(self, choices: int = 1) -> None:
        self.chunks: list[TokenChunk] = []
        self.finished: dict[int, Usage] = {}
        self.errors: dict[int, tuple[BaseException, Usage]] = {}
        self.choices = choices
        self.done = asyncio.get_running_loop().create_future()
        self.first_chunk = asyncio.get_running_loop().create_future()

    def on_chunk(self, chunk: TokenChunk) -> None:
        self.chunks.append(chunk)
        if not self.first_chunk.done():
            self.first_chunk.set_result(None)

    def on_finish(self, index: int, usage: Usage) -> None:
        self.finished[index] = usage
        self._check()

    def on_error(self, index: int, error: BaseException, usage: Usage) -> None:
        self.errors[index] = (error, usage)
        self._check()

    def _check(self) -> None:
        if len(self.finished) + len(self.errors) >= self.choices and not self.done.done():
            self.done.set_result(None)

    def text(self, index: int = 0) -> str:
        return "".join(c.text for c in self.chunks if c.index == index)

    def error(self, index: int = 0) -> Any:
        entry = self.errors.get(index)
        return entry[0] if entry else None
