"""One keep-alive HTTP/1.1 connection to an upstream and the response being read on it.

``HttpConnection`` is an ``asyncio.Protocol``: the event loop hands it bytes, the C parser
(``httptools``, llhttp) cuts them into a status, headers and body pieces, and the one response
being read (``HttpResponse``) takes the pieces as they come. A response read to its end leaves
the connection reusable; anything else (a cancel, a cut, a malformed answer) closes it.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Callable
from typing import Any, cast

import httptools

# a reader that falls behind this much stops the socket's reads until it catches up
_PAUSE_AT = 1 << 20

DRAIN_S = 0.5
"""How long the end of a response the reader is done with may take to come before its
connection is closed rather than reused (a stream's terminator follows its last event at once;
meanwhile the connection holds its place in the pool)."""


class HttpConnectionError(ConnectionError):
    """The connection failed: it could not be opened, it broke, or what came over it was not
    HTTP. Retryable, like any connection failure."""


class HttpConnection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.idle_since = 0.0
        self.origin: tuple[str, str, int] = ("", "", 0)
        """The pool's key: scheme, host, port."""
        # one per connection: llhttp goes on to the next response after one completes
        self._parser: Any = httptools.HttpResponseParser(self)
        self._reading = False
        """A response is expected or being read."""
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: Callable[[bool], None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._interim = False
        self._body: list[bytes] = []
        self._buffered = 0

    # -- the loop's side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._reading:  # bytes nobody asked for: the connection cannot be trusted
            self.lost = HttpConnectionError("the upstream sent data outside a response")
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._break(HttpConnectionError(f"the upstream's response is not valid HTTP: {error}"))
        except httptools.HttpParserUpgrade:
            self._break(HttpConnectionError("the upstream switched protocols"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reading and self.headers_done and self._close_delimited():
            self.complete = True  # a body that ends with the connection ended well
        elif self.lost is None:
            reason = f": {exc}" if exc else ""
            self.lost = HttpConnectionError(f"the upstream closed the connection{reason}")
        self.transport = None
        if self._drained is not None:
            self._end_drain(False)
        self._wake()

    # -- the parser's callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # kept raw: most are never looked at (decoded on demand by ``HttpResponse.headers``)
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the answer is still to come
            self._interim = True
            self.raw_headers = []
            return
        self.status = status
        # false too for a body that ends with the connection: llhttp knows the framing
        self.keep_alive = parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._drained is not None:
            return  # the reader is done with it
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        if self._drained is not None:
            self._end_drain(True)
        self._wake()

    # -- the reader's side ---------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Idle, open and in a clean state: fit for the next request."""
        transport = self.transport
        return self.lost is None and transport is not None and not transport.is_closing()

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.lost is not None:
            raise HttpConnectionError("the connection to the upstream is closed")
        self._reset()
        self._reading = True
        transport.write(data)

    async def wait(self) -> None:
        """Until something new arrives (headers, body, the end) or the connection breaks
        (a break after the response came whole spoils the connection, not the response)."""
        if self.lost is not None and not self.complete:
            raise self.lost
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.lost is not None and not self.complete:
            raise self.lost

    def take_body(self) -> bytes:
        body = self._body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        self._clear_body()
        return data

    def _clear_body(self) -> None:
        """Nothing buffered any more: reads paused for a reader behind go on."""
        self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finish(self) -> bool:
        """The response has been read whole: True when the connection may serve the next one."""
        self._reading = False
        self.idle_since = self._loop.time()
        return self.keep_alive and self.usable

    def close(self) -> None:
        self._reading = False
        if self.transport is not None:
            self.transport.close()

    def drain(self, done: Callable[[bool], None]) -> None:
        """The reader is done with a response whose end has not come yet (a stream read up to
        its last event, before the body's terminator): what more comes of it is dropped, and
        ``done(reusable)`` is called once, when it ends (True, unless the upstream closes
        after it), breaks, or has not ended within ``DRAIN_S`` (then the connection closes)."""
        self._clear_body()
        self._drained = done
        self._drain_timer = self._loop.call_later(DRAIN_S, self._end_drain, False)

    def _end_drain(self, ended: bool) -> None:
        done, self._drained = self._drained, None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if done is None:
            return
        reusable = ended and self.finish()
        if not reusable:
            self.close()
        done(reusable)

    def _close_delimited(self) -> bool:
        names = {name.lower() for name, _ in self.raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _break(self, error: HttpConnectionError) -> None:
        self.lost = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class HttpResponse:
    """A response's status and headers, and its body read piece by piece or whole.

    Use it as an async context manager: leaving it gives the connection back to the pool when
    the body was read to its end, and closes it otherwise.
    """

    __slots__ = ("_connection", "_decoder", "_headers", "_raw_headers", "_release", "status")

    def __init__(
        self, connection: HttpConnection, release: Callable[[HttpConnection, bool], None]
    ) -> None:
        self._connection: HttpConnection | None = connection
        self._release = release
        self.status: int = connection.status
        self._raw_headers = connection.raw_headers
        self._headers: dict[str, str] | None = None
        self._decoder: Any = None
        encoding = "identity"
        for name, value in self._raw_headers:
            if len(name) == 16 and name.lower() == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        if encoding == "identity":
            pass
        elif encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding != "":
            connection.close()
            raise HttpConnectionError(f"the upstream's content encoding {encoding!r} is unknown")

    @property
    def headers(self) -> dict[str, str]:
        """By lower-case name; a repeated header's values joined with commas."""
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
            for raw_name, raw_value in self._raw_headers:
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                seen = headers.get(name)
                headers[name] = value if seen is None else f"{seen}, {value}"
        return headers

    async def read_some(self) -> bytes:
        """What has arrived since the last read (waiting for something if nothing has); ``b""``
        once the body has been read to its end."""
        connection = self._connection
        if connection is None:
            return b""
        while True:
            data = connection.take_body()
            if data:
                return self._decode(data)
            if connection.complete:
                self._finish()
                return self._flush()
            await connection.wait()

    async def read(self) -> bytes:
        """The rest of the body, whole."""
        parts = []
        while data := await self.read_some():
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _decode(self, data: bytes) -> bytes:
        if self._decoder is None:
            return data
        try:
            return bytes(self._decoder.decompress(data))
        except zlib.error as error:
            self.close()
            raise HttpConnectionError(f"the upstream's body does not decompress: {error}") from None

    def _flush(self) -> bytes:
        return b"" if self._decoder is None else bytes(self._decoder.flush())

    def _finish(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._release(connection, connection.finish())

    def close(self) -> None:
        """Drop the response unread: its connection is closed, not reused."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            self._release(connection, False)

    async def __aenter__(self) -> HttpResponse:
        return self

    async def __aexit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        connection = self._connection
        if connection is None:
            return
        if connection.complete:
            self._finish()  # the whole message came: what was left unread does not matter
        elif error_type is None and connection.lost is None:
            # the reader has what it wanted (a stream's last event); the body's end is on
            # its way: the connection goes back to the pool when it comes, not closed now
            self._connection = None
            connection.drain(functools.partial(self._release, connection))
        else:
            self.close()
