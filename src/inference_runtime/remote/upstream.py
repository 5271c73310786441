"""One HTTP call to an OpenAI-compatible upstream, streamed into a request's sink.

Three timeouts, as configured: connecting (the client's pool), the first byte (the upstream's
prefill), and the silence between two chunks (a stalled stream is cut). Every way the call can
go wrong ends as ``UpstreamFailure`` carrying the classification that decides what follows.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from inference_runtime.engine.sink import SequenceSink
from inference_runtime.errors import UpstreamError
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.providers import Provider, ProviderStream
from inference_runtime.remote.retry import (
    Action,
    Classification,
    classify_exception,
    classify_response,
)
from inference_runtime.remote.sse import SSEParser
from inference_runtime.types import EngineRequest

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
    sink: SequenceSink,
) -> None:
    if session.http is None:
        raise UpstreamFailure(classify_exception(ConnectionError("the session is closed")))
    url, headers, body = provider.build_request(group, config=config, key=session.key)
    timeouts = config.timeouts
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeouts.first_byte_s) as deadline:
            response = await session.http.post(url, data=body, headers=headers)
            async with response:
                if response.status != 200:
                    payload = await response.read()
                    raise UpstreamFailure(
                        classify_response(
                            response.status, response.headers, payload, provider=session.provider
                        )
                    )
                parser = SSEParser()
                while not stream.done:
                    deadline.reschedule(loop.time() + timeouts.read_s)
                    data = await response.content.readany()
                    if not data:
                        break
                    for event in parser.feed(data):
                        for chunk in stream.feed(event):
                            sink.on_chunk(chunk)
    except UpstreamFailure:
        raise
    except UpstreamError as error:  # malformed SSE, an error event mid-stream: a broken reply
        raise UpstreamFailure(Classification(Action.RETRY, error, True)) from error
    except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError) as error:
        raise UpstreamFailure(classify_exception(error)) from error
    if not stream.done and len(stream.finished) < len(group):
        cut = UpstreamError("the upstream closed the stream before it finished")
        raise UpstreamFailure(Classification(Action.RETRY, cut, True))
