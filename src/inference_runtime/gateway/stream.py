"""``ResponseStream``: token chunks on their way from an engine to one HTTP response.

The engine pushes (through the request's sink) and the HTTP handler drains; no actor mailbox is
involved. The handler takes everything queued at once, so a slow writer gets fewer, larger writes.

What is queued has not reached the client: a retry may drop it (``discard``) and start again.
Only what the handler took counts as sent (``emitted``); a response sent whole is taken at its
end only, so a replica that fails before then is retried like a stream that sent nothing.
"""

from __future__ import annotations

import asyncio

from inference_runtime.types import TokenChunk, Usage


class ResponseStream:
    __slots__ = (
        "_interrupted",
        "_loop",
        "_queue",
        "_waiter",
        "emitted",
        "ended",
        "error",
        "replica_id",
        "usage",
        "wake_each_chunk",
    )

    def __init__(self, *, wake_each_chunk: bool = True) -> None:
        self.wake_each_chunk = wake_each_chunk
        """False for a response sent whole: the reader wakes once, at the end, not per token."""
        self._loop = asyncio.get_running_loop()
        self._queue: list[TokenChunk] = []
        self._waiter: asyncio.Future[None] | None = None
        self._interrupted = False
        self.emitted = 0
        """Chunks the handler took to write to the client (0: a retry is still invisible)."""
        self.ended = False
        self.usage: Usage | None = None
        self.error: BaseException | None = None
        self.replica_id: str | None = None
        """The replica that admitted the request (last attempt), for the X-Replica-Id header."""

    def push(self, chunk: TokenChunk) -> None:
        if self.ended:
            return
        self._queue.append(chunk)
        if self.wake_each_chunk:
            self._wake()

    def push_many(self, chunks: list[TokenChunk]) -> None:
        """Chunks that arrived together: one wake-up of the reader for all of them."""
        if self.ended or not chunks:
            return
        self._queue += chunks
        if self.wake_each_chunk:
            self._wake()

    def finish(self, usage: Usage) -> None:
        if not self.ended:
            self.ended, self.usage = True, usage
            self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.ended:
            self.ended, self.error = True, error
            self._wake()

    def discard(self) -> None:
        """Drop what is queued (a retry starts the response again); only before anything was
        taken, since what was taken may have reached the client."""
        assert self.emitted == 0
        assert not self.ended
        self._queue = []

    def interrupt(self) -> None:
        """Wake the reader without a chunk: ``next_batch`` returns nothing, though the stream
        has not ended, and keeps what is queued (its owner has something to handle first: what
        is queued may be dropped by a retry)."""
        self._interrupted = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_batch(self) -> list[TokenChunk]:
        """Everything queued now, waiting for at least one chunk or the end (only the end,
        without ``wake_each_chunk``), or an ``interrupt``. An empty list means the stream has
        ended (see ``usage`` / ``error``) or was interrupted (then nothing is taken)."""
        while (
            not (self._queue and self.wake_each_chunk) and not self.ended and not self._interrupted
        ):
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        interrupted, self._interrupted = self._interrupted, False
        if interrupted and not self.ended:  # an ended stream has nothing left to retry
            return []
        batch, self._queue = self._queue, []
        self.emitted += len(batch)
        return batch
