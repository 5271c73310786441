"""MockUpstream's Anthropic Messages API: body shape, the real stream event sequence, its
headers (``x-api-key``, ``anthropic-version``) and faults in Anthropic's error shape."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from inference_runtime.testing import Fault, MockUpstream

KEY = "sk-ant-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": "claude-test",
    "system": "You are terse",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 64,
}
SEQUENCE_HEAD = ["message_start", "content_block_start", "ping"]
SEQUENCE_TAIL = ["content_block_stop", "message_delta", "message_stop"]


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    async with MockUpstream(api_key=KEY, tokens_per_response=6) as server:
        yield server


async def messages(
    upstream: MockUpstream, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            upstream.base_url + "/v1/messages",
            json=body,
            headers=HEADERS if headers is None else headers,
        ) as response,
    ):
        return response.status, await response.read(), response.headers


def parse(raw: bytes) -> list[tuple[str, Any]]:
    """SSE events as (event name, decoded data)."""
    out = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        out.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
    return out


async def test_non_stream_body(upstream: MockUpstream) -> None:
    status, raw, _ = await messages(upstream, BODY)
    assert status == 200
    body = json.loads(raw)
    assert body["id"].startswith("msg_")
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-test"
    assert [block["type"] for block in body["content"]] == ["text"]
    assert len(body["content"][0]["text"].split()) == 6
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    # input tokens count the system prompt and every message
    assert body["usage"] == {"input_tokens": 3 + 6, "output_tokens": 6}


async def test_max_tokens_and_stop_sequences(upstream: MockUpstream) -> None:
    _, raw, _ = await messages(upstream, {**BODY, "max_tokens": 2})
    capped = json.loads(raw)
    assert capped["stop_reason"] == "max_tokens"
    assert capped["usage"]["output_tokens"] == 2
    _, raw, _ = await messages(upstream, BODY)
    words = json.loads(raw)["content"][0]["text"].split()
    _, raw, _ = await messages(upstream, {**BODY, "stop_sequences": [" " + words[3]]})
    stopped = json.loads(raw)
    assert stopped["stop_reason"] == "stop_sequence"
    assert stopped["stop_sequence"] == " " + words[3]
    assert stopped["content"][0]["text"] == " ".join(words[:3])


async def test_content_blocks_and_system_blocks_count(upstream: MockUpstream) -> None:
    body = {
        **BODY,
        "system": [{"type": "text", "text": "one two"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "three four five"}]},
            {"role": "assistant", "content": "six"},
            {"role": "user", "content": [{"type": "text", "text": "seven"}]},
        ],
    }
    _, raw, _ = await messages(upstream, body)
    assert json.loads(raw)["usage"]["input_tokens"] == 7


async def test_stream_event_sequence(upstream: MockUpstream) -> None:
    status, raw, headers = await messages(upstream, {**BODY, "stream": True})
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = parse(raw)
    names = [name for name, _ in events]
    assert names == SEQUENCE_HEAD + ["content_block_delta"] * 6 + SEQUENCE_TAIL
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == []
    assert start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 9
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"] == {"output_tokens": 6}
    _, whole, _ = await messages(upstream, BODY)
    assert "".join(d["text"] for d in deltas) == json.loads(whole)["content"][0]["text"]


async def test_stream_capped_by_max_tokens(upstream: MockUpstream) -> None:
    _, raw, _ = await messages(upstream, {**BODY, "stream": True, "max_tokens": 2})
    events = parse(raw)
    assert [n for n, _ in events].count("content_block_delta") == 2
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


async def test_headers_and_auth(upstream: MockUpstream) -> None:
    status, raw, _ = await messages(upstream, BODY, {"anthropic-version": "2023-06-01"})
    assert status == 401
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    # a Bearer token is OpenAI's way, not Anthropic's
    bearer = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    status, _, _ = await messages(upstream, BODY, bearer)
    assert status == 401
    status, raw, _ = await messages(upstream, BODY, {"x-api-key": KEY})
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in json.loads(raw)["error"]["message"]
    status, raw, _ = await messages(upstream, {k: v for k, v in BODY.items() if k != "max_tokens"})
    assert status == 400 and "max_tokens" in json.loads(raw)["error"]["message"]
    recorded = upstream.requests[-1]
    assert recorded.headers["X-Api-Key"] == KEY
    assert KEY not in repr(recorded)


async def test_key_rotation(upstream: MockUpstream) -> None:
    upstream.api_key = "sk-ant-new"
    status, _, _ = await messages(upstream, BODY)
    assert status == 401
    status, _, _ = await messages(upstream, BODY, {**HEADERS, "x-api-key": "sk-ant-new"})
    assert status == 200
    upstream.api_keys = {KEY, "sk-ant-new"}
    status, _, _ = await messages(upstream, BODY)
    assert status == 200


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_status_faults_in_anthropic_shape(
    upstream: MockUpstream, status: int, error_type: str
) -> None:
    upstream.script(Fault.status(status, retry_after=3.0))
    got, raw, headers = await messages(upstream, {**BODY, "stream": True})
    assert got == status
    body = json.loads(raw)
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert headers["retry-after"] == "3"


async def test_context_length_and_wrong_key(upstream: MockUpstream) -> None:
    upstream.script(Fault.status(400, code="context_length_exceeded"), Fault.wrong_key())
    _, raw, _ = await messages(upstream, BODY)
    assert json.loads(raw)["error"]["message"].startswith("prompt is too long")
    status, raw, _ = await messages(upstream, BODY)
    assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"


async def test_overloaded_mid_stream(upstream: MockUpstream) -> None:
    upstream.script(Fault.error_after(5, 529))
    _, raw, _ = await messages(upstream, {**BODY, "stream": True})
    events = parse(raw)
    assert [n for n, _ in events] == [
        *SEQUENCE_HEAD,
        "content_block_delta",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_malformed_reset_stall_and_truncate(upstream: MockUpstream) -> None:
    upstream.script(Fault.malformed_sse(3))
    _, raw, _ = await messages(upstream, {**BODY, "stream": True})
    with pytest.raises(ValueError):
        parse(raw)
    upstream.script(Fault.reset())
    with pytest.raises(aiohttp.ClientConnectionError):
        await messages(upstream, BODY)
    upstream.script(Fault.reset_after(4))
    with pytest.raises(aiohttp.ClientPayloadError):
        await messages(upstream, {**BODY, "stream": True})
    upstream.script(Fault.truncate_after(4))
    _, raw, _ = await messages(upstream, {**BODY, "stream": True})
    assert [n for n, _ in parse(raw)] == [*SEQUENCE_HEAD, "content_block_delta"]
    upstream.script(Fault.stall_after(4, 0.3))
    start = time.monotonic()
    _, raw, _ = await messages(upstream, {**BODY, "stream": True})
    assert time.monotonic() - start >= 0.3
    assert parse(raw)[-1][0] == "message_stop"
