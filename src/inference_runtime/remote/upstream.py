"""One HTTP call to an upstream, streamed (or, for a client that does not stream, read whole)
into a request's sink.

Three timeouts, as configured: connecting (the client's pool), the first byte (the upstream's
prefill; for a non-streamed call, the whole generation), and the silence between two chunks (a
stalled stream is cut; a non-streamed body must follow its headers within it). Every way the
call can go wrong ends as ``UpstreamFailure`` carrying the classification that decides what
follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from inference_runtime.errors import UpstreamError
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.deadline import Deadline
from inference_runtime.remote.http_client import HttpResponse
from inference_runtime.remote.providers import Provider, ProviderStream
from inference_runtime.remote.retry import (
    Action,
    Classification,
    classify_exception,
    classify_response,
)
from inference_runtime.remote.sse import SSEParser
from inference_runtime.types import EngineRequest, TokenChunk

if TYPE_CHECKING:
    from inference_runtime.remote.session import RemoteSession


class UpstreamFailure(Exception):
    def __init__(self, classification: Classification) -> None:
        super().__init__(str(classification.error))
        self.classification = classification


async def call_upstream(
    session: RemoteSession,
    provider: Provider,
    config: RemoteConfig,
    group: tuple[EngineRequest, ...],
    stream: ProviderStream,
    emit: Callable[[list[TokenChunk]], None],
) -> None:
    """Call the upstream for ``group`` and hand its chunks to ``emit``, one batch per network
    read. A client that does not stream gets one non-streamed call, where the provider can."""
    if session.http is None:
        closed = ConnectionError("the session is closed")
        raise UpstreamFailure(classify_exception(closed, provider=session.provider))
    whole = provider.whole_body and not group[0].stream
    url, headers, body = provider.build_request(
        group, config=config, key=session.key, stream=not whole
    )
    timeouts = config.timeouts
    loop = asyncio.get_running_loop()
    try:
        with Deadline(loop.time() + timeouts.first_byte_s) as deadline:
            response = await session.http.post(url, body=body, headers=headers)
            async with response:
                if response.status != 200:
                    payload = await response.read()
                    raise UpstreamFailure(
                        classify_response(
                            response.status, response.headers, payload, provider=session.provider
                        )
                    )
                if whole:
                    # one deadline for the body: its first byte came after the generation, the
                    # rest follows at once; a body that stalls longer than read_s is cut
                    deadline.move(loop.time() + timeouts.read_s)
                    payload = await response.read()
                else:
                    await _read_stream(response, stream, emit, deadline, loop, timeouts.read_s)
        if whole:  # decoded after the connection went back to the pool
            chunks = stream.feed_body(payload)
            if chunks:
                emit(chunks)
    except UpstreamFailure:
        raise
    except UpstreamError as error:  # malformed SSE or body, an error event mid-stream
        raise UpstreamFailure(Classification(Action.RETRY, error, True)) from error
    except (TimeoutError, ConnectionError, OSError) as error:
        raise UpstreamFailure(classify_exception(error, provider=session.provider)) from error
    if not stream.done and len(stream.finished) < len(group):
        cut = UpstreamError("the upstream closed the stream before it finished")
        raise UpstreamFailure(Classification(Action.RETRY, cut, True))


async def _read_stream(
    response: HttpResponse,
    stream: ProviderStream,
    emit: Callable[[list[TokenChunk]], None],
    deadline: Deadline,
    loop: asyncio.AbstractEventLoop,
    read_s: float,
) -> None:
    """SSE events as they come, a batch of chunks per network read; no read waits longer
    than ``read_s``."""
    parser = SSEParser()
    read_some = response.read_some
    while not stream.done:
        deadline.move(loop.time() + read_s)
        data = await read_some()
        if not data:
            break
        chunks = stream.feed_read(parser, data)
        if chunks:
            emit(chunks)
