"""Every MockUpstream fault kind, observed from the client side (aiohttp and the ``openai``
client) on the OpenAI routes; the Anthropic shapes are in ``test_mock_upstream_anthropic``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime.testing import Fault, MockUpstream

KEY = "sk-test"
USER = [{"role": "user", "content": "Tell me a story"}]
AUTH = {"Authorization": f"Bearer {KEY}"}
STREAM = {"model": "m", "messages": USER, "stream": True, "max_tokens": 5}
# a 5-word chat stream: role, 5 words, finish, [DONE]
STREAM_EVENTS = 8


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    async with MockUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        yield http


_OPEN: list[openai.AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


def client(upstream: MockUpstream, timeout: float = 10.0) -> openai.AsyncOpenAI:
    """An ``openai`` client without retries, so that each fault reaches the test (closed after
    the test)."""
    api = openai.AsyncOpenAI(base_url=upstream.url, api_key=KEY, max_retries=0, timeout=timeout)
    _OPEN.append(api)
    return api


async def chat_stream(api: openai.AsyncOpenAI) -> list[Any]:
    stream = await api.chat.completions.create(model="m", messages=USER, stream=True)
    return [chunk async for chunk in stream]


async def collect(session: aiohttp.ClientSession, url: str, into: bytearray) -> None:
    """Read a stream into ``into`` (what arrived stays there when the read fails)."""
    async with session.post(url, json=STREAM) as response:
        assert response.status == 200
        async for data in response.content.iter_any():
            into += data


async def drain(stream: Any, into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


def events(raw: bytes | bytearray) -> list[bytes]:
    return [bytes(e) for e in raw.split(b"\n\n") if e]


async def test_constructors_validate_and_compare() -> None:
    assert Fault.status(429, retry_after=1.0) == Fault.status(429, retry_after=1.0)
    assert Fault.reset().kind == "reset"
    assert Fault.stall_after(2, 0.5).n_chunks == 2
    with pytest.raises(ValueError):
        Fault.status(200)
    with pytest.raises(ValueError):
        Fault.stall_after(-1, 1.0)
    with pytest.raises(ValueError):
        Fault.slow_first_byte(-0.1)
    with pytest.raises(AttributeError):
        Fault.reset().kind = "status"  # type: ignore[misc]


async def test_429_with_retry_after(upstream: MockUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(Fault.status(429, retry_after=1.0), Fault.status(429, retry_after=0.5))
    with pytest.raises(openai.RateLimitError) as info:
        await client(upstream).chat.completions.create(model="m", messages=USER)
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.response.headers["retry-after-ms"] == "1000"
    assert info.value.code == "rate_limit_exceeded"
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "0.5"
        body = await response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    # consumed: the next request is served
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        assert response.status == 200


async def test_429_without_retry_after(upstream: MockUpstream) -> None:
    upstream.script(Fault.status(429))
    with pytest.raises(openai.RateLimitError) as info:
        await client(upstream).chat.completions.create(model="m", messages=USER)
    assert "retry-after" not in info.value.response.headers


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_server_errors(upstream: MockUpstream, status: int) -> None:
    upstream.script(Fault.status(status, retry_after=2.0 if status == 503 else None))
    with pytest.raises(openai.InternalServerError) as info:
        await chat_stream(client(upstream))  # a stream request fails before streaming
    assert info.value.status_code == status
    body = info.value.response.json()
    assert body["error"]["type"] == "server_error"
    assert ("retry-after" in info.value.response.headers) == (status == 503)


async def test_context_length_exceeded(upstream: MockUpstream) -> None:
    upstream.script(Fault.status(400, code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as info:
        await client(upstream).chat.completions.create(model="m", messages=USER)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    assert "maximum context length" in info.value.message


async def test_status_faults_apply_to_every_route(upstream: MockUpstream) -> None:
    api = client(upstream)
    upstream.script(Fault.status(503), Fault.status(502), Fault.status(404))
    with pytest.raises(openai.InternalServerError):
        await api.embeddings.create(model="e", input="x")
    with pytest.raises(openai.InternalServerError):
        await api.completions.create(model="m", prompt="x")
    with pytest.raises(openai.NotFoundError) as info:
        await api.models.list()
    assert info.value.code == "model_not_found"


async def test_wrong_key(upstream: MockUpstream) -> None:
    api = client(upstream)
    upstream.script(Fault.wrong_key())
    with pytest.raises(openai.AuthenticationError) as info:
        await api.chat.completions.create(model="m", messages=USER)
    assert info.value.code == "invalid_api_key"
    assert upstream.requests[-1].api_key == KEY  # the key was right
    await api.chat.completions.create(model="m", messages=USER)


async def test_reset_before_any_byte(
    upstream: MockUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.script(Fault.reset(), Fault.reset())
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
            await response.read()
    with pytest.raises(openai.APIConnectionError):
        await client(upstream).chat.completions.create(model="m", messages=USER)
    assert upstream.counts["/v1/chat/completions"] == 2
    assert [r.fault for r in upstream.requests] == [Fault.reset(), Fault.reset()]
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        assert response.status == 200


async def test_reset_after_chunks(upstream: MockUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(Fault.reset_after(3))
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        await collect(session, upstream.url + "/chat/completions", received)
    assert len(events(received)) == 3
    assert b"[DONE]" not in received
    # the openai client gets the first chunks, then a connection error: never a silent end
    upstream.script(Fault.reset_after(3))
    stream = await client(upstream).chat.completions.create(model="m", messages=USER, stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        await drain(stream, got)
    assert len(got) == 3
    await upstream.wait_until(lambda u: u.active_streams == 0)


async def test_reset_after_on_a_non_streamed_request(upstream: MockUpstream) -> None:
    upstream.script(Fault.reset_after(1))
    with pytest.raises(openai.APIConnectionError):
        await client(upstream).chat.completions.create(model="m", messages=USER)


async def test_stall_sends_no_bytes_for_the_duration(
    upstream: MockUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.script(Fault.stall_after(2, 0.4))
    start = time.monotonic()
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        received = b""
        while len(events(received)) < 2:
            received += await response.content.readany()
        assert len(events(received)) == 2  # nothing more came with the first two chunks
        received += await response.content.readany()
        assert time.monotonic() - start >= 0.4  # the next byte only after the stall
        received += await response.read()
    # after the stall the stream goes on and ends normally
    assert len(events(received)) == STREAM_EVENTS
    assert events(received)[-1] == b"data: [DONE]"


async def test_stall_before_the_first_chunk(
    upstream: MockUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.script(Fault.stall_after(0, 1.0))
    start = time.monotonic()
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        assert time.monotonic() - start < 0.8  # the headers come at once
        await response.content.readany()
        assert time.monotonic() - start >= 1.0


async def test_stall_trips_the_clients_read_timeout(upstream: MockUpstream) -> None:
    upstream.script(Fault.stall_after(2, 2.0), Fault.stall_after(0, 2.0))
    with pytest.raises(openai.APITimeoutError):
        await chat_stream(client(upstream, timeout=0.3))
    with pytest.raises(openai.APITimeoutError):  # non-stream: headers, then no body
        await client(upstream, timeout=0.3).chat.completions.create(model="m", messages=USER)
    await upstream.wait_until(lambda u: u.active_streams == 0 and u.active_requests == 0)


async def test_slow_first_byte(upstream: MockUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(Fault.slow_first_byte(0.3), Fault.slow_first_byte(2.0))
    start = time.monotonic()
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        assert time.monotonic() - start >= 0.3
        assert response.status == 200
    with pytest.raises(openai.APITimeoutError):
        await client(upstream, timeout=0.3).chat.completions.create(model="m", messages=USER)


async def test_malformed_sse(upstream: MockUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(Fault.malformed_sse(2))
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        raw = await response.read()
    third = events(raw)[2]
    assert third.startswith(b"data: ")
    with pytest.raises(ValueError):
        json.loads(third[len(b"data: ") :])
    # the openai client fails loudly on it, streamed or not
    upstream.script(Fault.malformed_sse(), Fault.malformed_sse())
    with pytest.raises(json.JSONDecodeError):
        await chat_stream(client(upstream))
    with pytest.raises(json.JSONDecodeError):
        await client(upstream).chat.completions.create(model="m", messages=USER)


async def test_error_mid_stream(upstream: MockUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(Fault.error_after(3, 503, message="engine overloaded"))
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        raw = await response.read()
    last = events(raw)[-1]
    assert len(events(raw)) == 4
    assert json.loads(last[len(b"data: ") :])["error"]["message"] == "engine overloaded"
    assert b"[DONE]" not in raw
    upstream.script(Fault.error_after(3))
    with pytest.raises(openai.APIError):
        await chat_stream(client(upstream))
    upstream.script(Fault.error_after(3, 502))
    with pytest.raises(openai.InternalServerError):  # non-stream: a plain error response
        await client(upstream).chat.completions.create(model="m", messages=USER)


async def test_truncated_stream(upstream: MockUpstream, session: aiohttp.ClientSession) -> None:
    upstream.script(Fault.truncate_after(4))
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        raw = await response.read()  # a clean end of the HTTP body
    assert len(events(raw)) == 4 and b"[DONE]" not in raw
    upstream.script(Fault.truncate_after(4))
    assert len(await chat_stream(client(upstream))) == 4  # no finish_reason ever came


async def test_chunk_counts_past_the_end_trigger_before_eof(
    upstream: MockUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.script(Fault.reset_after(1000))
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        await collect(session, upstream.url + "/chat/completions", received)
    assert events(received)[-1] == b"data: [DONE]"  # every event, then no end of body


async def test_script_order_placeholders_and_markers(upstream: MockUpstream) -> None:
    api = client(upstream)
    upstream.script(None, Fault.status(500))
    assert upstream.pending_faults == (None, Fault.status(500))
    await api.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.InternalServerError):
        await api.chat.completions.create(model="m", messages=USER)
    await api.chat.completions.create(model="m", messages=USER)
    assert upstream.pending_faults == ()
    assert [r.fault for r in upstream.requests] == [None, Fault.status(500), None]

    upstream.fault_for("poison", Fault.status(503))
    poisoned = [{"role": "user", "content": "a poison pill"}]
    for _ in range(2):  # every matching request, not just one
        with pytest.raises(openai.InternalServerError):
            await api.chat.completions.create(model="m", messages=poisoned)
    await api.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.InternalServerError):
        await api.embeddings.create(model="e", input=["x", "more poison"])
    upstream.script(Fault.status(429))  # a scripted fault goes first
    with pytest.raises(openai.RateLimitError):
        await api.chat.completions.create(model="m", messages=poisoned)
    upstream.fault_for("poison", None)
    await api.chat.completions.create(model="m", messages=poisoned)


async def test_echo_key_repeats_the_sent_key_in_message_param_and_code(
    upstream: MockUpstream, session: aiohttp.ClientSession
) -> None:
    upstream.script(Fault.echo_key(400))
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        error = (await response.json())["error"]
    assert response.status == 400
    assert KEY in error["message"] and error["param"] == KEY and KEY in error["code"]
    upstream.script(Fault.echo_key(500, after=3))
    async with session.post(upstream.url + "/chat/completions", json=STREAM) as response:
        raw = await response.read()
    assert response.status == 200 and len(events(raw)) == 4
    mid = json.loads(events(raw)[-1][len(b"data: ") :])["error"]
    assert KEY in mid["message"] and mid["param"] == KEY
    assert upstream.requests[-1].fault == Fault.echo_key(500, after=3)  # as scripted
    with pytest.raises(ValueError):
        Fault.echo_key(200)
