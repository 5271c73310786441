"""One embeddings call to an OpenAI-compatible upstream (``POST /embeddings``).

Vectors are asked for as base64 (OpenAI's little-endian float32), which is also what our own
embeddings result carries: they pass through as bytes, never as Python floats.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import msgspec

from inference_runtime.engine.embedding_core import Embed, EmbeddingResult
from inference_runtime.errors import UpstreamError
from inference_runtime.remote.config import RemoteConfig, endpoint_url
from inference_runtime.remote.retry import (
    Action,
    Classification,
    classify_exception,
    classify_response,
)
from inference_runtime.remote.upstream import UpstreamFailure

if TYPE_CHECKING:
    from inference_runtime.remote.session import RemoteSession

_encode = msgspec.json.Encoder().encode


async def call_embeddings(
    session: RemoteSession, config: RemoteConfig, embed: Embed
) -> EmbeddingResult:
    if session.http is None:
        closed = ConnectionError("the session is closed")
        raise UpstreamFailure(classify_exception(closed, provider=session.provider))
    body: dict[str, Any] = {
        "model": config.model,
        "input": [i if isinstance(i, str) else list(i) for i in embed.inputs],
        "encoding_format": "base64",
    }
    if embed.dimensions is not None:
        body["dimensions"] = embed.dimensions
    headers = {"Content-Type": "application/json", **config.headers}
    if session.key:
        headers["Authorization"] = f"Bearer {session.key.reveal()}"
    url = endpoint_url(config.base_url, "/embeddings")
    try:
        async with asyncio.timeout(config.timeouts.first_byte_s + config.timeouts.read_s):
            async with await session.http.post(
                url, body=_encode(body), headers=headers
            ) as response:
                payload = await response.read()
                if response.status != 200:
                    raise UpstreamFailure(
                        classify_response(
                            response.status, response.headers, payload, provider=session.provider
                        )
                    )
    except UpstreamFailure:
        raise
    except (TimeoutError, ConnectionError, OSError) as error:
        raise UpstreamFailure(classify_exception(error, provider=session.provider)) from error
    try:
        return _result(payload, len(embed.inputs))
    except (UpstreamError, msgspec.DecodeError, KeyError, TypeError, ValueError) as error:
        broken = UpstreamError(f"the upstream's embeddings answer is malformed: {error}")
        raise UpstreamFailure(Classification(Action.RETRY, broken, True)) from error


def _result(payload: bytes, count: int) -> EmbeddingResult:
    answer = msgspec.json.decode(payload)
    rows = sorted(answer["data"], key=lambda row: int(row.get("index", 0)))
    if len(rows) != count:
        raise UpstreamError(f"{len(rows)} vectors for {count} inputs")
    vectors = []
    for row in rows:
        value = row["embedding"]
        if isinstance(value, str):
            vectors.append(base64.b64decode(value))
        else:  # an upstream that ignores encoding_format: floats
            vectors.append(_pack(value))
    usage = answer.get("usage") or {}
    dimension = len(vectors[0]) // 4 if vectors else 0
    return EmbeddingResult(tuple(vectors), dimension, int(usage.get("prompt_tokens") or 0))


def _pack(values: list[float]) -> bytes:
    import array
    import sys

    packed = array.array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()
