"""How :class:`~inference_runtime.testing.MockUpstream` writes its responses and plays faults.

Kept apart from the request handling so that what goes on the wire (error bodies, SSE streams,
resets, stalls, truncations) reads in one place. A stream with nothing scripted and no token delay
goes out as one coalesced write: that path is what a proxy benchmark exercises thousands of
times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Protocol

from aiohttp import web

from inference_runtime.testing import mock_upstream_anthropic as anthropic_replies
from inference_runtime.testing import mock_upstream_replies as replies
from inference_runtime.testing.mock_upstream_faults import (
    Fault,
    anthropic_error,
    anthropic_error_object,
    openai_error,
    retry_after_headers,
)

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
CHUNK_FAULTS = frozenset(
    {"stall_after", "reset_after", "truncate_after", "error_after", "malformed_sse"}
)


class StreamCounter(Protocol):
    """Where ``write_stream`` counts the streams it is writing."""

    active_streams: int


class _CoalescedSSE(web.StreamResponse):
    """A stream response whose headers wait for the first body bytes, so a whole stream with no
    delay goes out in one write (headers, the one chunk and the terminator)."""

    _send_headers_immediately = False


def error_response(
    anthropic: bool,
    status: int,
    *,
    message: str | None = None,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    """An error in the shape of the route's provider (OpenAI or Anthropic), with Retry-After."""
    if anthropic:
        payload = anthropic_error(status, message=message, code=code, error_type=error_type)
    else:
        payload = openai_error(
            status, message=message, code=code, param=param, error_type=error_type
        )
    return web.Response(
        status=status,
        body=payload,
        content_type="application/json",
        headers=retry_after_headers(retry_after),
    )


def fault_response(anthropic: bool, fault: Fault) -> web.Response:
    return error_response(
        anthropic,
        fault.http_status,
        message=fault.message,
        code=fault.code,
        param=fault.param,
        error_type=fault.error_type,
        retry_after=fault.retry_after,
    )


async def send_body(
    request: web.BaseRequest, payload: bytes, fault: Fault | None, anthropic: bool
) -> web.StreamResponse:
    """A non-streamed body, with the non-stream form of a chunk fault."""
    if fault is None or fault.kind not in CHUNK_FAULTS:
        return web.Response(body=payload, content_type="application/json")
    if fault.kind == "malformed_sse":
        return web.Response(body=replies.MALFORMED_JSON, content_type="application/json")
    if fault.kind == "error_after":
        return fault_response(anthropic, fault)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(payload)
    await response.prepare(request)
    if fault.kind == "stall_after":
        await asyncio.sleep(fault.seconds)
        await response.write(payload)
        return response
    await response.write(payload[: len(payload) // 2])
    if fault.kind == "reset_after":
        abort(request)
    elif request.transport is not None:
        request.transport.close()
    return response


async def write_stream(
    request: web.BaseRequest,
    frames: list[replies.Frame],
    fault: Fault | None,
    anthropic: bool,
    token_delay_s: float,
    streams: StreamCounter,
) -> web.StreamResponse:
    """Write an SSE stream: in one go when nothing delays or breaks it, else frame by frame,
    playing the fault at its chunk."""
    delay = token_delay_s
    chunk_fault = fault if fault is not None and fault.kind in CHUNK_FAULTS else None
    fast = chunk_fault is None and delay <= 0
    response = (_CoalescedSSE if fast else web.StreamResponse)(headers=SSE_HEADERS)
    streams.active_streams += 1
    try:
        await response.prepare(request)
        if fast:
            await response.write_eof(b"".join(frame.data for frame in frames))
            return response
        trigger = min(chunk_fault.n_chunks, len(frames)) if chunk_fault is not None else -1
        for i in range(len(frames) + 1):
            if (
                i == trigger
                and chunk_fault is not None
                and await _play(request, response, chunk_fault, anthropic)
            ):
                return response
            if i == len(frames):
                break
            frame = frames[i]
            if frame.token and delay > 0:
                await asyncio.sleep(delay)
            await response.write(frame.data)
        await response.write_eof()
        return response
    except ConnectionResetError:  # the client went away: nothing more to send
        return response
    finally:
        streams.active_streams -= 1


async def _play(
    request: web.BaseRequest, response: web.StreamResponse, fault: Fault, anthropic: bool
) -> bool:
    """Play a chunk fault mid-stream; True when the stream ends here."""
    kind = fault.kind
    if kind == "stall_after":
        await asyncio.sleep(fault.seconds)
        return False
    if kind == "malformed_sse":
        await response.write(
            anthropic_replies.MALFORMED_ANTHROPIC if anthropic else replies.MALFORMED_OPENAI
        )
        return False
    if kind == "reset_after":
        abort(request)
        return True
    if kind == "error_after":
        if anthropic:
            error = anthropic_error_object(fault.http_status, message=fault.message)
            await response.write_eof(anthropic_replies.anthropic_event("error", error))
        else:
            payload = openai_error(
                fault.http_status, message=fault.message, code=fault.code, param=fault.param
            )
            await response.write_eof(replies.openai_error_frame(payload))
        return True
    await response.write_eof()  # truncate_after
    return True


def abort(request: web.BaseRequest) -> None:
    """Reset the connection: ``SO_LINGER`` 0 makes the close send RST, not FIN, and ``abort``
    drops whatever is still buffered, so the client sees a reset, not an orderly end."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
