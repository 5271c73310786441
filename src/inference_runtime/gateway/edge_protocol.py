"""The gateway's HTTP/1.1 connections: aiohttp's protocol with read deadlines and quiet,
OpenAI-shaped answers to requests that are not HTTP.

aiohttp bounds only the idle time between requests: a client that sends one header byte a
second, or promises a body that never comes, holds its connection (and a body's handler, and so
the drain) for as long as it likes. Here the head of a request must be whole within
``header_timeout_s`` of its first byte and its body within ``body_timeout_s`` of its head, else
the connection is closed (which ends the handler waiting on that body). A request line or header
aiohttp cannot parse is answered 400 (431 when a line is too long) and logged at debug level: it
is the client's mistake, not ours, and a scanner must not fill the log with tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from inference_runtime.gateway.errors import error_body

log = logging.getLogger("inference_runtime.gateway")
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class EdgeProtocol(RequestHandler):
    """One client connection; see the module's docstring for what it adds."""

    def __init__(
        self, manager: web.Server, *, header_timeout_s: float, body_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._body_timeout_s = body_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._partial_head = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # a connection that never sends a byte must not be held open either (it costs a file
        # descriptor): its first request's head is due within the same time
        self._head_deadline = self._loop.call_later(self._header_timeout_s, self._head_late)

    def data_received(self, data: bytes) -> None:
        waiting = self._waiter is not None  # the loop waits for a request's head
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a whole head (or more) was parsed
            self._cancel_head()
            self._partial_head = False
            self._watch_body(self._messages[-1][1])
        elif waiting and data and self.transport is not None:
            self._partial_head = True
            if self._head_deadline is None:
                # part of a head: the rest must come in time (a whole one, the usual case,
                # costs no timer)
                self._head_deadline = self._loop.call_later(self._header_timeout_s, self._head_late)
        if self._body is not None and self._body.exception() is not None:
            # the body cannot be parsed (bad gzip, bad chunks): after the handler's 400 there is
            # nothing to linger for, and aiohttp's lingering read would log the error as a crash
            self._lingering_time = 0.0

    def _watch_body(self, payload: StreamReader) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()  # a new head means the body before it was whole
            self._body_deadline = None
        self._body = None
        if payload.is_eof():
            return
        self._body = payload
        self._body_deadline = self._loop.call_later(self._body_timeout_s, self._body_late, payload)
        payload.on_eof(self._cancel_body)

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.transport is None or self._messages or self._current_request is not None:
            return  # the head came whole just in time
        if not self._partial_head:  # not a byte: nobody to tell why
            log.debug("closing a connection that sent nothing for %s s", self._header_timeout_s)
            self.force_close()
            return
        log.debug("closing a connection whose request head took over %s s", self._header_timeout_s)
        self._answer_timeout(f"the request's headers took over {self._header_timeout_s} s")

    def _body_late(self, payload: StreamReader) -> None:
        self._body_deadline = None
        if payload.is_eof() or self.transport is None:
            return
        log.debug("closing a connection whose request body took over %s s", self._body_timeout_s)
        if self._current_request is None:  # no handler is reading it yet: it can be told why
            self._answer_timeout(f"the request's body took over {self._body_timeout_s} s")
        else:  # a handler reads it: closing ends that read, and the handler with it
            self.force_close()

    def _answer_timeout(self, message: str) -> None:
        assert self.transport is not None
        body = error_body(message, "invalid_request_error", None, "request_timeout")
        self.transport.write(_TIMEOUT_ANSWER % (len(body), body))
        self.force_close()

    def _cancel_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _cancel_body(self) -> None:
        self._body = None
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head()
        self._cancel_body()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # a bug of ours: aiohttp logs it with its traceback
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was under way: no error answer can follow it")
        code = "bad_request"
        if isinstance(exc, LineTooLong):
            status, text = 431, "the request line or a header is too long"
        elif isinstance(exc, ContentEncodingError):
            status, code = 415, "unsupported_media_type"
            text = "the body's Content-Encoding is not accepted: send it as is, or gzip it"
        else:
            reason = getattr(exc, "message", None) or message or "bad request"
            text = f"the request is not valid HTTP: {reason}"
        log.debug("answered %d to a malformed request from %s: %s", status, request.remote, exc)
        body = error_body(text, "invalid_request_error", None, code)
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


class EdgeServer(web.Server):
    """aiohttp's connection factory, making :class:`EdgeProtocol` connections."""

    def __init__(self, base: web.Server, *, header_timeout_s: float, body_timeout_s: float) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self._timeouts = {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s}

    def __call__(self) -> RequestHandler:
        return EdgeProtocol(self, loop=self._loop, **self._timeouts, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An ``AppRunner`` whose server is an :class:`EdgeServer`."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout_s: float,
        body_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._edge_timeouts = (header_timeout_s, body_timeout_s)

    async def _make_server(self) -> web.Server:
        header, body = self._edge_timeouts
        return EdgeServer(
            await super()._make_server(), header_timeout_s=header, body_timeout_s=body
        )
